"""Go's ``fmt`` printing rules (Sprint, Sprintln, Sprintf) for Python values.

Used by ``gotemplate`` so that ``{{ $value }}``, ``printf "%.2f"`` and friends
print exactly what Prometheus and Alertmanager print: floats in Go's
shortest form (``1e+06``, ``0.1``, ``+Inf``), maps as ``map[k:v]``, nil as
``<nil>``, and Go's ``%!verb(type=value)`` markers for mismatched verbs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_float", "format_float_f", "go_quote", "go_sprint", "go_sprintf", "go_sprintln", "go_type_name",
           "go_value"]

def go_type_name(v: Any) -> str:
    """The Go type name fmt would report for ``v``."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        zero = getattr(v, "zero", None)
        return "map[string]string" if isinstance(zero, str) else "map[string]interface {}"
    if callable(v):
        return "func"
    return type(v).__name__


def _shortest_digits(x: float) -> tuple[str, int]:
    """Shortest round-tripping decimal digits of |x| and the decimal point position.

    ``x == 0.DIGITS * 10**dp``; Python's ``repr`` yields the same shortest
    digits as Go's ``strconv`` (both round-trip exactly with minimal digits).
    """
    if x == 0:
        return "0", 1
    r = repr(abs(x))
    mant, _, e = r.partition("e")
    exp = int(e) if e else 0
    ip, _, fp = mant.partition(".")
    all_digits = ip + fp
    stripped = all_digits.lstrip("0")
    lead = len(all_digits) - len(stripped)
    return stripped.rstrip("0") or "0", len(ip) - lead + exp


def _exp_str(exp: int) -> str:
    return ("e-" if exp < 0 else "e+") + f"{abs(exp):02d}"


def format_float(x: float, verb: str = "g", prec: int = -1) -> str:
    """``strconv.FormatFloat(x, verb, prec, 64)`` for verbs e, f, g (E, G upper-case)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    lower = verb.lower()
    neg = "-" if math.copysign(1.0, x) < 0 else ""
    if prec < 0:
        digits, dp = _shortest_digits(x)
        if lower == "e":
            out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + _exp_str(dp - 1 if x else 0)
        elif lower == "f":
            out = _place_point(digits, dp)
        else:
            exp = dp - 1 if x else 0
            if exp < -4 or exp >= 6:
                out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + _exp_str(exp)
            else:
                out = _place_point(digits, dp)
        out = neg + out
    elif lower == "g":
        out = format(x, f".{max(prec, 1)}g")
        # Python omits the exponent's leading zero pad below 10 only in 'e' with no digits; both pad to 2.
    else:
        out = format(x, f".{prec}{lower}")
    return out.upper() if verb.isupper() else out


def format_float_f(x: float) -> str:
    """``strconv.FormatFloat(x, 'f', -1, 64)``, the form of every sample value in
    Prometheus' API: a fast path for the floats ``repr`` prints without an exponent."""
    r = repr(x)
    if "e" in r or "n" in r:  # an exponent, inf or nan
        return format_float(x, "f")
    return r[:-2] if r.endswith(".0") else r


def _place_point(digits: str, dp: int) -> str:
    if digits == "0":
        return "0"
    if dp <= 0:
        return "0." + "0" * (-dp) + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def go_quote(s: str) -> str:
    """``strconv.Quote``: double-quoted with Go escapes."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'  # the usual label value: nothing to escape, no per-character pass
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_value(v: Any) -> str:
    """``%v`` of ``v``."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return "[" + " ".join(str(b) for b in v) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_value(e) for e in v) + "]"
    if isinstance(v, Mapping):
        try:
            keys = sorted(v)
        except TypeError:
            keys = list(v)
        return "map[" + " ".join(f"{go_value(k)}:{go_value(v[k])}" for k in keys) + "]"
    go_str = getattr(v, "__go_str__", None)
    if callable(go_str):
        return str(go_str())
    return str(v)


def go_sprint(*args: Any) -> str:
    """``fmt.Sprint``: spaces between operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_value(a))
    return "".join(out)


def go_sprintln(*args: Any) -> str:
    """``fmt.Sprintln``: always spaces between operands, then a newline."""
    return " ".join(go_value(a) for a in args) + "\n"


class _Spec:
    __slots__ = ("minus", "plus", "prec", "sharp", "space", "verb", "width", "zero")

    def __init__(self) -> None:
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.width: int | None = None
        self.prec: int | None = None
        self.verb = ""


def go_sprintf(fmt: str, *args: Any) -> str:
    """``fmt.Sprintf`` for the verbs templates use: v s d f F e E g G q x X t c o b %."""
    out: list[str] = []
    argi = 0
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        if i >= n:
            out.append("%!(NOVERB)")
            break
        spec = _Spec()
        while i < n and fmt[i] in "+-# 0":
            c = fmt[i]
            spec.plus |= c == "+"
            spec.minus |= c == "-"
            spec.sharp |= c == "#"
            spec.space |= c == " "
            spec.zero |= c == "0"
            i += 1
        if i < n and fmt[i] == "*":
            i += 1
            w = args[argi] if argi < len(args) else None
            argi += 1
            if isinstance(w, int) and not isinstance(w, bool):
                spec.width = abs(w)
                spec.minus |= w < 0
            else:
                out.append("%!(BADWIDTH)")
        else:
            i, spec.width = _digits(fmt, i)
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                p = args[argi] if argi < len(args) else None
                argi += 1
                if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
                    spec.prec = p
                else:
                    out.append("%!(BADPREC)")
            else:
                i, prec = _digits(fmt, i)
                spec.prec = prec or 0
        if i >= n:
            out.append("%!(NOVERB)")
            break
        spec.verb = fmt[i]
        i += 1
        if spec.verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{spec.verb}(MISSING)")
            continue
        out.append(_format_one(spec, args[argi]))
        argi += 1
    if argi < len(args):
        extra = ", ".join(f"{go_type_name(a)}={go_value(a)}" if a is not None else "<nil>" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _digits(s: str, i: int) -> tuple[int, int | None]:
    j = i
    while j < len(s) and s[j].isdigit():
        j += 1
    return j, (int(s[i:j]) if j > i else None)


def _bad(spec: _Spec, v: Any) -> str:
    if v is None:
        return f"%!{spec.verb}(<nil>)"
    return f"%!{spec.verb}({go_type_name(v)}={go_value(v)})"


def _pad(spec: _Spec, s: str, numeric: bool = False) -> str:
    w = spec.width
    if w is None or len(s) >= w:
        return s
    if spec.minus:
        return s + " " * (w - len(s))
    if spec.zero and (numeric or not spec.minus):
        sign = s[0] if numeric and s[:1] in "+- " and s[:1] != "" else ""
        body = s[len(sign):]
        return sign + "0" * (w - len(s)) + body
    return " " * (w - len(s)) + s


def _sign(spec: _Spec, s: str) -> str:
    if s.startswith("-"):
        return s
    if spec.plus:
        return "+" + s
    if spec.space:
        return " " + s
    return s


def _format_one(spec: _Spec, v: Any) -> str:
    verb = spec.verb
    if isinstance(v, (list, tuple)) and verb not in ("v", "T") and not (verb in "xXs" and isinstance(v, bytes)):
        return "[" + " ".join(_format_one(spec, e) for e in v) + "]"
    if verb == "T":
        return _pad(spec, go_type_name(v))
    if verb == "v":
        if isinstance(v, float):
            return _pad(spec, _sign(spec, format_float(v, "g", -1 if spec.prec is None else spec.prec)), True)
        if isinstance(v, int) and not isinstance(v, bool):
            return _pad(spec, _sign(spec, str(v)), True)
        if isinstance(v, str) and spec.sharp:
            return _pad(spec, go_quote(v))
        return _pad(spec, go_value(v))
    if verb == "s":
        if isinstance(v, str):
            s = v if spec.prec is None else v[: spec.prec]
            return _pad(spec, s)
        if isinstance(v, bytes):
            return _pad(spec, v.decode(errors="replace"))
        if isinstance(v, Mapping) or (v is not None and not isinstance(v, (bool, int, float))):
            return _pad(spec, go_value(v))
        return _bad(spec, v)
    if verb == "q":
        if isinstance(v, str):
            return _pad(spec, "`" + v + "`" if spec.sharp and "`" not in v else go_quote(v))
        if isinstance(v, int) and not isinstance(v, bool):
            return _pad(spec, "'" + go_quote(chr(v))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'")
        return _bad(spec, v)
    if verb == "t":
        return _pad(spec, "true" if v else "false") if isinstance(v, bool) else _bad(spec, v)
    if isinstance(v, bool) or v is None:
        return _bad(spec, v)
    if isinstance(v, int):
        return _format_int(spec, v)
    if isinstance(v, float):
        return _format_float_verb(spec, v)
    if isinstance(v, (str, bytes)) and verb in "xX":
        raw = v.encode() if isinstance(v, str) else v
        hx = raw.hex() if not spec.space else " ".join(f"{b:02x}" for b in raw)
        return _pad(spec, hx.upper() if verb == "X" else hx)
    return _bad(spec, v)


def _format_int(spec: _Spec, v: int) -> str:
    verb = spec.verb
    bases = {"d": 10, "x": 16, "X": 16, "o": 8, "O": 8, "b": 2}
    if verb == "c":
        return _pad(spec, chr(v))
    if verb == "U":
        return _pad(spec, f"U+{v:04X}")
    if verb in ("e", "E", "f", "F", "g", "G"):
        return _bad(spec, v)
    if verb not in bases:
        return _bad(spec, v)
    digits = format(abs(v), {"d": "d", "x": "x", "X": "X", "o": "o", "O": "o", "b": "b"}[verb])
    if spec.prec is not None:
        digits = digits.rjust(spec.prec, "0")
    if spec.sharp:
        digits = {"x": "0x", "X": "0X", "o": "0", "b": "0b"}.get(verb, "") + digits
    if verb == "O":
        digits = "0o" + digits
    s = ("-" if v < 0 else "") + digits
    return _pad(spec, _sign(spec, s), numeric=spec.prec is None)


def _format_float_verb(spec: _Spec, v: float) -> str:
    verb = spec.verb
    if verb not in ("e", "E", "f", "F", "g", "G"):
        return _bad(spec, v)
    if verb in ("f", "F"):
        prec = 6 if spec.prec is None else spec.prec
        s = format_float(v, "f", prec) if math.isfinite(v) else format_float(v)
    elif verb in ("e", "E"):
        prec = 6 if spec.prec is None else spec.prec
        s = format_float(v, verb, prec) if math.isfinite(v) else format_float(v)
    else:
        s = format_float(v, verb, -1 if spec.prec is None else spec.prec)
    return _pad(spec, _sign(spec, s), numeric=math.isfinite(v))
