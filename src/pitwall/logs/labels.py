"""Stream label sets as Loki writes them: ``{app="api", env="prod"}`` -> sorted Labels, validated."""

from __future__ import annotations

import re

from pitwall.core.labels import format_labels
from pitwall.logs.errors import InvalidLabels
from pitwall.logs.model import Labels
from pitwall.logs.settings import LogLimits

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})', re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESC = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[0-7]{3}|.)", re.S)


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "uU":
            return chr(int(e[1:], 16))
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0].isdigit() and len(e) == 3:
            return chr(int(e, 8))
        if e in _ESCAPES:
            return _ESCAPES[e]
        raise InvalidLabels(f"invalid escape sequence \\{e} in labels")

    return _ESC.sub(one, s)


def parse_labels(text: str) -> Labels:
    """Parse a stream's label string as Loki's push protobuf carries it (``{a="1", b="2"}``)."""
    s = text.strip()
    if not s.startswith("{"):
        raise InvalidLabels(f"error parsing labels '{text}': expected '{{'")
    if s == "{}":
        raise InvalidLabels(f"error parsing labels '{text}': at least one label pair is required per stream")
    pos = 1
    pairs: list[tuple[str, str]] = []
    while True:
        m = _PAIR.match(s, pos)
        if m is None:
            raise InvalidLabels(f"error parsing labels '{text}': expected label matcher at offset {pos}")
        pairs.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
        if m.group(3) == "}":
            break
    if s[pos:].strip():
        raise InvalidLabels(f"error parsing labels '{text}': unexpected text after '}}'")
    return canonical(pairs)


def canonical(pairs: list[tuple[str, str]] | dict[str, str]) -> Labels:
    """Sorted label set; empty values are dropped; duplicates are an error, as in Loki."""
    items = list(pairs.items()) if isinstance(pairs, dict) else pairs
    out = sorted((k, v) for k, v in items if v != "")
    for i in range(1, len(out)):
        if out[i][0] == out[i - 1][0]:
            raise InvalidLabels(f"stream '{format_labels(tuple(out))}' has duplicate label name: '{out[i][0]}'")
    return tuple(out)


def validate(labels: Labels, limits: LogLimits) -> None:
    """Loki's distributor checks on a stream's labels, with Loki's messages."""
    text = format_labels(labels)
    if not labels:
        raise InvalidLabels("error at least one label pair is required per stream")
    if len(labels) > limits.max_label_names_per_series:
        raise InvalidLabels(
            f"entry for stream '{text}' has {len(labels)} label names; limit {limits.max_label_names_per_series}"
        )
    for k, v in labels:
        if not _NAME.match(k):
            raise InvalidLabels(f"stream '{text}' has invalid label name: '{k}'")
        if len(k) > limits.max_label_name_length:
            raise InvalidLabels(f"stream '{text}' has label name too long: '{k}'")
        if len(v) > limits.max_label_value_length:
            raise InvalidLabels(f"stream '{text}' has label value too long: '{v}'")


def sanitize_name(name: str) -> str:
    """An attribute key as a label name (``service.name`` -> ``service_name``), as Loki's OTLP path does."""
    out = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out
