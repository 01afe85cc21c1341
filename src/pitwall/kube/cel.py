"""CEL validation rules of CRDs (``x-kubernetes-validations``), evaluated as the apiserver does.

Each rule runs at its schema node with ``self`` bound to the node's value,
typed from the schema (objects with ``properties`` as messages whose field
names are escaped as Kubernetes escapes them: ``namespace`` is
``__namespace__``, ``a-b`` is ``a__dash__b``; ``additionalProperties`` as
maps; ``format: duration``/``date``/``date-time``/``byte`` as durations,
timestamps and bytes; int-or-string and preserved unknown fields as plain
values). A rule naming ``oldSelf`` is a transition rule: on update it runs
only where an old value correlates (through object fields, map keys and
``x-kubernetes-list-type: map`` keys), unless ``optionalOldSelf`` binds
``oldSelf`` as an optional. Failures become the causes the apiserver
(v1.32) answers: ``<path>: Invalid value: "<type>": <message>``, with
``fieldPath``, ``messageExpression`` and ``reason`` honoured.

The engine is cel-python (``celpy``) plus the Kubernetes library functions
the vendored CRDs and the upstream docs use (``url()`` and its getters,
``isURL``, string ``lowerAscii``/``upperAscii``/``indexOf``/``lastIndexOf``/
``split``/``join``/``trim``/``replace``, list ``isSorted``/``sum``/``min``/
``max``/``indexOf``/``lastIndexOf``); ``matches`` runs on RE2 through
``core.regex``. Rules are compiled once per rule text and the schema walk
once per schema; evaluation is capped by a per-request step budget, as the
apiserver caps the runtime cost of one request.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import Activation, CELEvalError, Evaluator

from pitwall.core import regex
from pitwall.kube.errors import Cause

__all__ = ["RUNTIME_BUDGET", "RuleSet", "check_crd_rules", "compile_schema", "validate_rules"]

Obj = dict[str, Any]

RUNTIME_BUDGET = 100_000
"""Evaluation steps (AST node visits) one request may spend on all its rules; past it the request is
rejected, as the apiserver rejects a request whose rules exceed its runtime cost budget."""

_OUT_OF_BUDGET = "validation failed due to running out of cost budget, no further validation rules will be run"
_REASONS = ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate")
_RESERVED = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
                       "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
                       "void", "while"})
_ESCAPABLE = re.compile(r"[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*")
_MAX_SCHEMAS = 512  # compiled schema walks kept (one per served CRD version)


class _OutOfBudget(Exception):
    """Raised inside evaluation when the request's step budget is spent."""


# ---- the Kubernetes CEL library (the part CRDs use) -------------------------------------------------------
@dataclass(frozen=True)
class _URL:
    """A parsed ``url(...)`` value (Kubernetes' URL library type)."""

    parts: urllib.parse.SplitResult


def _parse_url(s: str) -> _URL | None:
    """Absolute URLs and absolute paths, as Go's ``url.ParseRequestURI`` accepts them."""
    if not s or any(c in s for c in " \t\r\n"):
        return None
    try:
        p = urllib.parse.urlsplit(s)
        _ = p.port
    except ValueError:
        return None
    if p.scheme:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", p.scheme) or p.fragment:
            return None
        return _URL(p)
    return _URL(p) if s.startswith("/") and not p.fragment else None


def _url(s: Any) -> Any:
    u = _parse_url(str(s))
    if u is None:
        return CELEvalError(f"URL parse error during conversion from string: parse {json.dumps(str(s))}: "
                            "invalid URI for request")
    return u


def _is_url(s: Any) -> celtypes.BoolType:
    return celtypes.BoolType(_parse_url(str(s)) is not None)


def _url_getter(get: Callable[[urllib.parse.SplitResult], str]) -> Callable[[Any], Any]:
    def fn(u: Any) -> Any:
        if not isinstance(u, _URL):
            return CELEvalError("no such overload")
        return celtypes.StringType(get(u.parts))
    return fn


def _host(p: urllib.parse.SplitResult) -> str:
    return p.netloc.rpartition("@")[2]


def _hostname(p: urllib.parse.SplitResult) -> str:
    h = _host(p)
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else ""
    return h.rpartition(":")[0] if ":" in h else h


def _port(p: urllib.parse.SplitResult) -> str:
    h = _host(p)
    tail = h[h.find("]") + 1:] if h.startswith("[") else h
    return tail.rpartition(":")[2] if ":" in tail else ""


def _matches(text: Any, pattern: Any) -> Any:
    try:
        return celtypes.BoolType(regex.compile(str(pattern)).search(str(text)) is not None)
    except regex.RegexError as e:
        return CELEvalError(str(e))


def _index_of(x: Any, sub: Any, start: Any = None) -> Any:
    if isinstance(x, list):
        return celtypes.IntType(next((i for i, v in enumerate(x) if v == sub), -1))
    s = str(x)
    b = int(start) if start is not None else 0
    if b < 0 or b > len(s):
        return CELEvalError(f"index out of range: {b}")
    return celtypes.IntType(s.find(str(sub), b))


def _last_index_of(x: Any, sub: Any, end: Any = None) -> Any:
    if isinstance(x, list):
        return celtypes.IntType(max((i for i, v in enumerate(x) if v == sub), default=-1))
    s = str(x)
    e = int(end) if end is not None else len(s)
    if e < 0 or e > len(s):
        return CELEvalError(f"index out of range: {e}")
    return celtypes.IntType(s.rfind(str(sub), 0, e + len(str(sub))))


def _split(s: Any, sep: Any, n: Any = None) -> celtypes.ListType:
    limit = -1 if n is None else int(n)
    if limit == 0:
        return celtypes.ListType([])
    parts = str(s).split(str(sep), limit - 1) if limit > 0 else str(s).split(str(sep))
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join(xs: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(sep).join(str(x) for x in xs))


def _replace(s: Any, old: Any, new: Any, n: Any = None) -> celtypes.StringType:
    return celtypes.StringType(str(s).replace(str(old), str(new), -1 if n is None else int(n)))


def _substring(s: Any, start: Any, end: Any = None) -> Any:
    text = str(s)
    b, e = int(start), len(text) if end is None else int(end)
    if b < 0 or b > len(text) or e < b or e > len(text):
        return CELEvalError(f"index out of range: {b if b < 0 or b > len(text) else e}")
    return celtypes.StringType(text[b:e])


def _ascii_case(upper: bool) -> Callable[[Any], celtypes.StringType]:
    def fn(s: Any) -> celtypes.StringType:
        return celtypes.StringType("".join((c.upper() if upper else c.lower()) if c.isascii() else c for c in str(s)))
    return fn


def _is_sorted(xs: Any) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in zip(xs, list(xs)[1:], strict=False)))


def _sum(xs: Any) -> Any:
    items = list(xs)
    total: Any = celtypes.IntType(0) if not items else items[0]
    for x in items[1:]:
        total = total + x
    return total


def _extreme(pick: Callable[[Iterable[Any]], Any]) -> Callable[[Any], Any]:
    def fn(xs: Any) -> Any:
        items = list(xs)
        return pick(items) if items else CELEvalError("min/max on an empty list")
    return fn


_GO_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def _go_duration_ns(s: str) -> int | None:
    """Go's ``time.ParseDuration`` (what Kubernetes' ``duration()`` accepts): ``1h30m``, ``0.5ms``, ``0``."""
    sign, rest = (-1, s[1:]) if s.startswith("-") else (1, s[1:] if s.startswith("+") else s)
    if rest == "0":
        return 0
    if not rest:
        return None
    total, pos = 0, 0
    while pos < len(rest):
        m = _GO_DURATION.match(rest, pos)
        if m is None or m.group(1) in ("", "."):
            return None
        total += int(float(m.group(1)) * _GO_UNITS[m.group(2)])
        pos = m.end()
    return sign * total


def _duration(v: Any) -> Any:
    if isinstance(v, celtypes.DurationType):
        return v
    ns = _go_duration_ns(str(v)) if isinstance(v, str) else None
    if ns is None:
        return CELEvalError("type conversion error from 'string' to 'google.protobuf.Duration'")
    try:
        return celtypes.DurationType(datetime.timedelta(microseconds=ns / 1000))
    except (ValueError, OverflowError):
        return CELEvalError("duration out of range")


def _int(v: Any) -> Any:
    try:
        return celtypes.IntType(v)
    except (ValueError, TypeError):
        return CELEvalError(f"type conversion error from '{_cel_type(v)}' to 'int'")


def _cel_type(v: Any) -> str:
    for py, name in ((bool, "bool"), (str, "string"), (float, "double"), (int, "int")):
        if isinstance(v, py):
            return name
    return type(v).__name__


def _and(x: Any, y: Any) -> Any:
    """CEL's commutative ``&&``: false wins over errors; of two errors, the first."""
    if (isinstance(x, celtypes.BoolType) and not x) or (isinstance(y, celtypes.BoolType) and not y):
        return celtypes.BoolType(False)
    return _logic_rest(x, y, celtypes.BoolType(True))


def _or(x: Any, y: Any) -> Any:
    """CEL's commutative ``||``: true wins over errors; of two errors, the first."""
    if (isinstance(x, celtypes.BoolType) and x) or (isinstance(y, celtypes.BoolType) and y):
        return celtypes.BoolType(True)
    return _logic_rest(x, y, celtypes.BoolType(False))


def _logic_rest(x: Any, y: Any, both: celtypes.BoolType) -> Any:
    if isinstance(x, celtypes.BoolType) and isinstance(y, celtypes.BoolType):
        return both
    for v in (x, y):
        if isinstance(v, CELEvalError):
            return v
    return CELEvalError("no such overload")


@dataclass(frozen=True)
class _Optional:
    """``oldSelf`` of an ``optionalOldSelf`` rule: CEL's optional type."""

    value: Any


def _has_value(o: Any) -> celtypes.BoolType:
    return celtypes.BoolType(isinstance(o, _Optional) and o.value is not None)


def _opt_value(o: Any) -> Any:
    if isinstance(o, _Optional) and o.value is not None:
        return o.value
    return CELEvalError("optional.none() dereference")


def _or_value(o: Any, d: Any) -> Any:
    return o.value if isinstance(o, _Optional) and o.value is not None else d


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "matches": _matches, "duration": _duration, "int": _int, "_&&_": _and, "_||_": _or,
    "url": _url, "isURL": _is_url,
    "getScheme": _url_getter(lambda p: p.scheme), "getHost": _url_getter(_host),
    "getHostname": _url_getter(_hostname), "getPort": _url_getter(_port),
    "getEscapedPath": _url_getter(lambda p: p.path), "getQuery": _url_getter(lambda p: p.query),
    "indexOf": _index_of, "lastIndexOf": _last_index_of, "split": _split, "join": _join,
    "replace": _replace, "substring": _substring, "trim": lambda s: celtypes.StringType(str(s).strip()),
    "lowerAscii": _ascii_case(False), "upperAscii": _ascii_case(True),
    "isSorted": _is_sorted, "sum": _sum, "min": _extreme(min), "max": _extreme(max),
    "hasValue": _has_value, "value": _opt_value, "orValue": _or_value,
}
_ENV = celpy.Environment()
_Ast = lark.Tree[Any]


class _Budget:
    """Steps left for one request, shared by every rule and nested macro evaluation."""

    def __init__(self, steps: int) -> None:
        self.left = steps


class _Budgeted(Evaluator):
    """celpy's tree walker, counting node visits against the request's budget."""

    def __init__(self, ast: _Ast, activation: Activation, budget: _Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def sub_evaluator(self, ast: _Ast) -> Evaluator:
        return _Budgeted(ast, self.activation, self.budget)

    def visit_children(self, tree: _Ast) -> list[Any]:
        self.budget.left -= 1
        if self.budget.left < 0:
            raise _OutOfBudget()
        return cast(list[Any], super().visit_children(tree))


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> _Ast:
    """One CEL expression parsed once (keyed by its text); raises ``CELParseError``."""
    return _ENV.compile(text)


def _evaluate(ast: _Ast, ctx: dict[str, Any], budget: _Budget) -> Any:
    act = Activation(package=_ENV.package, annotations=_ENV.annotations, functions=_FUNCTIONS)
    return _Budgeted(ast, act, budget).evaluate(ctx)


def _uses(ast: _Ast, name: str) -> bool:
    return any(isinstance(t, lark.Token) and t.value == name for t in ast.scan_values(lambda _: True))


# ---- compiled rules and the schema walk -----------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    text: str
    ast: _Ast | None  # None: the rule did not compile (a CRD stored before rules were checked)
    message: str
    message_ast: _Ast | None
    reason: str
    field_path: str
    uses_old_self: bool
    optional_old_self: bool
    compile_error: str = ""

    def error_string(self) -> str:
        return self.message.strip() or self.text.strip()


@dataclass
class RuleSet:
    """The rules of one schema node and of the nodes below it (only branches that hold rules)."""

    schema: Obj
    rules: list[_Rule] = field(default_factory=list)
    props: dict[str, RuleSet] = field(default_factory=dict)
    additional: RuleSet | None = None
    items: RuleSet | None = None
    all_of: list[RuleSet] = field(default_factory=list)


def _compile_rule(r: Obj) -> _Rule:
    text = str(r.get("rule", ""))
    mexpr = str(r.get("messageExpression") or "")
    try:
        ast = _compile(text)
        mast = _compile(mexpr) if mexpr else None
    except CELParseError as e:
        return _Rule(text=text, ast=None, message="", message_ast=None, reason="", field_path="",
                     uses_old_self=False, optional_old_self=False, compile_error=_parse_error(e))
    return _Rule(text=text, ast=ast, message=str(r.get("message") or ""),
                 message_ast=mast, reason=str(r.get("reason") or ""),
                 field_path=_normalise_field_path(str(r.get("fieldPath") or "")),
                 uses_old_self=_uses(ast, "oldSelf"), optional_old_self=bool(r.get("optionalOldSelf")))


def _build(s: Any) -> RuleSet | None:
    if not isinstance(s, dict):
        return None
    node = RuleSet(schema=s, rules=[_compile_rule(r) for r in s.get("x-kubernetes-validations") or []
                                    if isinstance(r, dict)])
    for k, sub in (s.get("properties") or {}).items():
        child = _build(sub)
        if child is not None:
            node.props[k] = child
    node.additional = _build(s.get("additionalProperties"))
    node.items = _build(s.get("items"))
    node.all_of = [c for c in (_build(x) for x in s.get("allOf") or []) if c is not None]
    if node.rules or node.props or node.additional or node.items or node.all_of:
        return node
    return None


_SCHEMAS: dict[int, tuple[Obj, RuleSet | None]] = {}


def compile_schema(schema: Obj) -> RuleSet | None:
    """The compiled rules of a version's schema, built once per schema object (None: it has no rules)."""
    hit = _SCHEMAS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    built = _build(schema)
    if len(_SCHEMAS) >= _MAX_SCHEMAS:
        _SCHEMAS.clear()
    _SCHEMAS[id(schema)] = (schema, built)  # the schema is kept so its id is not reused while cached
    return built


# ---- CRD create/update: every rule must compile -----------------------------------------------------------
def _go_rule(r: Obj) -> str:
    """A ValidationRule as Go's %#v prints it in the apiserver's field error."""
    reason = r.get("reason")
    reason_s = f"(*apiextensions.FieldValueErrorReason)({json.dumps(reason)})" if reason else \
        "(*apiextensions.FieldValueErrorReason)(nil)"
    opt = r.get("optionalOldSelf")
    opt_s = f"(*bool)({'true' if opt else 'false'})" if opt is not None else "(*bool)(nil)"
    return (f"apiextensions.ValidationRule{{Rule:{json.dumps(str(r.get('rule', '')))}, "
            f"Message:{json.dumps(str(r.get('message') or ''))}, "
            f"MessageExpression:{json.dumps(str(r.get('messageExpression') or ''))}, Reason:{reason_s}, "
            f"FieldPath:{json.dumps(str(r.get('fieldPath') or ''))}, OptionalOldSelf:{opt_s}}}")


def _parse_error(e: Exception) -> str:
    return " ".join(str(e.args[0] if e.args else e).split())


def _check_rule(path: str, r: Any, s: Obj, out: list[Cause], uncorrelatable: str) -> None:
    if not isinstance(r, dict):
        out.append(Cause(path, "FieldValueInvalid", "Invalid value: must be an object"))
        return
    text = str(r.get("rule") or "")
    if not text.strip():
        out.append(Cause(f"{path}.rule", "FieldValueRequired", "Required value"))
        return
    try:
        _check_old_self(path, r, _uses(_compile(text), "oldSelf"), uncorrelatable, out)
    except CELParseError as e:
        out.append(Cause(f"{path}.rule", "FieldValueInvalid",
                         f"Invalid value: {_go_rule(r)}: compilation failed: ERROR: <input>: {_parse_error(e)}"))
    mexpr = r.get("messageExpression")
    if mexpr:
        try:
            _compile(str(mexpr))
        except CELParseError as e:
            out.append(Cause(f"{path}.messageExpression", "FieldValueInvalid",
                             f"Invalid value: {_go_rule(r)}: messageExpression compilation failed: ERROR: "
                             f"<input>: {_parse_error(e)}"))
    reason = r.get("reason")
    if reason is not None and reason not in _REASONS:
        sup = ", ".join(json.dumps(x) for x in _REASONS)
        out.append(Cause(f"{path}.reason", "FieldValueNotSupported",
                         f"Unsupported value: {json.dumps(reason)}: supported values: {sup}"))
    fp = r.get("fieldPath")
    if fp and _resolve_field_path(str(fp), s) is None:
        out.append(Cause(f"{path}.fieldPath", "FieldValueInvalid",
                         f"Invalid value: {json.dumps(fp)}: fieldPath must be a valid path: "
                         "does not refer to a valid field"))


def _check_old_self(path: str, r: Obj, uses: bool, uncorrelatable: str, out: list[Cause]) -> None:
    """Transition rules only where an old value can correlate; ``optionalOldSelf`` only with ``oldSelf``."""
    if uses and uncorrelatable:
        out.append(Cause(f"{path}.rule", "FieldValueInvalid",
                         f"Invalid value: {json.dumps(str(r.get('rule')))}: oldSelf cannot be used on the "
                         f"uncorrelatable portion of the schema within {uncorrelatable}"))
    elif not uses and r.get("optionalOldSelf") is not None:
        out.append(Cause(f"{path}.optionalOldSelf", "FieldValueInvalid",
                         f"Invalid value: {'true' if r['optionalOldSelf'] else 'false'}: may not be set if oldSelf "
                         "is not used in rule"))


def check_crd_rules(path: str, s: Any, out: list[Cause], uncorrelatable: str = "") -> None:
    """Append a cause for every rule under schema ``s`` that does not compile or is malformed.

    ``uncorrelatable``: the schema path of the first list above ``s`` whose items cannot be matched
    with their old values (any list but ``x-kubernetes-list-type: map``), where ``oldSelf`` is refused.
    """
    if not isinstance(s, dict):
        return
    for i, r in enumerate(s.get("x-kubernetes-validations") or []):
        _check_rule(f"{path}.x-kubernetes-validations[{i}]", r, s, out, uncorrelatable)
    for k, sub in (s.get("properties") or {}).items():
        check_crd_rules(f"{path}.properties[{k}]", sub, out, uncorrelatable)
    check_crd_rules(f"{path}.additionalProperties", s.get("additionalProperties"), out, uncorrelatable)
    items_unc = uncorrelatable or ("" if s.get("x-kubernetes-list-type") == "map" else f"{path}.items")
    check_crd_rules(f"{path}.items", s.get("items"), out, items_unc)
    for i, sub in enumerate(s.get("allOf") or []):
        check_crd_rules(f"{path}.allOf[{i}]", sub, out, uncorrelatable)


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]")


def _path_parts(fp: str) -> list[str] | None:
    parts, pos = [], 0
    while pos < len(fp):
        m = _PATH_TOKEN.match(fp, pos)
        if m is None:
            return None
        parts.append(m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2)))
        pos = m.end()
    return parts


def _resolve_field_path(fp: str, s: Obj) -> list[str] | None:
    """The field names a rule's ``fieldPath`` (``.spec.x`` or ``['a.b']``) walks, if the schema has them."""
    parts = _path_parts(fp)
    if not parts:
        return None
    cur: Any = s
    for p in parts:
        if not isinstance(cur, dict):
            return None
        props = cur.get("properties") or {}
        if p in props:
            cur = props[p]
        elif isinstance(cur.get("additionalProperties"), dict):
            cur = cur["additionalProperties"]
        else:
            return None
    return parts


def _normalise_field_path(fp: str) -> str:
    """``.spec.a['b.c']`` as the field path suffix the apiserver prints (``spec.a[b.c]``)."""
    parts = _path_parts(fp) if fp else None
    if not parts:
        return ""
    out = ""
    for p in parts:
        out += f"[{p}]" if re.search(r"[.\[\]]", p) else (f".{p}" if out else p)
    return out


# ---- typing a value from its schema ----------------------------------------------------------------------
def _escape(name: str) -> str | None:
    """A property name as CEL sees it (Kubernetes' escaping); None if it cannot be named."""
    if name in _RESERVED:
        return f"__{name}__"
    if not _ESCAPABLE.fullmatch(name):
        return None
    return (name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__")
            .replace("/", "__slash__"))


def _plain(v: Any) -> Any:
    if isinstance(v, bool):
        return celtypes.BoolType(v)
    if isinstance(v, int):
        return celtypes.IntType(v)
    if isinstance(v, float):
        return celtypes.DoubleType(v)
    if isinstance(v, str):
        return celtypes.StringType(v)
    if isinstance(v, list):
        return celtypes.ListType([_plain(x) for x in v])
    if isinstance(v, dict):
        return celtypes.MapType({celtypes.StringType(k): _plain(x) for k, x in v.items()})
    return None


def _string(v: str, fmt: Any) -> Any:
    try:
        if fmt == "duration":
            return celtypes.DurationType(v)
        if fmt in ("date", "date-time"):
            return celtypes.TimestampType(v if fmt == "date-time" else v + "T00:00:00Z")
        if fmt == "byte":
            import base64

            return celtypes.BytesType(base64.b64decode(v))
    except (ValueError, TypeError):
        pass  # the schema check reports the bad format; the rule sees the string
    return celtypes.StringType(v)


def to_cel(v: Any, s: Any) -> Any:
    """A JSON value as a CEL value typed by its schema node."""
    if not isinstance(s, dict) or s.get("x-kubernetes-int-or-string"):
        return _plain(v)
    if isinstance(v, str):
        return _string(v, s.get("format")) if s.get("format") else celtypes.StringType(v)
    if isinstance(v, list):
        return celtypes.ListType([to_cel(x, s.get("items")) for x in v])
    if isinstance(v, dict):
        props = s.get("properties")
        if props:
            out: dict[Any, Any] = {}
            for k, x in v.items():
                name = _escape(k)
                if name is not None:
                    out[celtypes.StringType(name)] = to_cel(x, props.get(k))
            return celtypes.MapType(out)
        add = s.get("additionalProperties")
        return celtypes.MapType({celtypes.StringType(k): to_cel(x, add) for k, x in v.items()})
    return _plain(v)


# ---- evaluation ------------------------------------------------------------------------------------------
def _go_value(sch: Obj) -> str:
    """The bad value the apiserver (v1.32) prints for a failed rule: the node's schema type."""
    return json.dumps(str(sch.get("type") or ""))


def _cause(path: str, sch: Obj, detail: str, reason: str) -> Cause:
    if reason == "FieldValueForbidden":
        return Cause(path, reason, f"Forbidden: {detail}")
    if reason == "FieldValueRequired":
        return Cause(path, reason, f"Required value: {detail}")
    if reason == "FieldValueDuplicate":
        return Cause(path, reason, f"Duplicate value: {_go_value(sch)}")
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_go_value(sch)}: {detail}")


_NO_KEY = re.compile(r"no such member in mapping: '(.*)'")


def _err_text(e: Any) -> str:
    """An evaluation error in cel-go's words where celpy's differ (``no such key: x``)."""
    args = getattr(e, "args", ())
    text = str(args[0]) if args else str(e)
    m = _NO_KEY.fullmatch(text)
    return f"no such key: {m.group(1)}" if m else text


def _message(r: _Rule, ctx: dict[str, Any], budget: _Budget) -> str:
    """The message of a failed rule: messageExpression's string if it yields a good one, else message/default."""
    if r.message_ast is not None:
        try:
            m = _evaluate(r.message_ast, ctx, budget)
        except CELEvalError:
            m = None
        if isinstance(m, str) and m.strip() and "\n" not in m and len(m) <= 5 * 1024:
            return m.strip()
    return r.message.strip() if r.message.strip() else f"failed rule: {r.error_string()}"


class _Walk:
    """One request's evaluation: its budget and the causes found so far."""

    def __init__(self, budget: int) -> None:
        self.budget = _Budget(budget)
        self.causes: list[Cause] = []
        self.stopped = False

    def node(self, n: RuleSet, path: str, v: Any, old: Any, has_old: bool) -> None:
        if v is None or self.stopped:
            return
        if n.rules:
            self.rules(n, path, v, old, has_old)
        for sub in n.all_of:
            self.node(sub, path, v, old, has_old)
        if isinstance(v, dict):
            self.fields(n, path, v, old if isinstance(old, dict) else None)
        elif isinstance(v, list) and n.items is not None:
            self.items(n, n.items, path, v, old if isinstance(old, list) else None)

    def fields(self, n: RuleSet, path: str, v: Obj, old: Obj | None) -> None:
        props = n.schema.get("properties") or {}
        for k, x in v.items():
            if k in props:  # a field: spec.x; a map key: spec.labels[x], as field.Path prints them
                sub, child = n.props.get(k), (f"{path}.{k}" if path else k)
            else:
                sub, child = n.additional, f"{path}[{k}]"
            if sub is not None:
                self.node(sub, child, x, (old or {}).get(k), old is not None and k in old)

    def items(self, n: RuleSet, it: RuleSet, path: str, v: list[Any], old: list[Any] | None) -> None:
        keys = n.schema.get("x-kubernetes-list-map-keys") or []
        by_key: dict[str, Any] = {}
        if old is not None and n.schema.get("x-kubernetes-list-type") == "map" and keys:
            for o in old:
                if isinstance(o, dict):
                    by_key[json.dumps([o.get(k) for k in keys])] = o
        for i, x in enumerate(v):
            key = json.dumps([x.get(k) for k in keys]) if by_key and isinstance(x, dict) else None
            o = by_key.get(key) if key is not None else None
            self.node(it, f"{path}[{i}]", x, o, o is not None)

    def rules(self, n: RuleSet, path: str, v: Any, old: Any, has_old: bool) -> None:
        selfv = to_cel(v, n.schema)
        oldv = to_cel(old, n.schema) if has_old else None
        for r in n.rules:
            if r.uses_old_self and not has_old and not r.optional_old_self:
                continue
            ctx: dict[str, Any] = {"self": selfv}
            if r.uses_old_self:
                ctx["oldSelf"] = _Optional(oldv) if r.optional_old_self else oldv
            if not self.rule(n, r, path, ctx):
                return

    def rule(self, n: RuleSet, r: _Rule, path: str, ctx: dict[str, Any]) -> bool:
        """Evaluate one rule; False when the budget ran out and no further rule may run."""
        if r.ast is None:
            self.causes.append(Cause(path, "FieldValueInvalid",
                                     f"Invalid value: {_go_value(n.schema)}: rule compile error: {r.compile_error}"))
            return True
        try:
            ok = _evaluate(r.ast, ctx, self.budget)
        except _OutOfBudget:
            self.causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_go_value(n.schema)}: "
                                     f"{_OUT_OF_BUDGET}"))
            self.stopped = True
            return False
        except CELEvalError as e:
            text = _err_text(e)
            if text.startswith("no such overload"):
                detail = (f"'{text}': call arguments did not match a supported operator, function or macro "
                          f"signature for rule: {r.error_string()}")
            else:
                detail = f"{text} evaluating rule: {r.error_string()}"
            self.causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_go_value(n.schema)}: {detail}"))
            return True
        if ok is True or (isinstance(ok, celtypes.BoolType) and bool(ok)):
            return True
        at = path
        if r.field_path:
            at = f"{path}{'' if r.field_path.startswith('[') or not path else '.'}{r.field_path}"
        try:
            detail = _message(r, ctx, self.budget)
        except _OutOfBudget:
            detail = r.message.strip() or f"failed rule: {r.error_string()}"
        self.causes.append(_cause(at, n.schema, detail, r.reason))
        return True


def validate_rules(schema: Obj, obj: Obj, old: Obj | None, budget: int = RUNTIME_BUDGET) -> list[Cause]:
    """The causes of every ``x-kubernetes-validations`` rule ``obj`` fails (``old``: the stored object on update).

    ``schema`` is the version's ``openAPIV3Schema``; paths are relative to the object root
    (``spec.http[0].timeout``), as the apiserver prints them.
    """
    rs = compile_schema(schema)
    if rs is None:
        return []
    w = _Walk(budget)
    w.node(rs, "", obj, old, old is not None)
    return w.causes
