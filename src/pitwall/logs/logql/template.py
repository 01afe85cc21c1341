"""A Go ``text/template`` subset for ``line_format`` and ``label_format``.

Supports what LogQL templates use: ``{{ .label }}``, pipelines ``|``,
function calls with literal/field/parenthesised arguments, ``if``/``else
if``/``else``, ``with``, ``range``, variables (``$x := ...``), comments
and trim markers (``{{-``, ``-}}``). The data is the entry's label map with
``missingkey=zero`` (a missing label renders as ""). Functions are the ones
Loki registers (its own plus the sprig subset it exposes), see
``template_funcs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pitwall.logs.logql.units import go_unquote

__all__ = ["Template", "TemplateError", "compile_template"]


class TemplateError(Exception):
    """A template failed to parse or execute (Loki: ``TemplateFormatErr``)."""


# ---------------------------------------------------------------- AST nodes


@dataclass
class _Text:
    text: str


@dataclass
class _Field:
    path: tuple[str, ...]  # () is "." itself
    var: str | None = None  # "$x.a" -> var="x"


@dataclass
class _Literal:
    value: Any


@dataclass
class _Ident:
    name: str


@dataclass
class _Pipeline:
    cmds: list[list[Any]]
    decl: str | None = None
    assign: bool = False
    decl_index: str | None = None  # `range $i, $v := ...`


@dataclass
class _Action:
    pipe: _Pipeline


@dataclass
class _Branch:
    kind: str  # if / with / range
    pipe: _Pipeline
    body: list[Any] = field(default_factory=list)
    else_body: list[Any] = field(default_factory=list)


# ---------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|=|\||\(|\)|,)
    )""",
    re.X,
)


def _tokenize_action(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"unexpected {src[pos:].strip()[:10]!r} in command")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return out


def _action_end(src: str, i: int) -> int:
    """Index of the ``}}`` closing the action whose body starts at ``i`` (quotes honoured)."""
    n = len(src)
    while i < n:
        c = src[i]
        if c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" and c != "`" else 1
            i = j + 1
            continue
        if src.startswith("/*", i):
            k = src.find("*/", i + 2)
            if k < 0:
                raise TemplateError("unclosed comment")
            i = k + 2
            continue
        if src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("unclosed action")


def _split(src: str) -> list[tuple[str, str]]:
    """Template source as ("text", s) and ("action", s) pieces, trim markers applied."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip()
        if start < 0:
            pieces.append(("text", text))
            return pieces
        body_start = start + 2
        if (
            src.startswith("- ", body_start)
            or src.startswith("-\t", body_start)
            or src.startswith("-\n", body_start)
        ):
            text = text.rstrip()
            body_start += 1
        pieces.append(("text", text))
        end = _action_end(src, body_start)
        body = src[body_start:end]
        trim_next = False
        if body.endswith("-") and body[:-1][-1:].isspace():
            body = body[:-1]
            trim_next = True
        pieces.append(("action", body))
        pos = end + 2


class _TemplateParser:
    def __init__(self, src: str) -> None:
        self.pieces = _split(src)
        self.i = 0

    def parse(self) -> list[Any]:
        body, end = self.parse_list()
        if end is not None:
            raise TemplateError(f"unexpected {{{{{end}}}}}")
        return body

    def parse_list(self) -> tuple[list[Any], str | None]:
        nodes: list[Any] = []
        while self.i < len(self.pieces):
            kind, s = self.pieces[self.i]
            self.i += 1
            if kind == "text":
                if s:
                    nodes.append(_Text(s))
                continue
            stripped = s.strip()
            if stripped.startswith("/*"):
                if not stripped.endswith("*/"):
                    raise TemplateError("unclosed comment")
                continue
            word = stripped.split(None, 1)[0] if stripped else ""
            if word in ("end", "else"):
                return nodes, stripped
            if word in ("if", "with", "range"):
                nodes.append(self.parse_branch(word, stripped[len(word) :]))
                continue
            if word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"{word} is not supported")
            if not stripped:
                raise TemplateError("missing value for command")
            nodes.append(_Action(_parse_pipeline(stripped)))
        return nodes, None

    def parse_branch(self, kind: str, rest: str) -> _Branch:
        branch = _Branch(kind, _parse_pipeline(rest))
        body, end = self.parse_list()
        branch.body = body
        if end is None:
            raise TemplateError(f"unexpected EOF in {kind}")
        if end.startswith("else"):
            tail = end[4:].strip()
            if tail.startswith("if ") or tail.startswith("with "):
                inner_kind = tail.split(None, 1)[0]
                branch.else_body = [self.parse_branch(inner_kind, tail[len(inner_kind) :])]
                return branch
            else_body, end2 = self.parse_list()
            if end2 != "end":
                raise TemplateError(f"expected end; found {end2}")
            branch.else_body = else_body
        elif end != "end":
            raise TemplateError(f"unexpected {end}")
        return branch


def _parse_pipeline(src: str) -> _Pipeline:
    toks = _tokenize_action(src)
    decl: str | None = None
    decl_index: str | None = None
    assign = False
    if len(toks) >= 4 and toks[0][0] == "var" and toks[1] == ("op", ",") and toks[2][0] == "var":
        decl_index = toks[0][1][1:]
        toks = toks[2:]
    if len(toks) >= 2 and toks[0][0] == "var" and toks[1] in (("op", ":="), ("op", "=")):
        decl = toks[0][1][1:]
        assign = toks[1][1] == "="
        toks = toks[2:]
    pos, cmds = _parse_cmds(toks, 0)
    if pos != len(toks):
        raise TemplateError(f"unexpected {toks[pos][1]!r} in operand")
    if not cmds:
        raise TemplateError("missing value for command")
    return _Pipeline(cmds, decl, assign, decl_index)


def _parse_cmds(toks: list[tuple[str, str]], pos: int) -> tuple[int, list[list[Any]]]:
    cmds: list[list[Any]] = []
    cmd: list[Any] = []
    while pos < len(toks):
        kind, s = toks[pos]
        if kind == "op" and s == "|":
            if not cmd:
                raise TemplateError("missing command before |")
            cmds.append(cmd)
            cmd = []
            pos += 1
            continue
        if kind == "op" and s == ")":
            break
        if kind == "op" and s == "(":
            pos, inner = _parse_cmds(toks, pos + 1)
            if pos >= len(toks) or toks[pos] != ("op", ")"):
                raise TemplateError("unclosed left paren")
            cmd.append(_Pipeline(inner))
            pos += 1
            continue
        cmd.append(_operand(kind, s))
        pos += 1
    if cmd:
        cmds.append(cmd)
    return pos, cmds


def _operand(kind: str, s: str) -> Any:
    if kind == "str":
        try:
            return _Literal(go_unquote(s[1:-1], s[0]))
        except ValueError as e:
            raise TemplateError(f"bad string {s}") from e
    if kind == "char":
        return _Literal(ord(go_unquote(s[1:-1], '"')[0]))
    if kind == "num":
        try:
            if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", s):
                return _Literal(int(s, 0))
            return _Literal(float(s))
        except ValueError as e:
            raise TemplateError(f"bad number syntax: {s}") from e
    if kind == "field":
        if s == ".":
            return _Field(())
        if s.startswith("$"):
            var, _, rest = s[1:].partition(".")
            return _Field(tuple(rest.split(".")), var)
        return _Field(tuple(s[1:].split(".")))
    if kind == "var":
        return _Field((), s[1:])
    if kind == "ident":
        if s in ("true", "false"):
            return _Literal(s == "true")
        if s == "nil":
            return _Literal(None)
        return _Ident(s)
    raise TemplateError(f"unexpected {s!r} in operand")


# ---------------------------------------------------------------- execution


class _Ctx:
    def __init__(self, funcs: Mapping[str, Callable[..., Any]], data: Any) -> None:
        self.funcs = funcs
        self.vars: list[dict[str, Any]] = [{"": data}]
        self.out: list[str] = []

    def lookup_var(self, name: str) -> Any:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise TemplateError(f'undefined variable "${name}"')


def truth(v: Any) -> bool:
    """Go template truthiness: zero values and empty collections are false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return True


def _field(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if isinstance(value, Mapping):
            value = value.get(name, "" if _is_label_map(value) else None)
        elif value is None:
            raise TemplateError(f"nil pointer evaluating .{name}")
        else:
            raise TemplateError(f"can't evaluate field {name} in type {_go_type(value)}")
    return value


def _is_label_map(v: Mapping[str, Any]) -> bool:
    return isinstance(v, _LabelMap)


class _LabelMap(dict[str, str]):
    """The label map handed to templates (Go: ``map[string]string``, missing -> "")."""


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    return type(v).__name__


def _eval_arg(ctx: _Ctx, node: Any, final: Any, has_final: bool) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Field):
        base = ctx.lookup_var("" if node.var is None else node.var)
        return _field(base, node.path) if node.path and node.path != ("",) else base
    if isinstance(node, _Pipeline):
        return _eval_pipeline(ctx, node)
    if isinstance(node, _Ident):
        return _call(ctx, node.name, [], final, has_final)
    raise TemplateError("unexpected operand")


def _call(ctx: _Ctx, name: str, args: list[Any], final: Any, has_final: bool) -> Any:
    fn = ctx.funcs.get(name)
    if fn is None:
        raise TemplateError(f'function "{name}" not defined')
    if has_final:
        args = [*args, final]
    try:
        return fn(*args)
    except TemplateError:
        raise
    except TypeError as e:
        raise TemplateError(f"error calling {name}: wrong number of args or types: {e}") from e
    except (ValueError, ZeroDivisionError, OverflowError, IndexError, KeyError) as e:
        raise TemplateError(f"error calling {name}: {e}") from e


def _eval_cmd(ctx: _Ctx, cmd: list[Any], final: Any, has_final: bool) -> Any:
    head = cmd[0]
    if isinstance(head, _Ident):
        args = [_eval_arg(ctx, a, None, False) for a in cmd[1:]]
        return _call(ctx, head.name, args, final, has_final)
    if len(cmd) > 1 or has_final:
        raise TemplateError(f"can't give argument to non-function {head}")
    return _eval_arg(ctx, head, None, False)


def _eval_pipeline(ctx: _Ctx, pipe: _Pipeline) -> Any:
    value: Any = None
    has = False
    for cmd in pipe.cmds:
        value = _eval_cmd(ctx, cmd, value, has)
        has = True
    if pipe.decl is not None:
        if pipe.assign:
            for scope in reversed(ctx.vars):
                if pipe.decl in scope:
                    scope[pipe.decl] = value
                    break
            else:
                raise TemplateError(f'undefined variable "${pipe.decl}"')
        else:
            ctx.vars[-1][pipe.decl] = value
    return value


def _exec(ctx: _Ctx, nodes: list[Any]) -> None:
    from pitwall.logs.logql.template_funcs import go_sprint

    for node in nodes:
        if isinstance(node, _Text):
            ctx.out.append(node.text)
        elif isinstance(node, _Action):
            v = _eval_pipeline(ctx, node.pipe)
            if node.pipe.decl is None:
                ctx.out.append(go_sprint(v))
        elif isinstance(node, _Branch):
            _exec_branch(ctx, node)


def _exec_branch(ctx: _Ctx, node: _Branch) -> None:
    ctx.vars.append({})
    try:
        if node.kind == "range":
            decl, decl_index = node.pipe.decl, node.pipe.decl_index
            plain = _Pipeline(node.pipe.cmds)
            v = _eval_pipeline(ctx, plain)
            items: list[tuple[Any, Any]]
            if isinstance(v, Mapping):
                items = [(k, v[k]) for k in sorted(v)]
            elif isinstance(v, (list, tuple)):
                items = list(enumerate(v))
            elif isinstance(v, int) and not isinstance(v, bool):
                items = [(i, i) for i in range(v)]
            elif v is None:
                items = []
            else:
                raise TemplateError(f"range can't iterate over {v}")
            if not items:
                _exec(ctx, node.else_body)
            for idx, item in items:
                scope: dict[str, Any] = {"": item}
                if decl is not None:
                    scope[decl] = item
                if decl_index is not None:
                    scope[decl_index] = idx
                ctx.vars.append(scope)
                try:
                    _exec(ctx, node.body)
                finally:
                    ctx.vars.pop()
            return
        v = _eval_pipeline(ctx, node.pipe)
        if not truth(v):
            _exec(ctx, node.else_body)
        elif node.kind == "with":
            ctx.vars.append({"": v})
            try:
                _exec(ctx, node.body)
            finally:
                ctx.vars.pop()
        else:
            _exec(ctx, node.body)
    finally:
        ctx.vars.pop()


class Template:
    """A compiled template; ``render`` runs it over one entry."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.nodes = _TemplateParser(src).parse()
        self.fields = _collect_fields(self.nodes)
        # A template with only text renders to a constant.
        self.constant: str | None = None
        if all(isinstance(n, _Text) for n in self.nodes):
            self.constant = "".join(n.text for n in self.nodes)

    def render(self, labels: Mapping[str, str], line: str, ts_ns: int) -> str:
        """Execute over ``labels``; ``__line__``/``__timestamp__`` see ``line`` and ``ts_ns``."""
        if self.constant is not None:
            return self.constant
        from pitwall.logs.logql.template_funcs import entry_functions

        ctx = _Ctx(entry_functions(line, ts_ns), _LabelMap(labels))
        _exec(ctx, self.nodes)
        return "".join(ctx.out)


def _collect_fields(nodes: list[Any]) -> set[str]:
    out: set[str] = set()

    def visit(n: Any) -> None:
        if isinstance(n, _Field) and n.var is None and n.path:
            out.add(n.path[0])
        elif isinstance(n, _Pipeline):
            for c in n.cmds:
                for a in c:
                    visit(a)
        elif isinstance(n, _Action):
            visit(n.pipe)
        elif isinstance(n, _Branch):
            visit(n.pipe)
            for b in (*n.body, *n.else_body):
                visit(b)

    for node in nodes:
        visit(node)
    return out


_CACHE: dict[str, Template] = {}


def compile_template(src: str) -> Template:
    """Parse ``src`` (cached); ``TemplateError`` when it is not a valid template."""
    t = _CACHE.get(src)
    if t is None:
        t = Template(src)
        if len(_CACHE) < 1024:
            _CACHE[src] = t
    return t
