"""PromQL error types, mapped onto the shared error kinds (core.errors)."""

from __future__ import annotations

import json
import re

from pitwall.core import regex
from pitwall.core.errors import BadData, ExecutionError, Timeout


class PromQLParseError(BadData):
    """The expression does not parse (Prometheus' ``bad_data``)."""


class PromQLEvalError(ExecutionError):
    """Evaluation failed, e.g. many-to-many matching (Prometheus' ``execution``)."""


class TooManySamples(ExecutionError):
    """The query would hold more samples than the engine's max-samples limit."""

    def __init__(self) -> None:
        super().__init__("query processing would load too many samples into memory in query execution")


class QueryTimeout(Timeout):
    """The query ran longer than the engine's timeout."""

    def __init__(self) -> None:
        super().__init__("query timed out in expression evaluation")


class NativeHistogramsUnsupported(PromQLEvalError):
    """The query needs native histogram samples, which this engine does not store."""


# ---------------------------------------------------------------------------
# Parse errors worded as Prometheus words them
# ---------------------------------------------------------------------------
#
# promql-parser reports errors without positions and partly in other words.
# ``parse_error`` rewrites its message into Prometheus' form,
# ``<line>:<col>: parse error: <message>``, where the position can be
# recovered from the text; otherwise the message stays without a position.

_TYPE_NAMES = {"matrix": "range vector", "vector": "instant vector", "scalar": "scalar", "string": "string"}
_KEYWORDS = frozenset(
    ["offset", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
     "atan2", "start", "end", "fill", "fill_left", "fill_right"]
)
_GROUPING = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
_BINARY_OPS = frozenset(["+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">=", "and", "or", "unless",
                         "atan2"])
_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<number>(?:0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:[a-zA-Z]+\d*)*)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=@:,(){}\[\]])
    |(?P<other>.)""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        if kind not in ("space", "comment"):
            out.append((kind, m.group(), m.start()))
    return out


def _pos(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{col}"


def _describe(kind: str, tok: str) -> str:
    """Prometheus' wording for an unexpected lexer item."""
    if kind == "ident":
        return f'identifier "{tok}"'
    if kind == "number":
        return f'number "{tok}"'
    if kind == "string":
        return f"string {json.dumps(tok)}"
    names = {"(": "left parenthesis '('", ")": "right parenthesis ')'", "{": "left brace '{'",
             "}": "right brace '}'", "[": "left bracket '['", "]": "right bracket ']'", ",": "comma ','",
             ":": "colon ':'", "=": "<op:=>"}
    return names.get(tok, f"<op:{tok}>")


def _syntax_error(text: str) -> tuple[int, str] | None:
    """Where and why a query with a plain syntax error fails, found by a tiny token scan."""
    toks = _tokens(text)
    if not toks:
        return None
    depth = 0  # inside [...] or {...} anything goes for this scan
    prev: tuple[str, str, int] | None = None
    group_closed = False  # just after "by (...)" / "without (...)"
    parens: list[bool] = []  # per open "(": whether it opens a label list (by, on, group_left...)
    for i, (kind, tok, off) in enumerate(toks):
        if kind == "op" and tok == "(" and depth == 0:
            parens.append(i > 0 and toks[i - 1][1] in _GROUPING)
        elif kind == "op" and tok == ")" and depth == 0 and parens:
            parens.pop()
        if tok in "[{":
            depth += 1
        elif tok in "]}":
            depth -= 1
        if depth > 0 or tok in "]}":
            prev = (kind, tok, off)
            continue
        operand = kind in ("ident", "number", "string") and tok not in _KEYWORDS
        if prev is not None:
            pk, pt, _ = prev
            prev_operand = (pk in ("ident", "number", "string") and pt not in _KEYWORDS) or pt in (")", "]", "}")
            if pt == "@" and kind == "ident" and tok not in ("start", "end"):
                return off, f'unexpected identifier "{tok}" in @, expected timestamp'
            if prev_operand and operand and not (pk == "ident" and pt in _KEYWORDS):
                if parens and parens[-1]:
                    return off, f'unexpected {_describe(kind, tok)} in grouping opts, expected "," or ")"'
                where = " in aggregation" if group_closed else ""
                return off, f"unexpected {_describe(kind, tok)}{where}"
            if pt in _BINARY_OPS and pk == "op" and tok in _BINARY_OPS and kind == "op" and tok not in "+-":
                return off, f"unexpected {_describe(kind, tok)}"
        group_closed = (
            tok == ")" and any(t in ("by", "without") for _, t, _ in toks[max(0, i - 64) : i])
            and _closes_grouping(toks, i)
        )
        prev = (kind, tok, off)
    assert prev is not None
    if prev[1] in ("by", "without"):
        return len(text), 'unexpected end of input in grouping opts, expected "("'
    if (prev[0] == "op" and prev[1] not in (")", "]", "}")) or prev[1] in _BINARY_OPS:
        return len(text), "unexpected end of input"
    return None


def _closes_grouping(toks: list[tuple[str, str, int]], i: int) -> bool:
    """Whether the ``)`` at ``i`` closes a ``by (...)``/``without (...)`` label list."""
    j = i - 1
    while j >= 0 and toks[j][1] != "(":
        j -= 1
    return j >= 1 and toks[j - 1][1] in ("by", "without")


def _unmatched_paren(text: str) -> int | None:
    depth = 0
    for kind, tok, off in _tokens(text):
        if kind == "op" and tok == "(":
            depth += 1
        elif kind == "op" and tok == ")":
            if depth == 0:
                return off
            depth -= 1
    return None


def _unmatched_brace(text: str) -> int | None:
    depth = 0
    for kind, tok, off in _tokens(text):
        if kind == "op" and tok == "{":
            depth += 1
        elif kind == "op" and tok == "}":
            if depth == 0:
                return off
            depth -= 1
    return None


def _call_position(text: str, func: str) -> int | None:
    m = re.search(rf"(?<![\w:]){re.escape(func)}\s*\(", text)
    return m.start() if m else None


def _arg_offsets(text: str, open_paren: int) -> list[int]:
    """Start offsets of the top-level arguments of the call whose ``(`` is at ``open_paren``."""
    starts = [open_paren + 1]
    depth = 0
    for kind, tok, off in _tokens(text[open_paren + 1 :]):
        if kind == "op" and tok in "([{":
            depth += 1
        elif kind == "op" and tok in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif tok == "," and depth == 0:
            starts.append(open_paren + 1 + off + 1)
    return [s + (len(text[s:]) - len(text[s:].lstrip())) for s in starts]


def _wrong_arg(text: str, func: str, got: str) -> int | None:
    """Offset of the first argument of ``func`` that parses on its own to type ``got``."""
    import promql_parser as pp

    call = _call_position(text, func)
    if call is None:
        return None
    paren = text.index("(", call)
    offsets = _arg_offsets(text, paren)
    for k, start in enumerate(offsets):
        end = offsets[k + 1] - 1 if k + 1 < len(offsets) else len(text)
        chunk = text[start:end].rstrip().rstrip(",")
        if k + 1 == len(offsets):
            chunk = chunk[: chunk.rfind(")")] if ")" in chunk else chunk
        try:
            node = pp.parse(chunk)
        except (ValueError, OverflowError):
            continue
        kind = {"MatrixSelector": "matrix", "SubqueryExpr": "matrix", "StringLiteral": "string",
                "NumberLiteral": "scalar"}.get(type(node).__name__, "vector")
        if kind == got:
            return start
    return call


def _literal(tok: str) -> str:
    """A PromQL string literal's value, near enough to find one matcher by its value."""
    if tok[0] == "`":
        return tok[1:-1]
    try:
        return str(json.loads('"' + tok[1:-1].replace('\\"', '"').replace('"', '\\"') + '"'))
    except ValueError:
        return tok[1:-1]


def _bad_regex(text: str, pattern: str) -> tuple[int | None, str]:
    """Where the matcher with regex ``pattern`` starts (its label name), and Go's error for the regex."""
    try:
        regex.compile(pattern, anchored=True, dot_nl=True)
        msg = f"illegal regex for {pattern}"  # RE2 takes what the parser's engine refused
    except regex.RegexError as e:
        msg = str(e)
    toks = _tokens(text)
    for i, (kind, tok, _) in enumerate(toks):
        if kind == "op" and tok in ("=~", "!~") and 0 < i < len(toks) - 1:
            nxt = toks[i + 1]
            if nxt[0] == "string" and _literal(nxt[1]) == pattern:
                return toks[i - 1][2], msg
    return None, msg


def parse_error(text: str, msg: str) -> PromQLParseError:
    """A promql-parser error message as the PromQLParseError Prometheus would raise."""
    end = len(text)
    first = len(text) - len(text.lstrip())
    offset: int | None = None
    m = re.fullmatch(r"expected type (\w+) in call to function '([\w:]+)', got (\w+)", msg)
    if m:
        want, func, got = m.groups()
        offset = _wrong_arg(text, func, got)
        msg = (f'expected type {_TYPE_NAMES.get(want, want)} in call to function "{func}", '
               f"got {_TYPE_NAMES.get(got, got)}")
    elif m := re.fullmatch(r"(expected .*argument\(s\) in call to )'([\w:]+)'(, got \d+)", msg):
        offset = _call_position(text, m.group(2))
        msg = f'{m.group(1)}"{m.group(2)}"{m.group(3)}'
    elif m := re.fullmatch(r"unknown function with name '([\w:]+)'", msg):
        offset = _call_position(text, m.group(1))
        msg = f'unknown function with name "{m.group(1)}"'
    elif m := re.fullmatch(r"set operator '(\w+)' not allowed in binary scalar expression", msg):
        offset, msg = first, f'set operator "{m.group(1)}" not allowed in binary scalar expression'
    elif msg.startswith("binary expression must contain only"):
        offset = first
    elif msg == "vector selector must contain at least one non-empty matcher":
        sel = re.search(r"(?<![\w:\s])\s*\{|^\s*\{", text)
        offset = text.index("{", sel.start()) if sel else first
    elif msg == "unexpected end of input inside brackets":
        offset, msg = end, "unclosed left bracket"
    elif "end of input" in msg or msg.startswith("unclosed"):
        offset = end
    elif msg == "unexpected right parenthesis ')'":
        # Prometheus' lexer reports these one character past the offending one.
        paren = _unmatched_paren(text)
        offset = None if paren is None else paren + 1
    elif m := re.fullmatch(r"unexpected right brace '\}'", msg):
        brace = _unmatched_brace(text)
        offset, msg = brace, "unexpected character: '}'"
    elif m := re.fullmatch(r"expected type (\w+) in aggregation expression, got (\w+)", msg):
        want, got = m.groups()
        for op in ("topk", "bottomk", "quantile", "limitk", "limit_ratio", "count_values"):
            if _call_position(text, op) is not None:
                offset = _wrong_arg(text, op, got)
                break
        msg = f"expected type {_TYPE_NAMES.get(want, want)} in aggregation parameter, got {_TYPE_NAMES.get(got, got)}"
    elif msg.startswith("unexpected second colon"):
        first_colon = text.find(":", text.find("["))
        offset, msg = text.find(":", first_colon + 1), "unexpected colon ':'"
    elif msg.startswith("illegal regex for "):
        # Prometheus reports Go's regexp error at the matcher's label name.
        offset, msg = _bad_regex(text, msg.removeprefix("illegal regex for "))
    elif msg == "invalid promql query":
        found = _syntax_error(text)
        if found is not None:
            offset, msg = found
    if offset is None or offset < 0:
        return PromQLParseError(f"parse error: {msg}")
    return PromQLParseError(f"{_pos(text, offset)}: parse error: {msg}")
