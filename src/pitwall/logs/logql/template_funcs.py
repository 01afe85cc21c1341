"""Template functions Loki registers for ``line_format``/``label_format``.

Go's builtins (``eq``, ``printf``, ``index``...), Loki's own (``ToLower``,
``regexReplaceAll``, ``bytes``, ``duration``, ``unixEpochMillis``,
``alignLeft``...) and the sprig subset Loki exposes (``lower``, ``trunc``,
``add``, ``date``, ``default``...), with sprig's lenient argument casting.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pitwall.core import regex
from pitwall.logs.logql.template import TemplateError, truth
from pitwall.logs.logql.units import format_go_float, parse_bytes, parse_duration_ns

__all__ = ["GoTime", "entry_functions", "go_sprint"]


class GoTime:
    """A ``time.Time``: nanoseconds since the epoch plus a fixed zone."""

    __slots__ = ("ns", "tz")

    def __init__(self, ns: int, tz: timezone = UTC) -> None:
        self.ns = ns
        self.tz = tz

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.ns // 1_000_000_000, self.tz)

    def __str__(self) -> str:
        return go_format_time(self, "2006-01-02 15:04:05.999999999 -0700 MST")


# ---------------------------------------------------------------- printing


def go_sprint(v: Any) -> str:
    """Go's ``fmt.Sprint`` of one value."""
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_go_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, GoTime):
        return str(v)
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{k}:{go_sprint(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_sprint(x) for x in v) + "]"
    return str(v)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the common verbs (%s %v %d %f %e %g %q %x %X %t %c %%)."""
    out: list[str] = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[ai]
        ai += 1
        out.append(_format_verb(flags, width, prec, verb, arg))
    out.append(fmt[pos:])
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_go_type_name(a)}={go_sprint(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _go_type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    return "interface {}"


def _format_verb(flags: str, width: str | None, prec: str | None, verb: str, arg: Any) -> str:
    if verb in "vs":
        body = go_sprint(arg)
        if prec is not None and verb == "s":
            body = body[: int(prec)]
    elif verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
        body = ("+" if "+" in flags and arg >= 0 else "") + str(arg)
    elif verb in "feEgG" and isinstance(arg, (int, float)) and not isinstance(arg, bool):
        p = 6 if prec is None else int(prec)
        if verb in "gG" and prec is None:
            body = format_go_float(float(arg))
        else:
            body = format(float(arg), f"{'+' if '+' in flags else ''}.{p}{verb}")
            if verb in "eE":
                body = re.sub(r"([eE][+-])(\d)$", r"\g<1>0\2", body)
    elif verb == "q" and isinstance(arg, str):
        body = json.dumps(arg, ensure_ascii=False)
    elif verb in "xX" and isinstance(arg, (int, str)) and not isinstance(arg, bool):
        body = format(arg, verb) if isinstance(arg, int) else arg.encode().hex()
        body = body.upper() if verb == "X" else body
    elif verb == "t" and isinstance(arg, bool):
        body = "true" if arg else "false"
    elif verb == "c" and isinstance(arg, int):
        body = chr(arg)
    else:
        return f"%!{verb}({_go_type_name(arg)}={go_sprint(arg)})"
    if width and width != "*":
        w = int(width)
        if "-" in flags:
            body = body.ljust(w)
        elif "0" in flags and verb not in "sqv":
            sign = body[0] if body[:1] in "+-" else ""
            body = sign + body[len(sign) :].rjust(w - len(sign), "0")
        else:
            body = body.rjust(w)
    return body


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


def _need_str(v: Any, fn: str) -> str:
    if not isinstance(v, str):
        raise TemplateError(f"wrong type for value; expected string; got {_go_type_name(v)} in {fn}")
    return v


# ---------------------------------------------------------------- comparison builtins


def _basic(v: Any) -> tuple[str, Any]:
    if isinstance(v, bool):
        return "bool", v
    if isinstance(v, int):
        return "int", v
    if isinstance(v, float):
        return "float", v
    if isinstance(v, str):
        return "string", v
    if v is None:
        return "nil", v
    raise TemplateError("invalid type for comparison")


def _eq(a: Any, *bs: Any) -> bool:
    ka, va = _basic(a)
    for b in bs:
        kb, vb = _basic(b)
        if ka != kb:
            raise TemplateError("incompatible types for comparison")
        if va == vb:
            return True
    return False


def _cmp(a: Any, b: Any) -> int:
    ka, va = _basic(a)
    kb, vb = _basic(b)
    if ka != kb or ka in ("bool", "nil"):
        raise TemplateError("incompatible types for comparison")
    return int(va > vb) - int(va < vb)


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, Mapping):
            item = item.get(k)
        elif isinstance(item, (list, tuple, str)):
            i = _to_int(k)
            if not 0 <= i < len(item):
                raise TemplateError(f"index out of range: {i}")
            item = item[i]
        else:
            raise TemplateError(f"can't index item of type {_go_type_name(item)}")
    return item


def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _len(v: Any) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v.encode() if isinstance(v, str) else v)
    raise TemplateError(f"len of type {_go_type_name(v)}")


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
            raise TemplateError("error calling divf: division by zero")
        acc = acc / d
    return float(acc.quantize(Decimal(1).scaleb(-16), rounding=ROUND_HALF_EVEN).normalize()) if acc else 0.0


def _int_div(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise TemplateError("error calling div: runtime error: integer divide by zero")
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _int_mod(a: Any, b: Any) -> int:
    x, y = _to_int(a), _to_int(b)
    if y == 0:
        raise TemplateError("error calling mod: runtime error: integer divide by zero")
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


# ---------------------------------------------------------------- time


_LAYOUT_TOKENS = [
    "January",
    "Monday",
    "2006",
    "-07:00:00",
    "-0700",
    "-07:00",
    "Z07:00",
    "Z0700",
    "-07",
    "Z07",
    "Jan",
    "Mon",
    "MST",
    "002",
    "__2",
    "_2",
    "15",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "PM",
    "pm",
    "1",
    "2",
    "3",
    "4",
    "5",
]
_FRAC = re.compile(r"[.,](0+|9+)")


def _layout_tokens(layout: str) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    i = 0
    while i < len(layout):
        m = _FRAC.match(layout, i)
        if m and (i + len(m.group(0)) == len(layout) or not layout[i + len(m.group(0))].isdigit()):
            out.append((True, m.group(0)))
            i = m.end()
            continue
        for tok in _LAYOUT_TOKENS:
            if layout.startswith(tok, i):
                out.append((True, tok))
                i += len(tok)
                break
        else:
            out.append((False, layout[i]))
            i += 1
    return out


def _zone_offset(dt: datetime, colon: bool, z: bool, seconds: bool = False, short: bool = False) -> str:
    off = dt.utcoffset() or timedelta(0)
    secs = int(off.total_seconds())
    if z and secs == 0:
        return "Z"
    sign = "-" if secs < 0 else "+"
    secs = abs(secs)
    hh, mm, ss = secs // 3600, secs % 3600 // 60, secs % 60
    if short:
        return f"{sign}{hh:02d}"
    sep = ":" if colon else ""
    out = f"{sign}{hh:02d}{sep}{mm:02d}"
    if seconds:
        out += f"{sep}{ss:02d}"
    return out


def go_format_time(t: GoTime, layout: str) -> str:
    """``time.Time.Format`` for Go reference layouts (``2006-01-02T15:04:05Z07:00``)."""
    dt = t.dt()
    nanos = t.ns % 1_000_000_000
    out: list[str] = []
    for is_tok, tok in _layout_tokens(layout):
        if not is_tok:
            out.append(tok)
            continue
        out.append(_format_token(tok, dt, nanos))
    return "".join(out)


def _format_token(tok: str, dt: datetime, nanos: int) -> str:
    simple: dict[str, Callable[[], str]] = {
        "January": lambda: dt.strftime("%B"),
        "Jan": lambda: dt.strftime("%b"),
        "Monday": lambda: dt.strftime("%A"),
        "Mon": lambda: dt.strftime("%a"),
        "2006": lambda: f"{dt.year:04d}",
        "06": lambda: f"{dt.year % 100:02d}",
        "01": lambda: f"{dt.month:02d}",
        "1": lambda: str(dt.month),
        "02": lambda: f"{dt.day:02d}",
        "2": lambda: str(dt.day),
        "_2": lambda: f"{dt.day:2d}",
        "002": lambda: f"{dt.timetuple().tm_yday:03d}",
        "__2": lambda: f"{dt.timetuple().tm_yday:3d}",
        "15": lambda: f"{dt.hour:02d}",
        "03": lambda: f"{(dt.hour % 12) or 12:02d}",
        "3": lambda: str((dt.hour % 12) or 12),
        "04": lambda: f"{dt.minute:02d}",
        "4": lambda: str(dt.minute),
        "05": lambda: f"{dt.second:02d}",
        "5": lambda: str(dt.second),
        "PM": lambda: "PM" if dt.hour >= 12 else "AM",
        "pm": lambda: "pm" if dt.hour >= 12 else "am",
        "MST": lambda: (dt.tzname() or "UTC") if dt.utcoffset() else "UTC",
        "-0700": lambda: _zone_offset(dt, False, False),
        "-07:00": lambda: _zone_offset(dt, True, False),
        "-07:00:00": lambda: _zone_offset(dt, True, False, seconds=True),
        "-07": lambda: _zone_offset(dt, False, False, short=True),
        "Z0700": lambda: _zone_offset(dt, False, True),
        "Z07:00": lambda: _zone_offset(dt, True, True),
        "Z07": lambda: _zone_offset(dt, False, True, short=True),
    }
    if tok in simple:
        return simple[tok]()
    # fractional seconds: .000 fixed width, .999 trailing zeros trimmed
    digits = len(tok) - 1
    frac = f"{nanos:09d}"[:digits]
    if tok[1] == "9":
        frac = frac.rstrip("0")
        return tok[0] + frac if frac else ""
    return tok[0] + frac


_PARSE_PATTERNS: dict[str, str] = {
    "January": r"(?P<month_name>[A-Za-z]+)",
    "Jan": r"(?P<month_abbr>[A-Za-z]{3})",
    "Monday": r"[A-Za-z]+",
    "Mon": r"[A-Za-z]{3}",
    "2006": r"(?P<year>\d{4})",
    "06": r"(?P<year2>\d{2})",
    "01": r"(?P<month>\d{2})",
    "1": r"(?P<month>\d{1,2})",
    "02": r"(?P<day>\d{2})",
    "2": r"(?P<day>\d{1,2})",
    "_2": r" ?(?P<day>\d{1,2})",
    "002": r"(?P<yday>\d{3})",
    "__2": r" {0,2}(?P<yday>\d{1,3})",
    "15": r"(?P<hour>\d{1,2})",
    "03": r"(?P<hour12>\d{2})",
    "3": r"(?P<hour12>\d{1,2})",
    "04": r"(?P<minute>\d{2})",
    "4": r"(?P<minute>\d{1,2})",
    "05": r"(?P<second>\d{2})",
    "5": r"(?P<second>\d{1,2})",
    "PM": r"(?P<ampm>AM|PM)",
    "pm": r"(?P<ampm>am|pm)",
    "MST": r"(?P<tzname>[A-Z]{3,4}|[+-]\d{2,4})",
    "-0700": r"(?P<tz>[+-]\d{4})",
    "-07:00": r"(?P<tz>[+-]\d{2}:\d{2})",
    "-07:00:00": r"(?P<tz>[+-]\d{2}:\d{2}:\d{2})",
    "-07": r"(?P<tz>[+-]\d{2})",
    "Z0700": r"(?P<tz>Z|[+-]\d{4})",
    "Z07:00": r"(?P<tz>Z|[+-]\d{2}:\d{2})",
    "Z07": r"(?P<tz>Z|[+-]\d{2})",
}


def go_parse_time(layout: str, value: str, default_tz: timezone = UTC) -> GoTime:
    """``time.ParseInLocation`` for the layouts ``go_format_time`` writes."""
    parts: list[str] = []
    for is_tok, tok in _layout_tokens(layout):
        if not is_tok:
            parts.append(re.escape(tok))
        elif tok in _PARSE_PATTERNS:
            parts.append(_PARSE_PATTERNS[tok])
        else:
            parts.append(r"(?:[.,](?P<frac>\d+))?" if tok[1] == "9" else r"[.,](?P<frac>\d+)")
    # Go also accepts fractional seconds right after seconds even when the layout has none.
    rx = "".join(parts).replace(r"(?P<second>\d{2})", r"(?P<second>\d{2})(?:[.,](?P<frac2>\d+))?", 1)
    m = re.fullmatch(rx, value)
    if m is None:
        raise ValueError(f'parsing time "{value}" as "{layout}": cannot parse')
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    year = int(g.get("year", 0)) if "year" in g else (2000 + int(g["year2"]) if "year2" in g else 0)
    if "month_name" in g or "month_abbr" in g:
        name = (g.get("month_name") or g.get("month_abbr") or "")[:3].title()
        month = datetime.strptime(name, "%b").month
    else:
        month = int(g.get("month", 1))
    day = int(g.get("day", 1))
    hour = int(g.get("hour", 0))
    if "hour12" in g:
        hour = int(g["hour12"]) % 12 + (12 if g.get("ampm", "").lower() == "pm" else 0)
    minute, second = int(g.get("minute", 0)), int(g.get("second", 0))
    frac = g.get("frac") or g.get("frac2") or ""
    nanos = int((frac + "000000000")[:9]) if frac else 0
    tz = default_tz
    if "tz" in g and g["tz"] != "Z":
        s = g["tz"].replace(":", "")
        sign = -1 if s[0] == "-" else 1
        hh, mm = int(s[1:3]), int(s[3:5] or 0) if len(s) >= 5 else 0
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    elif "tz" in g:
        tz = UTC
    if year == 0:
        # Go's zero year is year 0; Python cannot hold it, and Loki users always give a year.
        year = 1
    dt = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    secs = int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return GoTime(secs * 1_000_000_000 + nanos, tz)


def _to_date(layout: Any, value: Any) -> GoTime:
    try:
        return go_parse_time(_to_str(layout), _to_str(value))
    except ValueError:
        return GoTime(-62135596800 * 1_000_000_000)  # Go's zero time


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
        raise TemplateError(f'invalid URL escape "{text[text.index("%") :][:3]}"')
    return urllib.parse.unquote_plus(text)


def _count(pattern: Any, s: Any) -> int:
    return regex.compile(_to_str(pattern)).count(_to_str(s))


def _slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, (str, list, tuple)):
        raise TemplateError("can't slice item")
    a = _to_int(idx[0]) if idx else 0
    b = _to_int(idx[1]) if len(idx) > 1 else len(item)
    return item[a:b]


def _go_replace(s: Any, old: Any, new: Any, n: Any) -> str:
    count = _to_int(n)
    return _to_str(s).replace(_to_str(old), _to_str(new), count if count >= 0 else -1)


def _html(*args: Any) -> str:
    import html

    return html.escape("".join(go_sprint(a) for a in args))


_BASE: dict[str, Callable[..., Any]] = {
    # Go builtins
    "and": _and,
    "or": _or,
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": lambda *a: "".join(go_sprint(x) for x in a),
    "println": lambda *a: " ".join(go_sprint(x) for x in a) + "\n",
    "printf": lambda f, *a: go_sprintf(_need_str(f, "printf"), *a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: _cmp(a, b) < 0,
    "le": lambda a, b: _cmp(a, b) <= 0,
    "gt": lambda a, b: _cmp(a, b) > 0,
    "ge": lambda a, b: _cmp(a, b) >= 0,
    "html": _html,
    "js": lambda *a: json.dumps("".join(go_sprint(x) for x in a))[1:-1],
    "urlquery": lambda *a: urllib.parse.quote_plus("".join(go_sprint(x) for x in a)),
    # Loki's own (Go strings package, deprecated names kept)
    "ToLower": lambda s: _need_str(s, "ToLower").lower(),
    "ToUpper": lambda s: _need_str(s, "ToUpper").upper(),
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


class _EntryFuncs(Mapping[str, Callable[..., Any]]):
    """The base functions plus ``__line__``/``__timestamp__`` bound to one entry (no dict copy)."""

    __slots__ = ("line", "ts_ns")

    def __init__(self, line: str, ts_ns: int) -> None:
        self.line = line
        self.ts_ns = ts_ns

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name == "__line__":
            return lambda: self.line
        if name == "__timestamp__":
            return lambda: GoTime(self.ts_ns)
        return _BASE[name]

    def __iter__(self) -> Iterator[str]:
        yield from ("__line__", "__timestamp__", *_BASE)

    def __len__(self) -> int:
        return len(_BASE) + 2


def entry_functions(line: str, ts_ns: int) -> Mapping[str, Callable[..., Any]]:
    """The function map for one entry: the base set plus ``__line__`` and ``__timestamp__``."""
    return _EntryFuncs(line, ts_ns)
