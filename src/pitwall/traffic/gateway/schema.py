"""A small schema language for Kong's entities: types, defaults, checks, and the field path of every error.

Kong validates each entity against a Lua schema (``kong/db/schema``) and
fills its defaults; ``check(value, spec, path, errors)`` does the same for
one value: unknown fields are errors, absent fields get their default
(``None`` where Kong's is null), and every problem is reported with its
path (``services[0].routes[1].paths[0]: ...``) so a whole file is rejected
with all of its problems at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Errors", "F", "check", "record"]

Errors = list[str]


@dataclass(frozen=True)
class F:
    """One field: its type and the checks Kong's schema puts on it."""

    type: str  # string integer number boolean array set record map any
    default: Any = None
    required: bool = False
    one_of: tuple[Any, ...] | None = None
    between: tuple[float, float] | None = None
    gt: float | None = None
    elements: F | None = None
    fields: tuple[tuple[str, F], ...] = ()
    values: F | None = None  # map values
    validate: Callable[[Any], str | None] | None = None
    len_min: int | None = None
    extra: bool = False  # record: keep fields not declared (vault config, certificates)


def record(*fields: tuple[str, F], extra: bool = False, required: bool = False) -> F:
    return F("record", fields=tuple(fields), extra=extra, required=required)


def _default(spec: F) -> Any:
    if spec.type == "record" and spec.default is None and spec.fields:
        return check({}, spec, "", [])
    if isinstance(spec.default, list | dict):
        return type(spec.default)(spec.default)
    return spec.default


def _type_ok(value: Any, spec: F) -> bool:
    t = spec.type
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t in ("array", "set"):
        return isinstance(value, list)
    if t in ("record", "map"):
        return isinstance(value, dict)
    return True


_TYPE_WORD = {"string": "a string", "boolean": "a boolean", "integer": "an integer", "number": "a number",
              "array": "an array", "set": "a set", "record": "a record", "map": "a map"}


def check(value: Any, spec: F, path: str, errors: Errors) -> Any:
    """``value`` with defaults filled; problems appended to ``errors`` as ``path: message``."""
    where = f"{path}: " if path else ""
    if value is None:
        if spec.required and spec.default is None and spec.type != "record":  # a record gets its defaults
            errors.append(f"{where}required field missing")
        return _default(spec)
    if not _type_ok(value, spec):
        errors.append(f"{where}expected {_TYPE_WORD.get(spec.type, spec.type)}")
        return value
    if spec.type == "record":
        return _check_record(value, spec, path, errors)
    if spec.type in ("array", "set"):
        out = [check(v, spec.elements, f"{path}[{i}]", errors) if spec.elements else v for i, v in enumerate(value)]
        if spec.type == "set" and all(isinstance(x, str | int | float) for x in out):
            out = list(dict.fromkeys(out))
        if spec.len_min is not None and len(out) < spec.len_min:
            errors.append(f"{where}length must be at least {spec.len_min}")
        return out
    if spec.type == "map":
        return {k: check(v, spec.values, f"{path}.{k}", errors) if spec.values else v for k, v in value.items()}
    if spec.one_of is not None and value not in spec.one_of:
        errors.append(f"{where}expected one of: {', '.join(str(x) for x in spec.one_of)}")
    if spec.between is not None and not spec.between[0] <= value <= spec.between[1]:
        lo, hi = (int(x) if float(x).is_integer() else x for x in spec.between)
        errors.append(f"{where}value should be between {lo} and {hi}")
    if spec.gt is not None and not value > spec.gt:
        errors.append(f"{where}value must be greater than {int(spec.gt) if float(spec.gt).is_integer() else spec.gt}")
    if spec.type == "string" and spec.len_min is not None and len(value) < spec.len_min:
        errors.append(f"{where}length must be at least {spec.len_min}")
    if spec.validate is not None:
        problem = spec.validate(value)
        if problem:
            errors.append(f"{where}{problem}")
    return value


def _check_record(value: dict[str, Any], spec: F, path: str, errors: Errors) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = dict(spec.fields)
    for k, v in value.items():
        if k not in known and not spec.extra:
            errors.append(f"{path + '.' if path else ''}{k}: unknown field")
        elif k not in known:
            out[k] = v
    for name, fspec in spec.fields:
        out[name] = check(value.get(name), fspec, f"{path}.{name}" if path else name, errors)
    return out


# Kong's typedefs, as the schemas below use them.

def _ip_or_cidr(v: str) -> str | None:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        return "invalid ip or cidr range: '" + v + "'"
    return None


def _header_name(v: str) -> str | None:
    if not v or any(not (c.isalnum() or c in "-_") for c in v):
        return "bad header name '" + v + "', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    return None


def _host(v: str) -> str | None:
    if not v or any(c in v for c in "/ ?#@"):
        return "invalid hostname: " + v
    return None


def _path(v: str) -> str | None:
    return None if v.startswith("/") else "should start with: /"


STRING = F("string")
STRINGS = F("array", elements=STRING)
IP_OR_CIDR = F("string", validate=_ip_or_cidr)
HEADER_NAME = F("string", validate=_header_name)
HOST = F("string", validate=_host)
PATH = F("string", validate=_path)
PORT = F("integer", between=(0, 65535))
TIMEOUT = F("integer", between=(0, 2**31 - 2))
TAGS = F("set", elements=STRING)
PROTOCOLS_HTTP = F("set", elements=F("string", one_of=("http", "https", "grpc", "grpcs")),
                   default=["grpc", "grpcs", "http", "https"], required=True)
PROTOCOLS_ALL = F("set", elements=F("string", one_of=("http", "https", "grpc", "grpcs", "tcp", "tls", "udp",
                                                      "tls_passthrough", "ws", "wss")),
                  default=["grpc", "grpcs", "http", "https"], required=True)
