"""Kong's router (``router_flavor = traditional_compatible``): which route a request takes.

A route matches when every field it sets matches: ``methods``, ``hosts``
(exact, ``*.example.com`` or ``example.*``; the port is ignored unless the
route's host names one), ``headers`` (any listed value, case-insensitive,
or a ``~*`` regex), and ``paths`` (a prefix, or a ``~`` regex anchored at
the start of the path, compiled by RE2). Like Kong's ATC transform
(``kong/router/transform.lua`` ``get_priority``), a route is split into one
candidate per group of paths (all its regex paths; its prefix paths of one
length), and candidates are tried in this order: more fields set first,
then plain hosts only before wildcard hosts, then regex paths before prefix
paths, then more headers, then higher ``regex_priority`` (regex paths),
then longer prefixes; ties keep the order of the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pitwall.core.regex import Regex
from pitwall.core.regex import compile as re2_compile

__all__ = ["Candidate", "Match", "Router"]


class Match:
    """The route taken and the part of the path its path matched (stripped when ``strip_path``).

    A plain slotted class: one is made per request, and a frozen dataclass's ``__init__`` costs
    several times more."""

    __slots__ = ("matched_path", "route")

    def __init__(self, route: Any, matched_path: str) -> None:
        self.route = route
        self.matched_path = matched_path


class _Host:
    __slots__ = ("exact", "port", "prefix", "suffix")

    def __init__(self, h: str) -> None:
        h = h.lower()
        name, sep, port = h.rpartition(":")
        self.port = port if sep and port.isdigit() and not name.endswith("]") else None
        h = name if self.port else h
        self.exact = None if "*" in h else h
        self.suffix = h[1:] if h.startswith("*.") else None  # ".example.com"
        self.prefix = h[:-1] if h.endswith(".*") else None  # "example."

    def matches(self, host: str, port: str | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.exact is not None:
            return host == self.exact
        if self.suffix is not None:
            return host.endswith(self.suffix) and len(host) > len(self.suffix)
        return self.prefix is not None and host.startswith(self.prefix) and len(host) > len(self.prefix)


class _Header:
    __slots__ = ("name", "regex", "values")

    def __init__(self, name: str, values: Sequence[str]) -> None:
        self.name = name.lower()
        self.values = frozenset(v.lower() for v in values if not v.startswith("~*"))
        regexes = [v[2:] for v in values if v.startswith("~*")]
        self.regex = re2_compile("(?i)^(?:" + "|".join(f"(?:{r})" for r in regexes) + ")") if regexes else None

    def matches(self, headers: Mapping[str, str]) -> bool:
        v = headers.get(self.name)
        if v is None:
            return False
        if v.lower() in self.values:
            return True
        return self.regex is not None and self.regex.search(v) is not None


class Candidate:
    """One route with one group of its paths, and its priority."""

    __slots__ = ("headers", "hosts", "methods", "prefixes", "priority", "regexes", "route")

    def __init__(self, route: Any, r: Mapping[str, Any], paths: list[str]) -> None:
        self.route = route
        self.methods = frozenset(r.get("methods") or ()) or None
        self.hosts = [_Host(h) for h in r.get("hosts") or ()] or None
        self.headers = [_Header(k, v) for k, v in (r.get("headers") or {}).items()] or None
        self.regexes: list[Regex] | None = [re2_compile("^(?:" + p[1:] + ")") for p in paths if p.startswith("~")]
        self.prefixes = [p for p in paths if not p.startswith("~")] or None
        if not self.regexes:
            self.regexes = None
        weight = sum(1 for k in ("sources", "destinations", "methods", "hosts", "headers", "snis") if r.get(k))
        weight += 1 if paths else 0
        plain_hosts = bool(r.get("hosts")) and not any("*" in h for h in r["hosts"])
        regex = self.regexes is not None
        self.priority = (weight, plain_hosts, regex, len(r.get("headers") or {}),
                         r.get("regex_priority", 0) if regex else 0, len(paths[0]) if paths and not regex else 0)

    def match(self, method: str, host: str, port: str | None, path: str, headers: Mapping[str, str]) -> str | None:
        """The matched part of ``path`` ("" when the route sets no paths), or None."""
        if self.methods is not None and method not in self.methods:
            return None
        if self.hosts is not None and not any(h.matches(host, port) for h in self.hosts):
            return None
        if self.headers is not None and not all(h.matches(headers) for h in self.headers):
            return None
        if self.prefixes is not None:
            for p in self.prefixes:
                if path.startswith(p):
                    return p
            return None
        if self.regexes is not None:
            for rx in self.regexes:
                m = rx.search(path)
                if m is not None:
                    return m.group(0) or ""
            return None
        return ""


def _path_groups(paths: Sequence[str]) -> list[list[str]]:
    """All regex paths together; prefix paths grouped by length (as Kong splits a route)."""
    if not paths:
        return [[]]
    groups: list[list[str]] = []
    regex = [p for p in paths if p.startswith("~")]
    if regex:
        groups.append(regex)
    by_len: dict[int, list[str]] = {}
    for p in paths:
        if not p.startswith("~"):
            by_len.setdefault(len(p), []).append(p)
    groups.extend(by_len[n] for n in sorted(by_len, reverse=True))
    return groups


class Router:
    """Candidates in priority order; ``find`` is a linear scan (a few hundred routes cost microseconds)."""

    def __init__(self, routes: Sequence[tuple[Any, Mapping[str, Any]]]) -> None:
        cands = [Candidate(rt, r, g) for rt, r in routes for g in _path_groups(r.get("paths") or [])]
        cands.sort(key=lambda c: c.priority, reverse=True)  # stable: ties keep configuration order
        self.candidates = cands

    def find(self, method: str, host_header: str, path: str, headers: Mapping[str, str]) -> Match | None:
        host, port = _split_host(host_header)
        for c in self.candidates:
            m = c.match(method, host, port, path, headers)
            if m is not None:
                return Match(c.route, m)
        return None


def _split_host(h: str) -> tuple[str, str | None]:
    h = h.lower()
    if h.startswith("["):
        end = h.find("]")
        rest = h[end + 1:]
        return h[:end + 1], rest[1:] if rest.startswith(":") else None
    name, sep, port = h.partition(":")
    return name, port if sep else None
