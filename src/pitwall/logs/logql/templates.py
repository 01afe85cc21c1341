"""``line_format`` and ``label_format`` templates: core's Go engine with Loki's functions.

Contract: ``compile_template(text)`` parses once (cached) with
``pitwall.core.gotemplate`` under ``missingkey=zero`` and Loki's function
table (Go's builtins come from core; Loki's own: ``ToLower``, ``regexReplaceAll``,
``bytes``, ``duration``, ``unixEpochMillis``, ``alignLeft``...; the sprig subset
Loki exposes: ``lower``, ``trunc``, ``add``, ``date``, ``default``..., with
sprig's lenient argument casting). ``LogTemplate.render(labels, line, ts_ns)``
runs it over one entry: dot is the label map (Go's ``map[string]string``, so a
missing label is ``""``), ``__line__`` and ``__timestamp__`` see the entry.
Printing is Go's: a missing key of a ``fromJson`` map prints ``<no value>``,
a nil passed to ``print``/``printf`` prints ``<nil>``. Failures raise core's
``TemplateError`` with Go's message (``TemplateFormatErr`` in the pipeline).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pitwall.core import regex
from pitwall.core.gofmt import go_sprint
from pitwall.core.gotemplate import Template, TemplateError, ZeroMap, truth
from pitwall.logs.logql.gotime import GoTime, go_format_time, go_parse_time
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns

__all__ = ["LOKI_FUNCTIONS", "LogTemplate", "TemplateError", "compile_template"]


# ---------------------------------------------------------------- casting (sprig/cast semantics)


def _to_int(v: Any) -> int:
    """spf13/cast ``ToInt64``: numbers truncate, strings parse as integers, else 0."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else 0
    if isinstance(v, str):
        s = re.sub(r"\.0*$", "", v.strip())
        try:
            return int(s, 0) if not re.fullmatch(r"0\d+", s) else int(s, 8)
        except ValueError:
            return 0
    return 0


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return 0.0
    return 0.0


def _to_str(v: Any) -> str:
    return v if isinstance(v, str) else go_sprint(v)



def _need_str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"wrong type for value; expected string; got {_go_kind(v)}")
    return v


def _go_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    return "interface {}"


# ---------------------------------------------------------------- string functions


def _regex_replace_all(pattern: str, s: str, repl: str) -> str:
    """Sprig's ``regexReplaceAll``: Go's ``ReplaceAllString`` (``$1``/``${name}`` expand, unknown -> "")."""
    return regex.compile(pattern).replace_all(s, repl)


def _trunc(c: Any, s: Any) -> str:
    n = _to_int(c)
    text = _to_str(s)
    if n < 0 and len(text) + n > 0:
        return text[len(text) + n :]
    if n >= 0 and len(text) > n:
        return text[:n]
    return text


def _substr(start: Any, end: Any, s: Any) -> str:
    a, b, text = _to_int(start), _to_int(end), _to_str(s)
    n = len(text)
    b = min(b, n)
    a = min(a, n)
    if a < 0:
        return "" if b < 0 else text[:b]
    if b < 0:
        return text[a:]
    if a > b:
        return ""
    return text[a:b]


def _title(s: Any) -> str:
    # Go's strings.Title: upper-case the first letter of each word, leave the rest.
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), _to_str(s))


def _indent(n: Any, s: Any) -> str:
    pad = " " * _to_int(n)
    return pad + _to_str(s).replace("\n", "\n" + pad)


def _default(d: Any, *given: Any) -> Any:
    if not given or not truth(given[0]):
        return d
    return given[0]


def _align_left(count: Any, s: Any) -> str:
    n, text = _to_int(count), _to_str(s)
    if n < 0 or n == len(text):
        return text
    return text + " " * (n - len(text)) if n > len(text) else text[:n]


def _align_right(count: Any, s: Any) -> str:
    n, text = _to_int(count), _to_str(s)
    if n < 0 or n == len(text):
        return text
    return " " * (n - len(text)) + text if n > len(text) else text[len(text) - n :]


def _b64dec(s: Any) -> str:
    try:
        return base64.b64decode(_to_str(s), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as e:
        return str(e)


def _from_json(s: Any) -> Any:
    try:
        return json.loads(_to_str(s))
    except ValueError:
        return {}


def _go_strings_trim(s: str, cutset: str) -> str:
    return s.strip(cutset) if cutset else s


# ---------------------------------------------------------------- numbers


def _round(a: Any, p: Any, r_opt: Any = 0.5) -> float:
    val = _to_float(a)
    places = _to_int(p)
    pow10 = 10.0**places
    digit = pow10 * val
    frac, _ = math.modf(digit)
    roundon = _to_float(r_opt)
    rounder = math.ceil(digit) if frac >= roundon else math.floor(digit)
    return rounder / pow10


def _decimal_op(op: Callable[[Decimal, Decimal], Decimal], args: tuple[Any, ...]) -> float:
    acc = Decimal(repr(_to_float(args[0])))
    for a in args[1:]:
        acc = op(acc, Decimal(repr(_to_float(a))))
    return float(acc)


def _divf(a: Any, *rest: Any) -> float:
    acc = Decimal(repr(_to_float(a)))
    for b in rest:
        d = Decimal(repr(_to_float(b)))
        if d == 0:
            raise ValueError("division by zero")
        acc = acc / d
    return float(acc.quantize(Decimal(1).scaleb(-16), rounding=ROUND_HALF_EVEN).normalize()) if acc else 0.0


def _int_div(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise ValueError("runtime error: integer divide by zero")
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _int_mod(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise ValueError("runtime error: integer divide by zero")
    return int(math.fmod(x, y))


def _convert_bytes(s: Any) -> float:
    try:
        return float(parse_bytes(_to_str(s)))
    except ValueError:
        return 0.0


def _convert_duration(s: Any) -> float:
    try:
        return parse_duration_ns(_to_str(s), go_only=True) / 1e9
    except ValueError:
        return 0.0


def _to_date(layout: Any, value: Any) -> GoTime:
    try:
        return go_parse_time(_to_str(layout), _to_str(value))
    except ValueError:
        return GoTime(-62135596800 * 1_000_000_000)  # Go's zero time


_EPOCH_UNIT_NS = {5: 86400 * 1_000_000_000, 10: 1_000_000_000, 13: 1_000_000, 16: 1000, 19: 1}


def _unix_to_time(epoch: Any) -> GoTime:
    """Loki's ``unixToTime``: an integer epoch whose digit count gives the unit (days, s, ms, µs, ns)."""
    text = _to_str(epoch)
    try:
        n = int(text, 10) if text.lstrip("+-").isascii() and text.lstrip("+-").isdigit() else None
    except ValueError:
        n = None
    if n is None or not -(1 << 63) <= n < 1 << 63:
        raise ValueError(f"unable to parse time '{text}': strconv.ParseInt: parsing \"{text}\": invalid syntax")
    unit = _EPOCH_UNIT_NS.get(len(text))
    if unit is None:
        raise ValueError(f"unable to parse time '{text}': %!w(<nil>)")
    return GoTime(n * unit)


def _to_date_in_zone(layout: Any, zone: Any, value: Any) -> GoTime:
    tz: timezone = UTC
    try:
        from zoneinfo import ZoneInfo

        zi = ZoneInfo(_to_str(zone))
        # A fixed offset for the parse; good enough for date arithmetic in templates.
        off = datetime.now(zi).utcoffset() or timedelta(0)
        tz = timezone(off)
    except Exception:
        tz = UTC
    try:
        return go_parse_time(_to_str(layout), _to_str(value), tz)
    except ValueError:
        return GoTime(-62135596800 * 1_000_000_000)


def _as_time(v: Any) -> GoTime:
    if isinstance(v, GoTime):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return GoTime(int(v) * 1_000_000_000)
    return GoTime(int(time.time_ns()))


def _date(fmt: Any, d: Any) -> str:
    return go_format_time(_as_time(d), _to_str(fmt))


def _unix_epoch(d: Any) -> str:
    return str(_as_time(d).ns // 1_000_000_000)


def _unix_epoch_millis(d: Any) -> str:
    return str(_as_time(d).ns // 1_000_000)


def _unix_epoch_nanos(d: Any) -> str:
    return str(_as_time(d).ns)


def _urlencode(s: Any) -> str:
    return urllib.parse.quote_plus(_to_str(s), safe="-_.~")


def _urldecode(s: Any) -> str:
    text = _to_str(s)
    if re.search(r"%(?![0-9a-fA-F]{2})", text):
        raise ValueError(f'invalid URL escape "{text[text.index("%") :][:3]}"')
    return urllib.parse.unquote_plus(text)


def _count(pattern: Any, s: Any) -> int:
    return regex.compile(_to_str(pattern)).count(_to_str(s))


def _go_replace(s: Any, old: Any, new: Any, n: Any) -> str:
    count = _to_int(n)
    return _to_str(s).replace(_to_str(old), _to_str(new), count if count >= 0 else -1)


# Go's builtins (and, or, not, len, index, slice, print, printf, println, eq,
# ne, lt, le, gt, ge, html, js, urlquery, call) come from core's engine.
LOKI_FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Loki's own (Go strings package, deprecated names kept)
    "ToLower": lambda s: _need_str(s).lower(),
    "ToUpper": lambda s: _need_str(s).upper(),
    "Replace": _go_replace,
    "Trim": lambda s, c: _go_strings_trim(_to_str(s), _to_str(c)),
    "TrimLeft": lambda s, c: _to_str(s).lstrip(_to_str(c)),
    "TrimRight": lambda s, c: _to_str(s).rstrip(_to_str(c)),
    "TrimPrefix": lambda s, p: _to_str(s).removeprefix(_to_str(p)),
    "TrimSuffix": lambda s, p: _to_str(s).removesuffix(_to_str(p)),
    "TrimSpace": lambda s: _to_str(s).strip(" \t\n\r\v\f"),
    "regexReplaceAll": lambda r, s, repl: _regex_replace_all(_to_str(r), _to_str(s), _to_str(repl)),
    "regexReplaceAllLiteral": lambda r, s, repl: regex.compile(_to_str(r)).replace_all(
        _to_str(s), _to_str(repl), literal=True
    ),
    "count": _count,
    "urldecode": _urldecode,
    "urlencode": _urlencode,
    "bytes": _convert_bytes,
    "duration": _convert_duration,
    "duration_seconds": _convert_duration,
    "unixEpochMillis": _unix_epoch_millis,
    "unixEpochNanos": _unix_epoch_nanos,
    "toDateInZone": _to_date_in_zone,
    "unixToTime": _unix_to_time,
    "alignLeft": _align_left,
    "alignRight": _align_right,
    # sprig subset
    "b64enc": lambda s: base64.b64encode(_to_str(s).encode()).decode(),
    "b64dec": _b64dec,
    "lower": lambda s: _to_str(s).lower(),
    "upper": lambda s: _to_str(s).upper(),
    "title": _title,
    "trunc": _trunc,
    "substr": _substr,
    "contains": lambda sub, s: _to_str(sub) in _to_str(s),
    "hasPrefix": lambda p, s: _to_str(s).startswith(_to_str(p)),
    "hasSuffix": lambda p, s: _to_str(s).endswith(_to_str(p)),
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "replace": lambda old, new, s: _to_str(s).replace(_to_str(old), _to_str(new)),
    "repeat": lambda n, s: _to_str(s) * max(_to_int(n), 0),
    "trim": lambda s: _to_str(s).strip(" \t\n\r\v\f"),
    "trimAll": lambda c, s: _to_str(s).strip(_to_str(c)),
    "trimSuffix": lambda suf, s: _to_str(s).removesuffix(_to_str(suf)),
    "trimPrefix": lambda pre, s: _to_str(s).removeprefix(_to_str(pre)),
    "int": _to_int,
    "int64": _to_int,
    "float64": _to_float,
    "add": lambda *a: sum(_to_int(x) for x in a),
    "add1": lambda a: _to_int(a) + 1,
    "sub": lambda a, b: _to_int(a) - _to_int(b),
    "mul": lambda a, *r: math.prod([_to_int(a), *(_to_int(x) for x in r)]),
    "div": _int_div,
    "mod": _int_mod,
    "addf": lambda *a: _decimal_op(lambda x, y: x + y, a),
    "subf": lambda *a: _decimal_op(lambda x, y: x - y, a),
    "mulf": lambda *a: _decimal_op(lambda x, y: x * y, a),
    "divf": _divf,
    "max": lambda a, *r: max([_to_int(a), *(_to_int(x) for x in r)]),
    "min": lambda a, *r: min([_to_int(a), *(_to_int(x) for x in r)]),
    "maxf": lambda a, *r: max([_to_float(a), *(_to_float(x) for x in r)]),
    "minf": lambda a, *r: min([_to_float(a), *(_to_float(x) for x in r)]),
    "ceil": lambda a: float(math.ceil(_to_float(a))),
    "floor": lambda a: float(math.floor(_to_float(a))),
    "round": _round,
    "fromJson": _from_json,
    "date": _date,
    "toDate": _to_date,
    "now": lambda: GoTime(time.time_ns()),
    "unixEpoch": _unix_epoch,
    "default": _default,
}

_ENTRY_FUNCS = ("__line__", "__timestamp__")


def _unbound() -> str:  # placeholders so parsing accepts the per-entry functions
    raise ValueError("no entry")


def _entry_funcs(line: str, ts_ns: int) -> dict[str, Callable[..., Any]]:
    """``__line__`` and ``__timestamp__`` bound to one entry, consulted before the table."""
    return {"__line__": lambda: line, "__timestamp__": lambda: GoTime(ts_ns)}


class LogTemplate:
    """A compiled ``line_format``/``label_format`` template; ``render`` runs it over one entry."""

    __slots__ = ("_per_entry", "_tmpl", "constant", "src")

    def __init__(self, src: str) -> None:
        self.src = src
        self._tmpl = Template("line", LOKI_FUNCTIONS).funcs(dict.fromkeys(_ENTRY_FUNCS, _unbound))
        self._tmpl.option("missingkey=zero").parse(src)
        self._per_entry = any(name in src for name in _ENTRY_FUNCS)
        # A template of text alone renders to a constant.
        self.constant: str | None = self._tmpl.constant_text()

    def render(self, labels: Mapping[str, str], line: str, ts_ns: int) -> str:
        """Execute over ``labels``; ``__line__``/``__timestamp__`` see ``line`` and ``ts_ns``."""
        if self.constant is not None:
            return self.constant
        funcs = _entry_funcs(line, ts_ns) if self._per_entry else None
        return self._tmpl.execute(ZeroMap(labels), funcs=funcs)


_CACHE: dict[str, LogTemplate] = {}


def compile_template(src: str) -> LogTemplate:
    """Parse ``src`` (cached); ``TemplateError`` when it is not a valid template."""
    t = _CACHE.get(src)
    if t is None:
        t = LogTemplate(src)
        if len(_CACHE) < 1024:
            _CACHE[src] = t
    return t
