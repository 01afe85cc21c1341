"""consul-template's templating language: a subset of Go's text/template plus consul-template's functions.

Syntax (Go's rules): ``{{ pipeline }}``, ``{{- `` / `` -}}`` whitespace trimming, ``{{/* comments */}}``,
pipelines with ``|`` (the previous result becomes the last argument), parenthesised sub-pipelines,
``if``/``else if``/``else``/``end``, ``range`` (with ``$i, $v :=`` and ``else``), ``with``, ``break``,
``continue``, variables (``$x := ...``, ``$x = ...``, ``$``), ``.Field`` chains on dot, variables and
parentheses. Go builtins ``and or not eq ne lt le gt ge len index print printf``. ``define``,
``template`` and ``block`` are not supported: every unsupported word or function is an error naming its
line and column.

consul-template's functions: ``key``, ``keyOrDefault``, ``keyExists``, ``ls``, ``tree``, ``service``
(``tag.name``, ``@dc`` and ``|filter`` forms), ``services``, ``env``; helpers ``toJSON``, ``toUpper``,
``toLower``, ``join``, ``split``, ``explode``, ``trimSpace``, ``replaceAll``, ``parseInt``, ``contains``. The data
behind them comes from a ``Data`` (``templates.py`` reads the Consul KV and catalog through it and records
what each render read). A template is bounded: its size, nesting, output bytes and loop iterations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

__all__ = ["MAX_ITERATIONS", "MAX_OUTPUT_BYTES", "MAX_TEMPLATE_BYTES", "Data", "MissingKey", "Record",
           "Template", "TemplateError", "parse", "parse_service_query"]

MAX_TEMPLATE_BYTES = 256 * 1024
MAX_OUTPUT_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB
MAX_ITERATIONS = 100_000  # range iterations per render, over all loops
MAX_DEPTH = 64  # nesting of blocks and parentheses


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; ``line``/``col`` (1-based) locate it."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        self.line, self.col, self.reason = line, col, message
        super().__init__(f"{line}:{col}: {message}" if line else message)


class MissingKey(TemplateError):
    """``key`` read a key that does not exist: consul-template waits for it, so the render is held."""


class Record(dict[str, Any]):
    """A struct-like value (a service instance, a KV pair): a missing field is an error, as in Go."""


class Data(Protocol):
    """What the template functions read (each call is also a dependency of the render)."""

    async def key(self, path: str) -> str | None: ...

    async def pairs(self, prefix: str) -> list[tuple[str, str, int]]: ...  # (full key, value, flags)

    async def service(self, name: str, tag: str, statuses: frozenset[str]) -> list[Record]: ...

    async def services(self) -> list[Record]: ...

    def env(self, name: str) -> str: ...


# ---- lexing ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:\\.|[^"\\\n])*")
  | (?P<raw>`[^`]*`)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?))
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|=|\||\(|\)|,)
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "'": "'"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int
    glued: bool = False  # no space before it (a field chain on a parenthesis)


@dataclass
class _Item:
    kind: str  # "text" | "action"
    pos: int
    text: str = ""
    toks: list[_Tok] = field(default_factory=list)


class _Source:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = [m.start() for m in re.finditer(r"^", text, re.M)]

    def where(self, pos: int) -> tuple[int, int]:
        lo, hi = 0, len(self.lines) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.lines[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, pos - self.lines[lo] + 1

    def error(self, message: str, pos: int) -> TemplateError:
        return TemplateError(message, *self.where(pos))


def _lex(src: _Source) -> list[_Item]:
    text, items, pos = src.text, [], 0
    trim_next = False
    while pos < len(text):
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip()
        if start < 0:
            items.append(_Item("text", pos, chunk))
            break
        trim_left = text.startswith("{{- ", start) or text.startswith("{{-\t", start) or \
            text.startswith("{{-\n", start) or text.startswith("{{-\r", start)
        if trim_left:
            chunk = chunk.rstrip()
        items.append(_Item("text", pos, chunk))
        body = start + (3 if trim_left else 2)
        comment = text[body:].lstrip(" \t\r\n")
        if comment.startswith("/*"):
            cstart = len(text) - len(comment)
            cend = text.find("*/", cstart)
            if cend < 0:
                raise src.error("unclosed comment", start)
            pos, trim_next = _close(src, cend + 2, start)
            continue
        toks, pos, trim_next = _lex_action(src, body, start)
        items.append(_Item("action", start, toks=toks))
    return [i for i in items if i.kind == "action" or i.text]


def _close(src: _Source, at: int, start: int) -> tuple[int, bool]:
    """The position after ``}}`` (allowing `` -}}``) that must follow ``at``, and whether it trims."""
    rest = src.text[at:]
    stripped = rest.lstrip(" \t\r\n")
    if stripped.startswith("-}}") and len(stripped) < len(rest):
        return at + len(rest) - len(stripped) + 3, True
    if stripped.startswith("}}"):
        return at + len(rest) - len(stripped) + 2, False
    raise src.error("comment ends before closing delimiter", start)


def _lex_action(src: _Source, pos: int, start: int) -> tuple[list[_Tok], int, bool]:
    text, toks = src.text, list[_Tok]()
    spaced = True
    while True:
        if pos >= len(text):
            raise src.error("unclosed action", start)
        if text.startswith("}}", pos):
            return toks, pos + 2, False
        if text.startswith("-}}", pos) and spaced and pos > start:
            return toks, pos + 3, True
        m = _TOKEN.match(text, pos)
        if m is None:
            raise src.error(f"unexpected {text[pos]!r} in action", pos)
        kind = m.lastgroup or ""
        if kind == "ws":
            spaced = True
        else:
            toks.append(_Tok(kind, m.group(), pos, glued=not spaced))
            spaced = False
        pos = m.end()


# ---- the tree -------------------------------------------------------------------------------------------

@dataclass
class _Node:
    pos: int


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Arg(_Node):
    kind: str  # str num bool nil dot field var ident pipe
    value: Any = None
    fields: tuple[str, ...] = ()


@dataclass
class _Cmd(_Node):
    args: list[_Arg]


@dataclass
class _Pipe(_Node):
    decl: list[str]
    assign: bool  # "=" rather than ":="
    cmds: list[_Cmd]


@dataclass
class _Action(_Node):
    pipe: _Pipe


@dataclass
class _Block(_Node):
    word: str  # if | range | with
    pipe: _Pipe
    body: list[_Node]
    other: list[_Node] | None


@dataclass
class _Jump(_Node):
    word: str  # break | continue


class _Parser:
    def __init__(self, src: _Source, items: list[_Item]) -> None:
        self.src, self.items, self.i = src, items, 0
        self.loops = 0

    def parse(self) -> list[_Node]:
        nodes, end = self._list(0)
        if end is not None:
            raise self.src.error(f"unexpected {{{{{end[0]}}}}}", end[1].pos)
        return nodes

    def _list(self, depth: int) -> tuple[list[_Node], tuple[str, _Item] | None]:
        """Nodes up to an ``end`` or ``else`` (returned with its item), or to the end of the template."""
        if depth > MAX_DEPTH:
            raise self.src.error(f"blocks nested deeper than {MAX_DEPTH}", self.items[self.i - 1].pos)
        out: list[_Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if item.kind == "text":
                out.append(_Text(item.pos, item.text))
                continue
            toks = item.toks
            if not toks:
                raise self.src.error("missing value for command", item.pos)
            word = toks[0].text if toks[0].kind == "ident" else ""
            if word in ("end", "else"):
                return out, (word, item)
            if word in ("if", "range", "with"):
                out.append(self._block(word, toks[1:], item, depth))
            elif word in ("break", "continue"):
                if not self.loops:
                    raise self.src.error(f"{{{{{word}}}}} outside {{{{range}}}}", toks[0].pos)
                if len(toks) > 1:
                    raise self.src.error(f"unexpected {toks[1].text!r} in {word}", toks[1].pos)
                out.append(_Jump(item.pos, word))
            elif word in ("define", "template", "block"):
                raise self.src.error(f"{{{{{word}}}}} is not supported", toks[0].pos)
            else:
                out.append(_Action(item.pos, self._pipeline(toks, item.pos, decl_ok=True)))
        return out, None

    def _block(self, word: str, toks: list[_Tok], item: _Item, depth: int) -> _Block:
        if not toks:
            raise self.src.error(f"missing value for {word}", item.pos)
        pipe = self._pipeline(toks, item.pos, decl_ok=True, range_decl=word == "range")
        self.loops += word == "range"
        body, end = self._list(depth + 1)
        self.loops -= word == "range"
        if end is None:
            raise self.src.error(f"unexpected EOF: {{{{{word}}}}} has no {{{{end}}}}", item.pos)
        other: list[_Node] | None = None
        if end[0] == "else":
            etoks = end[1].toks[1:]
            if etoks and etoks[0].kind == "ident" and etoks[0].text in ("if", "with") and word != "range":
                # {{else if x}} / {{else with x}}: a nested block sharing this one's {{end}}
                other = [self._block(etoks[0].text, etoks[1:], end[1], depth + 1)]
                return _Block(item.pos, word, pipe, body, other)
            if etoks:
                raise self.src.error(f"unexpected {etoks[0].text!r} after else", etoks[0].pos)
            other, end = self._list(depth + 1)
            if end is None or end[0] != "end":
                raise self.src.error(f"expected {{{{end}}}} for {{{{{word}}}}}", item.pos)
        if len(end[1].toks) > 1:
            raise self.src.error(f"unexpected {end[1].toks[1].text!r} in end", end[1].toks[1].pos)
        return _Block(item.pos, word, pipe, body, other)

    def _pipeline(self, toks: list[_Tok], pos: int, *, decl_ok: bool = False, range_decl: bool = False) -> _Pipe:
        decl: list[str] = []
        assign = False
        if decl_ok and toks and toks[0].kind == "var":
            names = [toks[0]]
            j = 1
            if range_decl and len(toks) > 2 and toks[1].text == "," and toks[2].kind == "var":
                names.append(toks[2])
                j = 3
            if j < len(toks) and toks[j].text in (":=", "="):
                decl = [t.text for t in names]
                assign = toks[j].text == "="
                toks = toks[j + 1:]
                if not toks:
                    raise self.src.error("missing value for declaration", pos)
        cmds, rest = self._commands(toks, pos, 0)
        if rest:
            raise self.src.error(f"unexpected {rest[0].text!r}", rest[0].pos)
        return _Pipe(pos, decl, assign, cmds)

    def _commands(self, toks: list[_Tok], pos: int, depth: int) -> tuple[list[_Cmd], list[_Tok]]:
        """Commands separated by ``|`` up to a ``)`` (left in the returned rest) or the end."""
        if depth > MAX_DEPTH:
            raise self.src.error(f"parentheses nested deeper than {MAX_DEPTH}", pos)
        cmds: list[_Cmd] = []
        args: list[_Arg] = []
        while toks and toks[0].text != ")":
            t = toks[0]
            if t.text == "|":
                if not args:
                    raise self.src.error("missing command before '|'", t.pos)
                cmds.append(_Cmd(args[0].pos, args))
                args = []
                toks = toks[1:]
                continue
            arg, toks = self._operand(toks, depth)
            args.append(arg)
        if not args:
            raise self.src.error("missing value for command", toks[0].pos if toks else pos)
        cmds.append(_Cmd(args[0].pos, args))
        return cmds, toks

    def _operand(self, toks: list[_Tok], depth: int) -> tuple[_Arg, list[_Tok]]:
        t, rest = toks[0], toks[1:]
        if t.kind == "str":
            return _Arg(t.pos, "str", self._unquote(t)), rest
        if t.kind == "raw":
            return _Arg(t.pos, "str", t.text[1:-1]), rest
        if t.kind == "num":
            return _Arg(t.pos, "num", self._number(t)), rest
        if t.kind == "dot":
            return _Arg(t.pos, "dot"), rest
        if t.kind == "field":
            return _Arg(t.pos, "field", fields=tuple(t.text[1:].split("."))), rest
        if t.kind == "var":
            fields: tuple[str, ...] = ()
            if rest and rest[0].kind == "field" and rest[0].glued:
                fields, rest = tuple(rest[0].text[1:].split(".")), rest[1:]
            return _Arg(t.pos, "var", t.text, fields), rest
        if t.kind == "ident":
            if t.text in ("true", "false"):
                return _Arg(t.pos, "bool", t.text == "true"), rest
            if t.text == "nil":
                return _Arg(t.pos, "nil"), rest
            if t.text not in _FUNCS and t.text not in _LAZY:
                raise self.src.error(f'function "{t.text}" not defined', t.pos)
            return _Arg(t.pos, "ident", t.text), rest
        if t.text == "(":
            cmds, rest = self._commands(rest, t.pos, depth + 1)
            if not rest or rest[0].text != ")":
                raise self.src.error("unclosed left paren", t.pos)
            rest = rest[1:]
            fields = ()
            if rest and rest[0].kind == "field" and rest[0].glued:
                fields, rest = tuple(rest[0].text[1:].split(".")), rest[1:]
            return _Arg(t.pos, "pipe", _Pipe(t.pos, [], False, cmds), fields), rest
        raise self.src.error(f"unexpected {t.text!r} in operand", t.pos)

    def _unquote(self, t: _Tok) -> str:
        body, out, i = t.text[1:-1], [], 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                digits = body[i + 2:i + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.src.error("invalid escape in string", t.pos)
                out.append(chr(int(digits, 16)))
                i += 2 + width
            else:
                raise self.src.error(f"unknown escape \\{nxt} in string", t.pos)
        return "".join(out)

    def _number(self, t: _Tok) -> int | float:
        s = t.text
        try:
            return int(s, 16) if s.lstrip("+-")[:2] in ("0x", "0X") else int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                raise self.src.error(f"bad number syntax: {s!r}", t.pos) from None


# ---- evaluation -----------------------------------------------------------------------------------------

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_NO_VALUE = object()  # "no piped value" (distinct from nil)


def go_string(v: Any) -> str:
    """A value printed as Go's ``fmt.Sprint`` prints it in a template."""
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):  # Go's %v: the shortest form, no trailing ".0"
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_inner(x) for x in v) + "]"
    if isinstance(v, Record):
        return "{" + " ".join(_inner(x) for x in v.values()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{_inner(k)}:{_inner(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def _inner(v: Any) -> str:
    return "<nil>" if v is None else go_string(v)


def truth(v: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


class _Eval:
    def __init__(self, src: _Source, data: Data, max_output: int, max_iterations: int) -> None:
        self.src, self.data = src, data
        self.out: list[str] = []
        self.size = 0
        self.max_output, self.iterations = max_output, max_iterations
        self.vars: list[tuple[str, Any]] = [("$", None)]

    def err(self, message: str, pos: int) -> TemplateError:
        return self.src.error(message, pos)

    def emit(self, s: str, pos: int) -> None:
        self.size += len(s.encode())
        if self.size > self.max_output:
            raise self.err(f"output larger than {self.max_output} bytes", pos)
        self.out.append(s)

    async def run(self, nodes: Sequence[_Node], dot: Any) -> None:
        for n in nodes:
            if isinstance(n, _Text):
                self.emit(n.text, n.pos)
            elif isinstance(n, _Action):
                v = await self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.emit(go_string(v), n.pos)
            elif isinstance(n, _Block):
                await self.block(n, dot)
            elif isinstance(n, _Jump):
                raise _Break() if n.word == "break" else _Continue()

    async def block(self, n: _Block, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if n.word == "range":
                await self.range(n, dot)
                return
            v = await self.pipe(n.pipe, dot)
            if truth(v):
                await self.run(n.body, v if n.word == "with" else dot)
            elif n.other is not None:
                await self.run(n.other, dot)
        finally:
            del self.vars[mark:]

    async def range(self, n: _Block, dot: Any) -> None:
        decl = n.pipe.decl
        v = await self.pipe(n.pipe, dot, declare=False)
        if v is None:
            items: list[tuple[Any, Any]] = []
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        elif isinstance(v, dict):
            items = sorted(v.items())
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(i, i) for i in range(max(v, 0))]
        else:
            raise self.err(f"range can't iterate over {go_string(v)}", n.pos)
        if not items:
            if n.other is not None:
                await self.run(n.other, dot)
            return
        mark = len(self.vars)
        for k, item in items:
            self.iterations -= 1
            if self.iterations < 0:
                raise self.err(f"more than {MAX_ITERATIONS} range iterations", n.pos)
            del self.vars[mark:]
            if len(decl) == 1:
                self.vars.append((decl[0], item))
            elif len(decl) == 2:
                self.vars += [(decl[0], k), (decl[1], item)]
            try:
                await self.run(n.body, item)
            except _Break:
                break
            except _Continue:
                continue

    async def pipe(self, p: _Pipe, dot: Any, *, declare: bool = True) -> Any:
        """The pipeline's value; with ``declare`` its ``$x :=`` / ``$x =`` takes effect (range binds its own)."""
        v: Any = _NO_VALUE
        for c in p.cmds:
            v = await self.command(c, dot, v)
        if p.decl and declare:
            if p.assign:
                self.set_var(p.decl[0], v, p.pos)
            else:
                self.vars.append((p.decl[0], v))
        return v

    def set_var(self, name: str, v: Any, pos: int) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, v)
                return
        raise self.err(f"undefined variable: {name}", pos)

    async def command(self, c: _Cmd, dot: Any, piped: Any) -> Any:
        head = c.args[0]
        if head.kind == "ident":
            name = head.value
            if name in _LAZY:
                return await self.lazy(name, c, dot, piped)
            args = [await self.arg(a, dot) for a in c.args[1:]]
            if piped is not _NO_VALUE:
                args.append(piped)
            return await self.call(name, args, head.pos)
        if len(c.args) > 1 or piped is not _NO_VALUE:
            raise self.err(f"can't give argument to non-function {self.describe(head)}", head.pos)
        return await self.arg(head, dot)

    async def lazy(self, name: str, c: _Cmd, dot: Any, piped: Any) -> Any:
        """``and``/``or``: stop at the first false/true argument, as Go 1.18+ does."""
        args: list[Any] = [piped] if piped is not _NO_VALUE else []
        ops = c.args[1:]
        if not ops and not args:
            raise self.err(f"wrong number of args for {name}: want at least 1 got 0", c.pos)
        v: Any = None
        for a in ops:
            v = await self.arg(a, dot)
            if truth(v) != (name == "and"):
                return v
        for v in args:
            if truth(v) != (name == "and"):
                return v
        return v

    def describe(self, a: _Arg) -> str:
        if a.kind == "field":
            return "." + ".".join(a.fields)
        return str(a.value) if a.value is not None else a.kind

    async def arg(self, a: _Arg, dot: Any) -> Any:
        if a.kind in ("str", "num", "bool"):
            return a.value
        if a.kind == "nil":
            return None
        if a.kind == "dot":
            return dot
        if a.kind == "field":
            return self.fields(dot, a.fields, a.pos)
        if a.kind == "var":
            for name, v in reversed(self.vars):
                if name == a.value:
                    return self.fields(v, a.fields, a.pos)
            raise self.err(f"undefined variable: {a.value}", a.pos)
        if a.kind == "pipe":
            return self.fields(await self.pipe(a.value, dot), a.fields, a.pos)
        if a.kind == "ident":  # a function as an argument: called without arguments
            return await self.call(a.value, [], a.pos)
        raise self.err(f"unexpected {a.kind}", a.pos)

    def fields(self, v: Any, names: tuple[str, ...], pos: int) -> Any:
        for name in names:
            if isinstance(v, Record):
                if name not in v:
                    raise self.err(f"can't evaluate field {name} in type {type(v).__name__}", pos)
                v = v[name]
            elif isinstance(v, dict):
                v = v.get(name)
            elif v is None:
                raise self.err(f"nil pointer evaluating .{name}", pos)
            else:
                raise self.err(f"can't evaluate field {name} in type {_go_type(v)}", pos)
        return v

    async def call(self, name: str, args: list[Any], pos: int) -> Any:
        fn = _FUNCS[name]
        lo, hi = fn.arity
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.err(f"wrong number of args for {name}: want {want} got {len(args)}", pos)
        try:
            result = fn.impl(self.data, *args)
            return await result if fn.data else result
        except TemplateError as e:
            if e.line:
                raise
            raise type(e)(f"error calling {name}: {e.reason}", *self.src.where(pos)) from None
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise self.err(f"error calling {name}: {e}", pos) from None


def _go_type(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}"}.get(type(v),
                                                                                                type(v).__name__)


# ---- functions ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Fn:
    impl: Callable[..., Any]
    arity: tuple[int, int]
    data: bool = False  # reads the Data (awaitable)


def _str(v: Any, what: str = "argument") -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a string, got {_go_type(v)}")
    return v


async def _key(d: Data, path: Any) -> str:
    v = await d.key(_str(path, "key"))
    if v is None:
        raise MissingKey(f'key "{path}" does not exist (the render waits for it)')
    return v


async def _key_or_default(d: Data, path: Any, default: Any) -> str:
    v = await d.key(_str(path, "key"))
    return _str(default, "default") if v is None else v


async def _key_exists(d: Data, path: Any) -> bool:
    return await d.key(_str(path, "key")) is not None


async def _list(d: Data, prefix: Any, recurse: bool) -> list[Record]:
    """consul-template's ``ls``/``tree``: pairs under ``prefix/``, keys relative to it; folders (keys ending
    in ``/``) skipped; ``ls`` keeps the top level only."""
    p = _str(prefix, "prefix").strip("/")
    base = p + "/" if p else ""
    out = []
    for full, value, flags in await d.pairs(base):
        rel = full[len(base):]
        if not rel or rel.endswith("/") or (not recurse and "/" in rel):
            continue
        out.append(Record(Key=rel, Value=value, Path=full, Flags=flags))
    return out


async def _ls(d: Data, prefix: Any) -> list[Record]:
    return await _list(d, prefix, False)


async def _tree(d: Data, prefix: Any) -> list[Record]:
    return await _list(d, prefix, True)


_SERVICE = re.compile(r"^(?:(?P<tag>[\w=:.\-]+)\.)?(?P<name>[\w\-]+)(?:@(?P<dc>[\w.\-]+))?$")
_STATUSES = frozenset({"passing", "warning", "critical", "maintenance"})


def parse_service_query(text: str) -> tuple[str, str, str, frozenset[str]]:
    """``[tag.]name[@dc][|filter,...]`` -> (name, tag, dc, statuses); the default filter is ``passing``
    (healthy instances only) and ``any`` means every status, as consul-template documents."""
    query, _, flt = text.partition("|")
    m = _SERVICE.match(query.strip())
    if m is None:
        raise ValueError(f"invalid service query {text!r} (want [tag.]name[@datacenter][|filter])")
    statuses: set[str] = set()
    for f in (flt.split(",") if flt else ["passing"]):
        f = f.strip()
        if f == "any":
            statuses |= _STATUSES
        elif f in _STATUSES:
            statuses.add(f)
        else:
            raise ValueError(f"unknown health filter {f!r} (any, passing, warning, critical, maintenance)")
    return m["name"], m["tag"] or "", m["dc"] or "", frozenset(statuses)


async def _service(d: Data, query: Any) -> list[Record]:
    name, tag, _dc, statuses = parse_service_query(_str(query, "service"))
    return await d.service(name, tag, statuses)


async def _services(d: Data) -> list[Record]:
    return await d.services()


def _to_plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    return v


def _to_json(_d: Data, v: Any) -> str:
    return orjson.dumps(_to_plain(v), option=orjson.OPT_SORT_KEYS).decode()


def _explode(_d: Data, pairs: Any) -> dict[str, Any]:
    """``tree``/``ls`` pairs as a nested map split on ``/`` (consul-template's ``explode``)."""
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"explode wants the pairs of ls or tree, got {_go_type(pairs)}")
    out: dict[str, Any] = {}
    for p in pairs:
        if not isinstance(p, Record) or "Key" not in p:
            raise TypeError("explode wants the pairs of ls or tree")
        *dirs, leaf = str(p["Key"]).split("/")
        node = out
        for d in dirs:
            nxt = node.setdefault(d, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"key {p['Key']!r} is both a value and a folder")
            node = nxt
        node[leaf] = p["Value"]
    return out


def _join(_d: Data, sep: Any, items: Any) -> str:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"join wants a list, got {_go_type(items)}")
    return _str(sep, "separator").join(go_string(x) for x in items)


def _split(_d: Data, sep: Any, s: Any) -> list[str]:
    s, sep = _str(s), _str(sep, "separator")
    if s == "":
        return []
    return s.split(sep) if sep else list(s)


_DECIMAL = re.compile(r"[-+]?[0-9]+")


def _parse_int(_d: Data, s: Any) -> int:
    """Base-10 int64, as consul-template's ``strconv.ParseInt(s, 10, 64)`` (no spaces, no underscores)."""
    try:
        if not _DECIMAL.fullmatch(_str(s)) or not -(2 ** 63) <= int(s) < 2 ** 63:
            raise ValueError(s)
        return int(s)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{s}": invalid syntax') from None


def _contains(_d: Data, needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        return _str(needle) in haystack
    if isinstance(haystack, (list, tuple)):
        return needle in haystack
    if isinstance(haystack, dict):
        return needle in haystack
    raise TypeError(f"contains wants a list or string, got {_go_type(haystack)}")


def _cmp(op: str) -> Callable[..., bool]:
    def run(_d: Data, a: Any, *rest: Any) -> bool:
        for b in rest:
            if isinstance(a, bool) != isinstance(b, bool) or (
                    type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float)))):
                if op in ("eq", "ne") and (a is None or b is None):
                    pass
                else:
                    raise TypeError(f"incompatible types for comparison: {_go_type(a)} and {_go_type(b)}")
            if op == "eq" and a == b:
                return True
        if op == "eq":
            return False
        b = rest[0]
        if op == "ne":
            return bool(a != b)
        if a is None or b is None or isinstance(a, (bool, list, dict)):
            raise TypeError(f"invalid type for comparison: {_go_type(a)}")
        return bool({"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op])
    return run


def _index(_d: Data, v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, (list, tuple, str)) and isinstance(k, int) and not isinstance(k, bool):
            if not 0 <= k < len(v):
                raise IndexError(f"index out of range: {k}")
            v = v[k]
        else:
            raise TypeError(f"can't index item of type {_go_type(v)}")
    return v


def _len(_d: Data, v: Any) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v.encode()) if isinstance(v, str) else len(v)
    raise TypeError(f"len of type {_go_type(v)}")


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([svdqfxXt%])")


def _printf(_d: Data, fmt: Any, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: %s %v %d %q %f %x %X %t %%."""
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            v = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in "sv":
            s = go_string(v) if v is not None else "<nil>"
            if prec:
                s = s[:int(prec)]
        elif verb == "q":
            s = orjson.dumps(go_string(v)).decode()
        elif verb == "t":
            s = go_string(v)
        else:
            spec = f"{{:{flags.replace('-', '<')}{width}{'.' + prec if prec else ''}{verb}}}"
            if verb == "f" and not prec:
                spec = f"{{:{flags}{width}.6f}}"
            if verb == "d" and not isinstance(v, int):
                return f"%!d({_go_type(v)}={go_string(v)})"
            return spec.format(v)
        return s.ljust(int(width)) if width and "-" in flags else s.rjust(int(width or 0))
    return _VERB.sub(one, _str(fmt, "format"))


_FUNCS: dict[str, _Fn] = {
    "key": _Fn(_key, (1, 1), True),
    "keyOrDefault": _Fn(_key_or_default, (2, 2), True),
    "keyExists": _Fn(_key_exists, (1, 1), True),
    "ls": _Fn(_ls, (1, 1), True),
    "tree": _Fn(_tree, (1, 1), True),
    "service": _Fn(_service, (1, 1), True),
    "services": _Fn(_services, (0, 0), True),
    "env": _Fn(lambda d, name: d.env(_str(name, "name")), (1, 1)),
    "toJSON": _Fn(_to_json, (1, 1)),
    "explode": _Fn(_explode, (1, 1)),
    "toUpper": _Fn(lambda _d, s: _str(s).upper(), (1, 1)),
    "toLower": _Fn(lambda _d, s: _str(s).lower(), (1, 1)),
    "join": _Fn(_join, (2, 2)),
    "split": _Fn(_split, (2, 2)),
    "trimSpace": _Fn(lambda _d, s: _str(s).strip(" \t\n\r\v\f"), (1, 1)),
    "replaceAll": _Fn(lambda _d, old, new, s: _str(s).replace(_str(old), _str(new)), (3, 3)),
    "parseInt": _Fn(_parse_int, (1, 1)),
    "contains": _Fn(_contains, (2, 2)),
    "not": _Fn(lambda _d, v: not truth(v), (1, 1)),
    "eq": _Fn(_cmp("eq"), (2, 64)),
    "ne": _Fn(_cmp("ne"), (2, 2)),
    "lt": _Fn(_cmp("lt"), (2, 2)),
    "le": _Fn(_cmp("le"), (2, 2)),
    "gt": _Fn(_cmp("gt"), (2, 2)),
    "ge": _Fn(_cmp("ge"), (2, 2)),
    "len": _Fn(_len, (1, 1)),
    "index": _Fn(_index, (1, 64)),
    "print": _Fn(lambda _d, *a: "".join(go_string(x) for x in a), (0, 64)),
    "printf": _Fn(_printf, (1, 64)),
}
_LAZY = frozenset({"and", "or"})


class Template:
    """A parsed template; ``render`` may run many times (each time against fresh ``Data``)."""

    def __init__(self, text: str, nodes: list[_Node]) -> None:
        self._src = _Source(text)
        self._nodes = nodes

    async def render(self, data: Data, *, max_output: int = MAX_OUTPUT_BYTES,
                     max_iterations: int = MAX_ITERATIONS) -> str:
        """The output; ``TemplateError`` (``MissingKey`` while a ``key`` is absent) when it cannot render."""
        ev = _Eval(self._src, data, max_output, max_iterations)
        await ev.run(self._nodes, None)
        return "".join(ev.out)


def parse(text: str) -> Template:
    """Parses ``text``; ``TemplateError`` names the line and column of the first problem."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template larger than {MAX_TEMPLATE_BYTES} bytes")
    src = _Source(text)
    return Template(text, _Parser(src, _lex(src)).parse())

