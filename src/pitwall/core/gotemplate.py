"""Go's ``text/template`` in Python, for Prometheus and Alertmanager templates.

Rule annotations, Alertmanager notification templates and console-style
pages are all written in Go's template language, so pitwall executes that
language rather than a look-alike: ``{{ }}`` actions with ``-`` trimming,
pipelines, variables, ``if``/``range``/``with`` (with ``else``, ``else if``,
``else with``, ``break``, ``continue``), ``define``/``template``/``block``,
comments, Go's builtin functions and Go's ``fmt`` printing (see ``gofmt``).
Errors read like Go's: ``template: NAME:LINE: ...`` for parse errors and
``template: NAME:LINE:COL: executing "NAME" at <NODE>: ...`` at run time.

Data is plain Python: dicts are Go maps (``.key``, keys sorted by ``range``),
lists/tuples are slices, other objects are structs whose public attributes
are fields and whose public methods are methods. ``ZeroMap`` is a map whose
missing keys give a typed zero value (Go's ``map[string]string`` under
``missingkey=zero``, which Prometheus uses for ``$labels``).
"""

from __future__ import annotations

import contextlib
import inspect
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from pitwall.core.errors import BadData
from pitwall.core.gofmt import go_sprint, go_sprintf, go_sprintln, go_type_name

__all__ = ["Budget", "Template", "TemplateError", "ZeroMap"]


class TemplateError(BadData):
    """A template failed to parse or execute; the message is Go's."""


class Budget:
    """Bounds for running an untrusted template (``Template.execute(..., budget=)``): ``range`` iterations
    over the whole run and the output's size (checked every ``CHECK_EVERY`` iterations and at the end, so it
    may overshoot by that many iterations' output)."""

    CHECK_EVERY = 256

    def __init__(self, max_iterations: int, max_output: int) -> None:
        self.max_iterations, self.max_output = max_iterations, max_output
        self.iterations = 0

    def tick(self, state: _State) -> None:
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise state.fail(f"more than {self.max_iterations} range iterations")
        if self.iterations % self.CHECK_EVERY == 0:
            self.check_output(state)

    def check_output(self, state: _State) -> None:
        if sum(map(len, state.out)) > self.max_output:
            raise state.fail(f"output larger than {self.max_output} bytes")


class ZeroMap(dict[str, Any]):
    """A map whose missing keys read as ``zero`` (e.g. ``""`` for map[string]string)."""

    def __init__(self, data: Mapping[str, Any] | None = None, zero: Any = "") -> None:
        super().__init__(data or {})
        self.zero = zero


class _Missing:
    """No final value in a pipeline (distinct from Go's nil)."""


_MISSING = _Missing()
_FunctionType = types.FunctionType
_CO_VARARGS = inspect.CO_VARARGS
_MAX_DEPTH = 100  # template calls; Python's stack is far shallower than Go's
# if/range/with/block nested in each other: deeper is refused at once (reaching Python's recursion limit
# first cost seconds of CPU per template)
_MAX_NESTING = 100
_KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
_SPACE = " \t\r\n"


# ---------------------------------------------------------------- lexer


class _Tok:
    __slots__ = ("line", "pos", "typ", "val")

    def __init__(self, typ: str, val: str, pos: int, line: int) -> None:
        self.typ, self.val, self.pos, self.line = typ, val, pos, line

    def __str__(self) -> str:
        if self.typ == "EOF":
            return "EOF"
        if self.typ in _KEYWORDS:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_sprintf("%.10q...", self.val)
        return go_sprintf("%q", self.val)


class _Lexer:
    """Splits template text into tokens, applying trim markers and dropping comments."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text
        self.pos = 0
        self.toks: list[_Tok] = []
        self.paren = 0
        self._line_at = (0, 1)  # (position, its line): tokens come in order, so lines are counted once

    def fail(self, msg: str, pos: int) -> TemplateError:
        line = self.text.count("\n", 0, pos) + 1
        return TemplateError(f"template: {self.name}:{line}: {msg}")

    def _line(self, pos: int) -> int:
        at, line = self._line_at
        if pos < at:
            return self.text.count("\n", 0, pos) + 1
        line += self.text.count("\n", at, pos)
        self._line_at = (pos, line)
        return line

    def emit(self, typ: str, start: int, end: int) -> None:
        self.toks.append(_Tok(typ, self.text[start:end], start, self._line(start)))

    def run(self) -> list[_Tok]:
        text, n = self.text, len(self.text)
        while self.pos < n:
            i = text.find("{{", self.pos)
            if i < 0:
                self.emit("TEXT", self.pos, n)
                self.pos = n
                break
            trim_left = text.startswith("-", i + 2) and i + 3 < n and text[i + 3] in _SPACE
            end = i
            if trim_left:
                while end > self.pos and text[end - 1] in _SPACE:
                    end -= 1
            if end > self.pos:
                self.emit("TEXT", self.pos, end)
            start = i + (4 if trim_left else 2)
            if text.startswith("/*", start):
                self._comment(i, start)
                continue
            self.emit("LDELIM", i, i + 2)
            self.pos = start
            self._inside_action()
        self.toks.append(_Tok("EOF", "", n, self.text.count("\n") + 1))
        return self.toks

    def _trim_after(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in _SPACE:
            pos += 1
        return pos

    def _right_delim(self, pos: int) -> tuple[int, bool] | None:
        """(end, trims) when a right delimiter starts at ``pos``."""
        t = self.text
        if t.startswith("}}", pos):
            return pos + 2, False
        if pos < len(t) and t[pos] in _SPACE and t.startswith("-}}", pos + 1):
            return pos + 4, True
        return None

    def _comment(self, left: int, start: int) -> None:
        close = self.text.find("*/", start + 2)
        if close < 0:
            raise self.fail("unclosed comment", left)
        rd = self._right_delim(close + 2)
        if rd is None:
            raise self.fail("comment ends before closing delimiter", left)
        end, trims = rd
        self.pos = self._trim_after(end) if trims else end

    def _inside_action(self) -> None:
        text, n = self.text, len(self.text)
        while True:
            rd = self._right_delim(self.pos)
            if rd is not None:
                if self.paren:
                    raise self.fail("unclosed left paren", self.pos)
                end, trims = rd
                self.emit("RDELIM", self.pos, end)
                self.pos = self._trim_after(end) if trims else end
                return
            if self.pos >= n:
                raise self.fail("unclosed action", self.pos)
            c = text[self.pos]
            start = self.pos
            if c in _SPACE:
                while self.pos < n and text[self.pos] in _SPACE and self._right_delim(self.pos) is None:
                    self.pos += 1
                if self.pos > start:
                    self.emit("SPACE", start, self.pos)
                continue
            self._token(c, start)

    def _token(self, c: str, start: int) -> None:
        text = self.text
        nxt = text[start + 1] if start + 1 < len(text) else ""
        if c == "=":
            self.pos += 1
            self.emit("ASSIGN", start, self.pos)
        elif c == ":":
            if nxt != "=":
                raise self.fail("expected :=", start)
            self.pos += 2
            self.emit("DECLARE", start, self.pos)
        elif c == "|":
            self.pos += 1
            self.emit("PIPE", start, self.pos)
        elif c == ",":
            self.pos += 1
            self.emit("COMMA", start, self.pos)
        elif c == '"':
            self._quoted(start, '"', "unterminated quoted string")
            self.emit("STRING", start, self.pos)
        elif c == "`":
            close = text.find("`", start + 1)
            if close < 0:
                raise self.fail("unterminated raw quoted string", start)
            self.pos = close + 1
            self.emit("RAWSTRING", start, self.pos)
        elif c == "'":
            self._quoted(start, "'", "unterminated character constant")
            self.emit("CHAR", start, self.pos)
        elif c == "$":
            self.pos += 1
            self._alnum()
            self._terminator(start)
            self.emit("VAR", start, self.pos)
        elif c == "." and nxt.isdigit():
            self._number(start)
        elif c == ".":
            self.pos += 1
            if _is_alnum(nxt):
                self._alnum()
                self._terminator(start)
                self.emit("FIELD", start, self.pos)
            else:
                self.emit("DOT", start, self.pos)
        elif c.isdigit() or (c in "+-" and (nxt.isdigit() or nxt == ".")):
            self._number(start)
        elif _is_alnum(c):
            self._alnum()
            self._terminator(start)
            word = text[start:self.pos]
            typ = word if word in _KEYWORDS else "BOOL" if word in ("true", "false") else \
                "NIL" if word == "nil" else "IDENT"
            self.emit(typ, start, self.pos)
        elif c == "(":
            self.paren += 1
            self.pos += 1
            self.emit("LPAREN", start, self.pos)
        elif c == ")":
            self.paren -= 1
            if self.paren < 0:
                raise self.fail("unexpected right paren", start)
            self.pos += 1
            self.emit("RPAREN", start, self.pos)
        else:
            raise self.fail(f"unrecognized character in action: {_unicode_name(c)}", start)

    def _alnum(self) -> None:
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1

    def _terminator(self, start: int) -> None:
        """Go demands that a word be followed by a space, delimiter, or punctuation."""
        if self.pos >= len(self.text):
            return
        c = self.text[self.pos]
        if c in _SPACE or c in ".,|:()=" or self._right_delim(self.pos) is not None:
            return
        raise self.fail(f"bad character {_unicode_name(c)}", self.pos)

    def _quoted(self, start: int, quote: str, unterminated: str) -> None:
        i = start + 1
        t = self.text
        while True:
            if i >= len(t) or t[i] == "\n":
                raise self.fail(unterminated, start)
            if t[i] == "\\":
                i += 2
                continue
            if t[i] == quote:
                self.pos = i + 1
                return
            i += 1

    def _number(self, start: int) -> None:
        t, i = self.text, start
        if t[i] in "+-":
            i += 1
        digits = "0123456789_"
        if t.startswith(("0x", "0X"), i):
            i += 2
            digits = "0123456789abcdefABCDEF_"
        elif t.startswith(("0o", "0O"), i):
            i += 2
            digits = "01234567_"
        elif t.startswith(("0b", "0B"), i):
            i += 2
            digits = "01_"
        while i < len(t) and t[i] in digits:
            i += 1
        if i < len(t) and t[i] == ".":
            i += 1
            while i < len(t) and t[i] in digits:
                i += 1
        exp = "pP" if digits.startswith("0123456789a") else "eEpP"
        if i < len(t) and t[i] in exp:
            i += 1
            if i < len(t) and t[i] in "+-":
                i += 1
            while i < len(t) and t[i] in "0123456789_":
                i += 1
        if i < len(t) and t[i] == "i":
            i += 1
        if i < len(t) and _is_alnum(t[i]):
            j = i
            while j < len(t) and _is_alnum(t[j]):
                j += 1
            raise self.fail(f"bad number syntax: {t[start:j]!r}".replace("'", '"'), start)
        self.pos = i
        self.emit("NUMBER", start, i)


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalnum()


def _unicode_name(c: str) -> str:
    return f"U+{ord(c):04X} '{c}'"


# ---------------------------------------------------------------- parse tree


class _Node:
    pos: int = 0

    def __str__(self) -> str:  # Go's Node.String(), used in error context
        return ""


class _Text(_Node):
    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos

    def __str__(self) -> str:
        return go_sprintf("%q", self.text)


class _Dot(_Node):
    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "."


class _Nil(_Node):
    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "nil"


class _Const(_Node):
    """A bool, number or string literal: ``value`` plus Go's source text."""

    def __init__(self, value: Any, text: str, pos: int) -> None:
        self.value, self.text, self.pos = value, text, pos

    def __str__(self) -> str:
        return self.text


class _Ident(_Node):
    def __init__(self, name: str, pos: int) -> None:
        self.name, self.pos = name, pos

    def __str__(self) -> str:
        return self.name


class _Field(_Node):
    def __init__(self, idents: list[str], pos: int) -> None:
        self.idents, self.pos = idents, pos

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


class _Var(_Node):
    def __init__(self, idents: list[str], pos: int) -> None:
        self.idents, self.pos = idents, pos

    def __str__(self) -> str:
        return ".".join(self.idents)


class _Chain(_Node):
    def __init__(self, node: _Node, fields: list[str], pos: int) -> None:
        self.node, self.fields, self.pos = node, fields, pos

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


class _Command(_Node):
    def __init__(self, args: list[_Node], pos: int) -> None:
        self.args, self.pos = args, pos

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Pipe(_Node):
    def __init__(self, decl: list[_Var], is_assign: bool, cmds: list[_Command], pos: int) -> None:
        self.decl, self.is_assign, self.cmds, self.pos = decl, is_assign, cmds, pos

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return head + " | ".join(str(c) for c in self.cmds)


class _List(_Node):
    def __init__(self, pos: int) -> None:
        self.nodes: list[_Node] = []
        self.pos = pos

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class _Action(_Node):
    def __init__(self, pipe: _Pipe, pos: int) -> None:
        self.pipe, self.pos = pipe, pos

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _Control(_Node):
    """``if``, ``range`` and ``with``: a pipeline, a body and an optional else."""

    def __init__(self, kind: str, pipe: _Pipe, body: _List, else_: _List | None, pos: int) -> None:
        self.kind, self.pipe, self.body, self.else_, self.pos = kind, pipe, body, else_, pos

    def __str__(self) -> str:
        s = "{{" + self.kind + " " + str(self.pipe) + "}}" + str(self.body)
        if self.else_ is not None:
            s += "{{else}}" + str(self.else_)
        return s + "{{end}}"


class _TemplateCall(_Node):
    def __init__(self, name: str, pipe: _Pipe | None, pos: int) -> None:
        self.name, self.pipe, self.pos = name, pipe, pos

    def __str__(self) -> str:
        arg = f" {self.pipe}" if self.pipe is not None else ""
        return "{{template " + go_sprintf("%q", self.name) + arg + "}}"


class _Break(_Node):
    def __init__(self, pos: int, is_continue: bool) -> None:
        self.pos, self.is_continue = pos, is_continue

    def __str__(self) -> str:
        return "{{continue}}" if self.is_continue else "{{break}}"


class _Tree:
    """One named template: its body and the text it was parsed from (for error positions)."""

    def __init__(self, name: str, parse_name: str, text: str, root: _List) -> None:
        self.name, self.parse_name, self.text, self.root = name, parse_name, text, root

    def location(self, node: _Node) -> str:
        before = self.text[: node.pos]
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1)
        return f"{self.parse_name}:{line}:{col}"

    def is_empty(self) -> bool:
        return all(isinstance(n, _Text) and not n.text.strip(_SPACE) for n in self.root.nodes)


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, name: str, text: str, funcs: Callable[[str], bool]) -> None:
        self.name, self.text = name, text
        self.toks = _Lexer(name, text).run()
        self.i = 0
        self.has_func = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.nesting = 0
        self.trees: dict[str, _Tree] = {}

    # token helpers
    def next(self) -> _Tok:
        # Reading past the end keeps returning EOF; counting the read keeps backup() exact.
        tok = self.toks[min(self.i, len(self.toks) - 1)]
        self.i += 1
        return tok

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> _Tok:
        return self.toks[min(self.i, len(self.toks) - 1)]

    def next_non_space(self) -> _Tok:
        tok = self.next()
        while tok.typ == "SPACE":
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Tok:
        tok = self.next_non_space()
        self.backup()
        return tok

    def fail(self, msg: str, tok: _Tok | None = None) -> TemplateError:
        line = (tok or self.toks[min(max(self.i - 1, 0), len(self.toks) - 1)]).line
        return TemplateError(f"template: {self.name}:{line}: {msg}")

    def unexpected(self, tok: _Tok, context: str) -> TemplateError:
        return self.fail(f"unexpected {tok} in {context}", tok)

    def expect(self, typ: str, context: str) -> _Tok:
        tok = self.next_non_space()
        if tok.typ != typ:
            raise self.unexpected(tok, context)
        return tok

    # top level
    def parse(self) -> _Tree:
        root = _List(0)
        while self.peek().typ != "EOF":
            if self.peek().typ == "LDELIM":
                delim = self.next()
                if self.next_non_space().typ == "define":
                    self.parse_definition()
                    continue
                self.i = self.toks.index(delim)
            node = self.text_or_action()
            if isinstance(node, _Tok):
                raise self.fail(f"unexpected {{{{{node.val}}}}}", node)
            root.nodes.append(node)
        return _Tree(self.name, self.name, self.text, root)

    def parse_definition(self) -> None:
        tok = self.next_non_space()
        if tok.typ not in ("STRING", "RAWSTRING"):
            raise self.unexpected(tok, "define clause")
        name = _unquote(tok.val)
        self.expect("RDELIM", "define clause")
        saved, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        self.vars = saved
        if end.typ != "end":
            raise self.unexpected(end, "define clause")
        self._add(name, body)

    def _add(self, name: str, body: _List) -> None:
        tree = _Tree(name, self.name, self.text, body)
        old = self.trees.get(name)
        if old is None or not tree.is_empty() or old.is_empty():
            self.trees[name] = tree

    def item_list(self) -> tuple[_List, _Tok]:
        """Nodes up to a matching ``{{end}}`` or ``{{else}}`` (returned as the token)."""
        lst = _List(self.peek_non_space().pos)
        while self.peek_non_space().typ != "EOF":
            node = self.text_or_action()
            if isinstance(node, _Tok):
                return lst, node
            lst.nodes.append(node)
        raise self.fail("unexpected EOF", self.peek())

    def text_or_action(self) -> _Node | _Tok:
        tok = self.next_non_space()
        if tok.typ == "TEXT":
            return _Text(tok.val, tok.pos)
        if tok.typ == "LDELIM":
            return self.action()
        raise self.unexpected(tok, "input")

    def action(self) -> _Node | _Tok:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == "block":
            return self.block_control(tok)
        if typ in ("break", "continue"):
            if self.range_depth == 0:
                raise self.fail(f"{{{{{typ}}}}} outside {{{{range}}}}", tok)
            self.expect("RDELIM", typ)
            return _Break(tok.pos, typ == "continue")
        if typ == "else":
            peek = self.peek_non_space()
            if peek.typ not in ("if", "with"):
                self.expect("RDELIM", "else")
            return tok
        if typ == "end":
            self.expect("RDELIM", "end")
            return tok
        if typ in ("if", "range", "with"):
            return self.control(typ, tok)
        if typ == "template":
            return self.template_control(tok)
        if typ == "define":
            raise self.unexpected(tok, "command")
        self.backup()
        tok = self.peek()
        return _Action(self.pipeline("command", "RDELIM"), tok.pos)

    def control(self, kind: str, tok: _Tok) -> _Control:
        self.nesting += 1
        try:
            if self.nesting > _MAX_NESTING:
                raise self.fail(f"{kind} nested deeper than {_MAX_NESTING} levels", tok)
            return self._control(kind, tok)
        finally:
            self.nesting -= 1

    def _control(self, kind: str, tok: _Tok) -> _Control:
        mark = len(self.vars)
        pipe = self.pipeline(kind, "RDELIM")
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_: _List | None = None
        if nxt.typ == "else":
            follow = self.peek_non_space()
            if kind in ("if", "with") and follow.typ == kind:
                # "else if" / "else with": a nested control sharing our {{end}}.
                self.next_non_space()
                else_ = _List(follow.pos)
                else_.nodes.append(self.control(kind, follow))
            else:
                else_, nxt = self.item_list()
                if nxt.typ != "end":
                    raise self.fail(f"expected end; found {nxt}", nxt)
        del self.vars[mark:]
        return _Control(kind, pipe, body, else_, tok.pos)

    def block_control(self, tok: _Tok) -> _TemplateCall:
        name_tok = self.next_non_space()
        if name_tok.typ not in ("STRING", "RAWSTRING"):
            raise self.unexpected(name_tok, "block clause")
        name = _unquote(name_tok.val)
        pipe = self.pipeline("block", "RDELIM") if self.peek_non_space().typ != "RDELIM" else None
        if pipe is None:
            self.expect("RDELIM", "block clause")
        saved, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        self.vars = saved
        if end.typ != "end":
            raise self.unexpected(end, "block clause")
        self._add(name, body)
        return _TemplateCall(name, pipe, tok.pos)

    def template_control(self, tok: _Tok) -> _TemplateCall:
        name_tok = self.next_non_space()
        if name_tok.typ not in ("STRING", "RAWSTRING"):
            raise self.unexpected(name_tok, "template clause")
        name = _unquote(name_tok.val)
        pipe = None
        if self.peek_non_space().typ != "RDELIM":
            pipe = self.pipeline("template", "RDELIM")
        else:
            self.next_non_space()
        return _TemplateCall(name, pipe, name_tok.pos)

    def pipeline(self, context: str, end: str) -> _Pipe:
        start = self.peek_non_space()
        decl: list[_Var] = []
        is_assign = False
        while True:
            v = self.peek_non_space()
            if v.typ != "VAR":
                break
            self.next_non_space()
            after = self.peek_non_space()
            if after.typ in ("DECLARE", "ASSIGN"):
                self.next_non_space()
                is_assign = after.typ == "ASSIGN"
                decl.append(_Var([v.val], v.pos))
                if not is_assign:
                    self.vars.append(v.val)
                break
            if after.typ == "COMMA" and context == "range" and len(decl) < 2:
                self.next_non_space()
                decl.append(_Var([v.val], v.pos))
                self.vars.append(v.val)
                continue
            self.backup(self.i - self.toks.index(v))
            break
        if decl and is_assign:
            for d in decl:
                self._use_var(d.idents[0], start)
        if len(decl) == 2 and self.toks[self.i - 1].typ != "DECLARE" and not is_assign:
            raise self.fail("range can only initialize variables with :=", start)
        cmds: list[_Command] = []
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                if not cmds:
                    raise self.fail(f"missing value for {context}", tok)
                break
            if tok.typ in ("BOOL", "CHAR", "DOT", "FIELD", "IDENT", "NUMBER", "NIL", "RAWSTRING", "STRING",
                           "VAR", "LPAREN"):
                self.backup()
                cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)
        for n, cmd in enumerate(cmds[1:], start=1):
            if isinstance(cmd.args[0], (_Const, _Dot, _Nil)):
                raise self.fail(f"non executable command in pipeline stage {n + 1}", start)
        return _Pipe(decl, is_assign, cmds, start.pos)

    def command(self) -> _Command:
        cmd = _Command([], self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == "SPACE":
                continue
            if tok.typ in ("RDELIM", "RPAREN"):
                self.backup()
            elif tok.typ != "PIPE":
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.fail("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == "FIELD":
            fields: list[str] = []
            while self.peek().typ == "FIELD":
                fields.append(self.next().val[1:])
            if isinstance(node, _Field):
                return _Field(node.idents + fields, node.pos)
            if isinstance(node, _Var):
                return _Var(node.idents + fields, node.pos)
            if isinstance(node, (_Const, _Nil, _Dot)):
                raise self.fail(f"unexpected . after term {str(node)!r}".replace("'", '"'))
            return _Chain(node, fields, node.pos)
        return node

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == "IDENT":
            if not self.has_func(tok.val):
                raise self.fail(f'function "{tok.val}" not defined', tok)
            return _Ident(tok.val, tok.pos)
        if typ == "DOT":
            return _Dot(tok.pos)
        if typ == "NIL":
            return _Nil(tok.pos)
        if typ == "VAR":
            self._use_var(tok.val, tok)
            return _Var([tok.val], tok.pos)
        if typ == "FIELD":
            return _Field([tok.val[1:]], tok.pos)
        if typ == "BOOL":
            return _Const(tok.val == "true", tok.val, tok.pos)
        if typ in ("NUMBER", "CHAR"):
            return _Const(self._number(tok), tok.val, tok.pos)
        if typ == "LPAREN":
            return self.pipeline("parenthesized pipeline", "RPAREN")
        if typ in ("STRING", "RAWSTRING"):
            return _Const(_unquote(tok.val), tok.val, tok.pos)
        self.backup()
        return None

    def _use_var(self, name: str, tok: _Tok) -> None:
        if name not in self.vars:
            raise self.fail(f'undefined variable "{name}"', tok)

    def _number(self, tok: _Tok) -> int | float:
        text = tok.val
        if tok.typ == "CHAR":
            s = _unquote(text)
            if len(s) != 1:
                raise self.fail(f"malformed character constant: {text}", tok)
            return ord(s)
        clean = text.replace("_", "")
        try:
            body = clean.lstrip("+-")
            is_hex = body[:2].lower() in ("0x", "0o", "0b")
            if not is_hex and any(c in body for c in ".eE"):
                return float(clean)
            if not is_hex and len(body) > 1 and body[0] == "0":
                return int(clean, 8)
            return int(clean, 0)
        except ValueError:
            raise self.fail(f"illegal number syntax: {text!r}".replace("'", '"'), tok) from None


def _unquote(text: str) -> str:
    """Go string literal (interpreted, raw or rune) -> its value."""
    q = text[0]
    body = text[1:-1]
    if q == "`":
        return body.replace("\r", "")
    out: list[str] = []
    i = 0
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
              "'": "'", '"': '"'}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            hexs = body[i + 2:i + 2 + width]
            if len(hexs) != width or any(ch not in "0123456789abcdefABCDEF" for ch in hexs):
                raise TemplateError(f"invalid syntax in string literal {text}")
            out.append(chr(int(hexs, 16)))
            i += 2 + width
        elif e in "01234567":
            octs = body[i + 1:i + 4]
            out.append(chr(int(octs, 8)))
            i += 4
        else:
            raise TemplateError(f"invalid syntax in string literal {text}")
    return "".join(out)


# ---------------------------------------------------------------- execution


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


def truth(v: Any) -> bool:
    """Go's template truth: false, 0, nil and empty collections are false."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, bytes, list, tuple, dict)):
        return bool(v)
    if isinstance(v, Mapping):
        return len(v) > 0
    return True


class _State:
    def __init__(self, tmpl: Template, tree: _Tree, depth: int,
                 extra: Mapping[str, Callable[..., Any]] | None = None, budget: Budget | None = None) -> None:
        self.tmpl = tmpl
        self.tree = tree
        self.extra = extra
        self.budget = budget
        self.vars: list[tuple[str, Any]] = []
        self.node: _Node | None = None
        self.out: list[str] = []
        self.depth = depth

    def fail(self, msg: str) -> TemplateError:
        name = self.tree.name
        if self.node is None:
            return TemplateError(f"template: {name}: {msg}")
        ctx = str(self.node)
        if len(ctx) > 20:
            ctx = ctx[:20] + "..."
        return TemplateError(f"template: {self.tree.location(self.node)}: executing \"{name}\" at <{ctx}>: {msg}")

    # variables
    def lookup(self, name: str) -> Any:
        for k, v in reversed(self.vars):
            if k == name:
                return v
        raise self.fail(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise self.fail(f"undefined variable: {name}")

    # walking
    def walk(self, dot: Any, node: _Node) -> None:
        # Node classes have no subclasses: exact type tests are the fast dispatch.
        self.node = node
        t = type(node)
        if t is _Text:
            self.out.append(node.text)  # type: ignore[attr-defined]
        elif t is _List:
            for n in node.nodes:  # type: ignore[attr-defined]
                self.walk(dot, n)
        elif t is _Action:
            pipe = node.pipe  # type: ignore[attr-defined]
            val = self.eval_pipeline(dot, pipe)
            if not pipe.decl:
                if type(val) is str:
                    self.out.append(val)
                else:
                    self.print_value(node, val)
        elif isinstance(node, _Control):
            if node.kind == "range":
                self.walk_range(dot, node)
            else:
                self.walk_if_with(dot, node)
        elif isinstance(node, _TemplateCall):
            self.walk_template(dot, node)
        elif isinstance(node, _Break):
            raise _ContinueLoop() if node.is_continue else _BreakLoop()
        else:  # pragma: no cover - the parser makes no other nodes
            raise self.fail(f"unknown node: {node}")

    def print_value(self, node: _Node, val: Any) -> None:
        self.node = node
        if val is None or val is _MISSING:
            self.out.append("<no value>")
            return
        if callable(val) and not isinstance(val, type) and not hasattr(val, "__go_str__"):
            raise self.fail(f"can't print {node} of type {go_type_name(val)}")
        self.out.append(go_sprint(val))

    def walk_if_with(self, dot: Any, node: _Control) -> None:
        mark = len(self.vars)
        try:
            val = self.eval_pipeline(dot, node.pipe)
            if truth(val):
                self.walk(val if node.kind == "with" else dot, node.body)
            elif node.else_ is not None:
                self.walk(dot, node.else_)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: _Control) -> None:
        self.node = node
        mark = len(self.vars)
        try:
            val = self.eval_pipeline(dot, node.pipe)
            items = self._range_items(node, val)
            ran = False
            for key, elem in items:
                ran = True
                if self.budget is not None:
                    self.budget.tick(self)
                self._set_range_vars(node.pipe, key, elem)
                inner = len(self.vars)
                try:
                    self.walk(elem, node.body)
                except _ContinueLoop:
                    pass
                except _BreakLoop:
                    break
                finally:
                    del self.vars[inner:]
            if not ran and node.else_ is not None:
                self.walk(dot, node.else_)
        finally:
            del self.vars[mark:]

    def _range_items(self, node: _Control, val: Any) -> list[tuple[Any, Any]]:
        if val is None:
            return []
        if isinstance(val, Mapping):
            return [(k, val[k]) for k in _sorted_keys(val)]
        if isinstance(val, (list, tuple)):
            return list(enumerate(val))
        if isinstance(val, int) and not isinstance(val, bool):
            if len(node.pipe.decl) > 1:
                raise self.fail(f"can't use {val} to iterate over more than one variable")
            return [(i, i) for i in range(val)]
        if not isinstance(val, (str, bytes, float, bool)) and hasattr(val, "__iter__"):
            return list(enumerate(val))
        raise self.fail(f"range can't iterate over {go_sprint(val)}")

    def _set_range_vars(self, pipe: _Pipe, key: Any, elem: Any) -> None:
        if not pipe.decl:
            return
        names = [d.idents[0] for d in pipe.decl]
        if pipe.is_assign:
            if len(names) > 1:
                self.set_var(names[0], key)
                self.set_var(names[1], elem)
            else:
                self.set_var(names[0], elem)
            return
        # The pipeline pushed the variables; overwrite them with this iteration's values.
        self.vars[-1] = (self.vars[-1][0], elem)
        if len(names) > 1:
            self.vars[-2] = (self.vars[-2][0], key)

    def walk_template(self, dot: Any, node: _TemplateCall) -> None:
        self.node = node
        tree = self.tmpl._trees.get(node.name)
        if tree is None:
            raise self.fail(f'template "{node.name}" not defined')
        if self.depth >= _MAX_DEPTH:
            raise self.fail(f"exceeded maximum template depth ({_MAX_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        sub = _State(self.tmpl, tree, self.depth + 1, self.extra, self.budget)
        sub.vars.append(("$", new_dot))
        sub.out = self.out
        sub.walk(new_dot, tree.root)

    # evaluation
    def eval_pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        self.node = pipe
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        if value is _MISSING:
            value = None
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.idents[0], value)
            else:
                self.vars.append((var.idents[0], value))
        return value

    def eval_command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        self.node = first
        t = type(first)
        if t is _Field:
            return self.eval_field_chain(dot, dot, first, first.idents, cmd.args, final)  # type: ignore[attr-defined]
        if t is _Ident:
            return self.eval_function(dot, first, cmd, cmd.args, final)  # type: ignore[arg-type]
        if isinstance(first, _Chain):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, _Var):
            return self.eval_variable(dot, first, cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, _Pipe):
            return self.eval_pipeline(dot, first)
        if isinstance(first, _Const):
            return first.value
        if isinstance(first, _Dot):
            return dot
        if isinstance(first, _Nil):
            raise self.fail("nil is not a command")
        raise self.fail(f"can't evaluate command {first}")  # pragma: no cover

    def not_a_function(self, args: list[_Node], final: Any) -> None:
        if len(args) > 1 or final is not _MISSING:
            raise self.fail(f"can't give argument to non-function {args[0]}")

    def eval_arg(self, dot: Any, node: _Node) -> Any:
        self.node = node
        t = type(node)
        if t is _Const:
            return node.value  # type: ignore[attr-defined]
        if t is _Field:
            return self.eval_field_chain(dot, dot, node, node.idents, [node], _MISSING)  # type: ignore[attr-defined]
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Field):
            return self.eval_field_chain(dot, dot, node, node.idents, [node], _MISSING)
        if isinstance(node, _Var):
            return self.eval_variable(dot, node, [node], _MISSING)
        if isinstance(node, _Pipe):
            return self.eval_pipeline(dot, node)
        if isinstance(node, _Ident):
            return self.eval_function(dot, node, node, [node], _MISSING)
        if isinstance(node, _Chain):
            return self.eval_chain(dot, node, [node], _MISSING)
        if isinstance(node, _Const):
            return node.value
        raise self.fail(f"can't handle {node} for arg")  # pragma: no cover

    def eval_variable(self, dot: Any, var: _Var, args: list[_Node], final: Any) -> Any:
        self.node = var
        value = self.lookup(var.idents[0])
        if len(var.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.idents[1:], args, final)

    def eval_chain(self, dot: Any, chain: _Chain, args: list[_Node], final: Any) -> Any:
        self.node = chain
        if isinstance(chain.node, _Nil):
            raise self.fail(f"indirection through explicit nil in {chain}")
        receiver = self.eval_arg(dot, chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.fields, args, final)

    def eval_field_chain(self, dot: Any, receiver: Any, node: _Node, idents: list[str], args: list[_Node],
                         final: Any) -> Any:
        if len(idents) == 1 and type(receiver) is ZeroMap and len(args) == 1 and final is _MISSING \
                and not idents[0][:1].isupper():
            # ``.label`` on a plain label map, the common case: no methods, no arguments.
            self.node = node
            name = idents[0]
            return receiver.get(name, receiver.zero)
        for ident in idents[:-1]:
            receiver = self.eval_field(dot, ident, node, [], _MISSING, receiver)
        return self.eval_field(dot, idents[-1], node, args, final, receiver)

    def eval_field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any, receiver: Any) -> Any:
        self.node = node
        has_args = len(args) > 1 or final is not _MISSING
        if receiver is None:
            raise self.fail(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, Mapping) and name[:1].isupper() and callable(getattr(type(receiver), name, None)):
            # A named map type with methods (Alertmanager's KV): Go looks up methods before keys.
            return self.call(dot, getattr(receiver, name), node, name, args, final)
        if isinstance(receiver, Mapping):
            if has_args:
                raise self.fail(f"{name} is not a method but has arguments")
            if name in receiver:
                return receiver[name]
            return self.missing_key(receiver, name)
        if not name.startswith("_"):
            try:
                attr = getattr(receiver, name)
            except AttributeError:
                attr = _MISSING
            if attr is not _MISSING:
                if inspect.ismethod(attr) or inspect.isbuiltin(attr):
                    return self.call(dot, attr, node, name, args, final)
                if has_args:
                    raise self.fail(f"{name} has arguments but cannot be invoked as function")
                return attr
        raise self.fail(f"can't evaluate field {name} in type {go_type_name(receiver)}")

    def missing_key(self, m: Mapping[Any, Any], key: Any) -> Any:
        mode = self.tmpl._missingkey
        if mode == "error":
            raise self.fail(f"map has no entry for key {go_sprintf('%q', key)}")
        if mode == "zero" or isinstance(m, ZeroMap):
            return m.zero if isinstance(m, ZeroMap) else None
        return None

    def eval_function(self, dot: Any, ident: _Ident, cmd: _Node, args: list[_Node], final: Any) -> Any:
        self.node = ident
        name = ident.name
        if name in ("and", "or"):
            return self.eval_and_or(dot, name, cmd, args, final)
        fn = (self.extra.get(name) if self.extra is not None else None) or self.tmpl._funcs.get(name) \
            or _BUILTINS.get(name)
        if fn is None:
            raise self.fail(f'"{name}" is not a defined function')
        return self.call(dot, fn, cmd, name, args, final)

    def eval_and_or(self, dot: Any, name: str, cmd: _Node, args: list[_Node], final: Any) -> Any:
        """``and``/``or`` stop evaluating arguments once the result is known, as Go's do."""
        nodes = args[1:]
        n = len(nodes) + (0 if final is _MISSING else 1)
        if n < 1:
            self.node = cmd
            raise self.fail(f"wrong number of args for {name}: want at least 1 got 0")
        val: Any = None
        for i in range(n):
            val = final if i == len(nodes) else self.eval_arg(dot, nodes[i])
            if truth(val) == (name == "or"):
                return val
        return val

    def call(self, dot: Any, fn: Callable[..., Any], node: _Node, name: str, args: list[_Node],
             final: Any) -> Any:
        argv = [self.eval_arg(dot, a) for a in args[1:]]
        if final is not _MISSING:
            argv.append(final)
        self.node = node
        t = type(fn)
        if t is _FunctionType and not fn.__dict__:  # plain function: arity from its code, no inspect
            code = fn.__code__
            hi = code.co_argcount
            lo = hi - len(fn.__defaults__ or ())
            got = len(argv)
            if code.co_flags & _CO_VARARGS:
                if got < lo:
                    raise self.fail(f"wrong number of args for {name}: want at least {lo} got {got}")
            elif not lo <= got <= hi:
                raise self.fail(f"wrong number of args for {name}: want {hi} got {got}")
        else:
            _check_arity(self, fn, name, len(argv))
        try:
            return fn(*argv)
        except (_BreakLoop, _ContinueLoop):  # pragma: no cover - cannot cross a call
            raise
        except RecursionError:
            raise self.fail(f"exceeded maximum template depth ({_MAX_DEPTH})") from None
        except Exception as e:
            self.node = node
            msg = e.message if isinstance(e, TemplateError) else str(e)
            raise self.fail(f"error calling {name}: {msg}") from e


# Weakly keyed: per-expansion closures must not be kept alive, and ids may be reused.
_ARITY: weakref.WeakKeyDictionary[Callable[..., Any], tuple[int, int | None]] = weakref.WeakKeyDictionary()


def _check_arity(state: _State, fn: Callable[..., Any], name: str, got: int) -> None:
    """Go checks a call's argument count against the function's signature."""
    try:
        bounds = _ARITY.get(fn)
    except TypeError:  # not weak-referenceable (e.g. some builtins)
        bounds = None
    if bounds is None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return
        lo = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                 and p.default is p.empty)
        variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
        hi = None if variadic else sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        bounds = (lo, hi)
        if not inspect.ismethod(fn):
            with contextlib.suppress(TypeError):
                _ARITY[fn] = bounds
    lo, hi = bounds
    if hi is None and got < lo:
        raise state.fail(f"wrong number of args for {name}: want at least {lo} got {got}")
    if hi is not None and not lo <= got <= hi:
        raise state.fail(f"wrong number of args for {name}: want {hi} got {got}")


def _sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=lambda k: (type(k).__name__, str(k)))


# ---------------------------------------------------------------- public API


class Template:
    """A set of named templates sharing functions, like Go's ``*template.Template``."""

    def __init__(self, name: str, funcs: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.name = name
        self._funcs: dict[str, Callable[..., Any]] = dict(funcs or {})
        self._trees: dict[str, _Tree] = {}
        self._missingkey = "default"

    def funcs(self, funcs: Mapping[str, Callable[..., Any]]) -> Template:
        """Add or replace functions (before parsing text that uses them)."""
        self._funcs.update(funcs)
        return self

    def option(self, *options: str) -> Template:
        """Go's ``Option``: ``missingkey=default|invalid|zero|error``."""
        for opt in options:
            key, _, value = opt.partition("=")
            if key != "missingkey" or value not in ("default", "invalid", "zero", "error"):
                raise ValueError(f"unrecognized option: {opt}")
            self._missingkey = "default" if value == "invalid" else value
        return self

    def parse(self, text: str, name: str | None = None) -> Template:
        """Parse ``text`` into the root template (or ``name``); definitions are added."""
        parser = _Parser(name or self.name, text, self._has_func)
        tree = parser.parse()
        for tname, t in parser.trees.items():
            self._trees[tname] = t
        old = self._trees.get(tree.name)
        if old is None or not tree.is_empty():
            self._trees[tree.name] = tree
        return self

    def _has_func(self, name: str) -> bool:
        return name in self._funcs or name in _BUILTINS or name in ("and", "or")

    def defined(self) -> list[str]:
        """Names of the templates with a body, sorted."""
        return sorted(n for n, t in self._trees.items() if t.root.nodes or n != self.name)

    def lookup(self, name: str) -> bool:
        return name in self._trees

    def constant_text(self) -> str | None:
        """The root template's output when it is text alone (no actions), else None."""
        tree = self._trees.get(self.name)
        if tree is None or not all(isinstance(n, _Text) for n in tree.root.nodes):
            return None
        return "".join(n.text for n in tree.root.nodes if isinstance(n, _Text))

    def execute(self, data: Any, name: str | None = None, *,
                funcs: Mapping[str, Callable[..., Any]] | None = None, budget: Budget | None = None) -> str:
        """Run the root template (or the one called ``name``) with ``data`` as dot.

        ``funcs`` are functions for this execution only, looked up before the
        template's own (each must have been known, by name, when parsing); they
        bind per-call values such as LogQL's ``__line__`` without copying the set.
        ``budget`` bounds an untrusted template's loops and output.
        """
        target = name or self.name
        tree = self._trees.get(target)
        if tree is None:
            if name is not None and name != self.name:
                raise TemplateError(f'template: no template "{name}" associated with template "{self.name}"')
            raise TemplateError(f'template: {target}: "{target}" is an incomplete or empty template')
        state = _State(self, tree, 0, funcs, budget)
        state.vars.append(("$", data))
        try:
            state.walk(data, tree.root)
        except RecursionError:
            raise state.fail(f"exceeded maximum template depth ({_MAX_DEPTH})") from None
        if budget is not None:
            budget.check_output(state)
        return "".join(state.out)


# ---------------------------------------------------------------- builtins


def _basic_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "nil"
    return "other"


def _eq(arg1: Any, *args: Any) -> bool:
    if not args:
        raise ValueError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for a in args:
        k2 = _basic_kind(a)
        if k1 == "other" or k2 == "other":
            if isinstance(arg1, (list, dict)) or isinstance(a, (list, dict)):
                raise ValueError("invalid type for comparison")
            if arg1 == a:
                return True
            continue
        if k1 == "nil" or k2 == "nil":
            if k1 == k2:
                return True
            continue
        if k1 != k2:
            raise ValueError("incompatible types for comparison")
        if arg1 == a:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    k1, k2 = _basic_kind(a), _basic_kind(b)
    if k1 in ("bool", "other", "nil") or k2 in ("bool", "other", "nil"):
        raise ValueError("invalid type for comparison")
    if k1 != k2:
        raise ValueError("incompatible types for comparison")
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return _lt(a, b) or _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


def _not(a: Any) -> bool:
    return not truth(a)


def _len(v: Any) -> int:
    if v is None:
        raise ValueError("len of nil pointer")
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict, bytes, Mapping)):
        return len(v)
    raise ValueError(f"len of type {go_type_name(v)}")


def _index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise ValueError("index of untyped nil")
    for idx in indexes:
        if isinstance(item, Mapping):
            if not isinstance(idx, str) and (isinstance(item, ZeroMap) or all(isinstance(k, str) for k in item)):
                raise ValueError(f"value has type {go_type_name(idx)}; should be string")
            if idx in item:
                item = item[idx]
            else:
                item = item.zero if isinstance(item, ZeroMap) else None
            continue
        if isinstance(item, (list, tuple, str, bytes)):
            if idx is None:
                raise ValueError("cannot index slice/array with nil")
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise ValueError(f"cannot index slice/array with type {go_type_name(idx)}")
            seq = item.encode() if isinstance(item, str) else item
            if not 0 <= idx < len(seq):
                raise ValueError(f"index out of range: {idx}")
            item = seq[idx]
            continue
        raise ValueError(f"can't index item of type {go_type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise ValueError("slice of untyped nil")
    if len(indexes) > 3:
        raise ValueError(f"too many slice indexes: {len(indexes)}")
    if not isinstance(item, (list, tuple, str)):
        raise ValueError(f"can't slice item of type {go_type_name(item)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise ValueError("cannot 3-index slice a string")
    seq: Any = item.encode() if isinstance(item, str) else item
    cap = len(seq)
    idx = [0, len(seq)]
    for i, x in enumerate(indexes[:2]):
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= cap:
            raise ValueError(f"index out of range: {x}")
        idx[i] = x
    if idx[0] > idx[1]:
        raise ValueError(f"invalid slice index: {idx[0]} > {idx[1]}")
    out = seq[idx[0]:idx[1]]
    return out.decode(errors="replace") if isinstance(item, str) else out


def _call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise ValueError("call of nil")
    if not callable(fn):
        raise ValueError(f"non-function of type {go_type_name(fn)}")
    return fn(*args)


def _eval_args(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return go_sprint(*args)


def html_escape(s: str) -> str:
    """Go's ``template.HTMLEscapeString``."""
    rep = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
    return "".join(rep.get(c, c) for c in s)


def _html(*args: Any) -> str:
    return html_escape(_eval_args(args))


def js_escape(s: str) -> str:
    """Go's ``template.JSEscapeString``."""
    out: list[str] = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c == '"':
            out.append('\\"')
        elif c in "<>&=" or ord(c) < 0x20 or (ord(c) >= 0x80 and not c.isprintable()):
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _js(*args: Any) -> str:
    return js_escape(_eval_args(args))


def _urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_eval_args(args), safe="-_.~")


_BUILTINS: dict[str, Callable[..., Any]] = {
    "call": _call,
    "eq": _eq,
    "ge": _ge,
    "gt": _gt,
    "html": _html,
    "index": _index,
    "js": _js,
    "le": _le,
    "len": _len,
    "lt": _lt,
    "ne": _ne,
    "not": _not,
    "print": go_sprint,
    "printf": go_sprintf,
    "println": go_sprintln,
    "slice": _slice,
    "urlquery": _urlquery,
}
