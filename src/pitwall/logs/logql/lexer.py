"""LogQL tokenizer.

Numbers, durations (``5m``, ``1h30m``) and byte sizes (``20MB``) are told
apart as Loki's lexer does: a literal that reads as a duration is a
duration, else as a byte size, else it must be a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pitwall.logs.logql.errors import LogQLParseError
from pitwall.logs.logql.units import DURATION_RE, go_unquote

__all__ = ["Tok", "Token", "tokenize"]


class Tok(StrEnum):
    IDENT = "IDENTIFIER"
    STRING = "STRING"
    NUMBER = "NUMBER"
    DURATION = "DURATION"
    BYTES = "BYTES"
    FLAG = "PARSER_FLAG"
    OP = "OP"
    EOF = "$end"


@dataclass(frozen=True)
class Token:
    kind: Tok
    text: str  # source text (operators: the operator itself)
    value: str  # decoded string for STRING, else == text
    line: int
    col: int

    def describe(self) -> str:
        """How Loki's parser names the token in ``unexpected ...`` messages."""
        if self.kind is Tok.OP:
            return self.text
        if self.kind is Tok.EOF:
            return "$end"
        return self.kind.value


_OPS = sorted(
    [
        "|=",
        "|~",
        "|>",
        "!=",
        "!~",
        "!>",
        "=~",
        "==",
        ">=",
        "<=",
        "|",
        "=",
        ">",
        "<",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
    ],
    key=len,
    reverse=True,
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IDENT = r"(?![A-Za-z0-9_.µμ])"
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)" + _NOT_IDENT)
_DURATION = re.compile(DURATION_RE.pattern.removeprefix("[+-]?") + _NOT_IDENT)
_BYTES = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[KkMmGgTtPpEe][iI]?[bB]?|[bB])" + _NOT_IDENT)
_FLAG = re.compile(r"--[a-z][a-z-]*")


def tokenize(src: str) -> list[Token]:
    """Split ``src`` into tokens, ending with one EOF token; ``LogQLParseError`` on bad input."""
    toks: list[Token] = []
    i = 0
    line = 1
    line_start = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\n":
            i += 1
            line += 1
            line_start = i
            continue
        if c.isspace():
            i += 1
            continue
        if c == "#":  # comment to end of line
            while i < n and src[i] != "\n":
                i += 1
            continue
        col = i - line_start + 1
        if c in '"`':
            j = _string_end(src, i)
            if j < 0:
                raise LogQLParseError("literal not terminated", line, col)
            try:
                value = go_unquote(src[i + 1 : j], c)
            except ValueError as e:
                raise LogQLParseError(str(e), line, col) from None
            toks.append(Token(Tok.STRING, src[i : j + 1], value, line, col))
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            tok = _number_like(src, i, line, col)
            toks.append(tok)
            i += len(tok.text)
            continue
        m = _FLAG.match(src, i)
        if m:
            toks.append(Token(Tok.FLAG, m.group(0), m.group(0), line, col))
            i = m.end()
            continue
        m = _IDENT.match(src, i)
        if m:
            toks.append(Token(Tok.IDENT, m.group(0), m.group(0), line, col))
            i = m.end()
            continue
        for op in _OPS:
            if src.startswith(op, i):
                toks.append(Token(Tok.OP, op, op, line, col))
                i += len(op)
                break
        else:
            raise LogQLParseError(f"syntax error: unexpected character: '{c}'", line, col)
    toks.append(Token(Tok.EOF, "", "", line, n - line_start + 1))
    return toks


def _string_end(src: str, i: int) -> int:
    q = src[i]
    j = i + 1
    while j < len(src):
        if src[j] == "\\" and q == '"':
            j += 2
            continue
        if src[j] == q:
            return j
        if src[j] == "\n" and q == '"':
            return -1
        j += 1
    return -1


def _number_like(src: str, i: int, line: int, col: int) -> Token:
    m = _NUMBER.match(src, i)
    if m:
        return Token(Tok.NUMBER, m.group(0), m.group(0), line, col)
    m = _DURATION.match(src, i)
    if m:
        return Token(Tok.DURATION, m.group(0), m.group(0), line, col)
    m = _BYTES.match(src, i)
    if m:
        return Token(Tok.BYTES, m.group(0), m.group(0), line, col)
    end = i
    while end < len(src) and (src[end].isalnum() or src[end] in "._"):
        end += 1
    raise LogQLParseError(f"syntax error: unexpected literal: '{src[i:end]}'", line, col)
