"""LogQL's ``ip("...")`` matchers, as Loki's ``pkg/logql/log/ip.go``.

A pattern is a single address, a CIDR prefix or a ``from-to`` range, v4 or
v6. The filter scans text the way Loki does: at each position that looks
like the start of an address (a digit with a ``.`` within the next three
bytes for v4; hex digits then ``:`` for v6) it takes the longest run of
address characters and tests it. ``|= ip()`` keeps lines holding a matching
address (``!=`` drops them); ``| addr = ip()`` scans the label's value the
same way (``!=`` negates; a missing label never passes, an entry already
carrying ``__error__`` always does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

__all__ = ["IpMatcher", "compile_ip_pattern", "text_has_ip"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
IpMatcher = Callable[[Address], bool]
_V4 = frozenset("0123456789.")
_V6 = frozenset("0123456789abcdefABCDEF:.")
_HEX = frozenset("0123456789abcdefABCDEF")


def _parse_addr(text: str) -> Address | None:
    """Go's ``netip.ParseAddr`` (no surrounding space, no leading zeros in v4)."""
    if not text or text != text.strip():
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def compile_ip_pattern(pattern: str) -> IpMatcher:
    """An address, then a prefix, then a range, as Loki's ``getMatcher``; ``ValueError`` with its message."""
    one = _parse_addr(pattern)
    if one is not None:
        return lambda a: a == one
    if "/" in pattern:
        addr, _, bits = pattern.partition("/")
        base = _parse_addr(addr)
        if base is not None and bits.isdigit() and bits == str(int(bits)) and int(bits) <= base.max_prefixlen:
            net = ipaddress.ip_network(pattern, strict=False)
            return lambda a: a.version == net.version and a in net
    elif "-" in pattern:
        lo_text, _, hi_text = pattern.partition("-")
        lo, hi = _parse_addr(lo_text), _parse_addr(hi_text)
        if lo is not None and hi is not None and lo.version == hi.version and lo <= hi:  # type: ignore[operator]
            return lambda a: a.version == lo.version and lo <= a <= hi  # type: ignore[operator]
    raise ValueError(f'ip: invalid pattern: "{pattern}"')


def _v4_hint(s: str, i: int) -> bool:
    return s[i].isdigit() and s[i].isascii() and "." in s[i + 1:i + 4]


def _v6_hint(s: str, i: int) -> bool:
    if s[i] == ":":
        return s[i + 1] == ":" and s[i + 2] in _HEX
    # 1 to 4 hex digits, then ':'
    return any(all(c in _HEX for c in s[i:i + k]) and s[i + k] == ":" for k in range(1, 5))


def _span(s: str, start: int, charset: frozenset[str]) -> int:
    j = start
    while j < len(s) and s[j] in charset:
        j += 1
    return j - start


def text_has_ip(match: IpMatcher, text: str) -> bool:
    """Whether an address in the set is written in ``text`` (Loki's ``ipFilter.filter``)."""
    n = len(text)
    i = 0
    while i < n:
        charset = _V4 if i + 3 < n and _v4_hint(text, i) else _V6 if i + 4 < n and _v6_hint(text, i) else None
        if charset is not None:
            k = _span(text, i, charset)
            a = _parse_addr(text[i:i + k])
            if a is not None and match(a):
                return True
            i += k
        i += 1
    return False
