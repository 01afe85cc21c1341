"""Label sets and label matchers: the vocabulary every signal shares.

A label set is a tuple of ``(name, value)`` pairs sorted by name, including
``__name__`` when the series has one. Tuples are hashable and cheap, which
matters on the ingest and query hot paths. Metrics, log streams and span
metrics all use these, so they live in core, not in one pillar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from pitwall.core import regex

__all__ = ["METRIC_NAME", "Labels", "MatchType", "Matcher", "format_labels", "labels_from_dict", "labels_get",
           "metric_name", "without_name"]

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"


def labels_from_dict(d: dict[str, str]) -> Labels:
    """Canonical label set from a mapping; empty values are dropped as Prometheus does."""
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def labels_get(labels: Labels, name: str) -> str:
    """Value of ``name`` in ``labels``, or "" when absent."""
    for k, v in labels:
        if k == name:
            return v
    return ""


def metric_name(labels: Labels) -> str:
    return labels_get(labels, METRIC_NAME)


def without_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != METRIC_NAME)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: Labels) -> str:
    """Prometheus' text form: ``name{a="1", b="2"}`` (``{}`` when empty)."""
    name = metric_name(labels)
    rest = ", ".join(f'{k}="{_escape(v)}"' for k, v in labels if k != METRIC_NAME)
    if name and not rest:
        return name
    return f"{name}{{{rest}}}"


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    """A label matcher; regexes are RE2, fully anchored and dot-all as in Prometheus (``^(?s:re)$``)."""

    type: MatchType
    name: str
    value: str
    _re: regex.Regex | None = field(default=None, compare=False, repr=False, hash=False)

    @classmethod
    def of(cls, type_: MatchType | str, name: str, value: str) -> Matcher:
        """A matcher; ``regex.RegexError`` (a ValueError with Go's text) for an invalid regex."""
        t = MatchType(type_)
        rx = None
        if t in (MatchType.REGEX, MatchType.NOT_REGEX):
            rx = regex.compile(value, anchored=True, dot_nl=True)
        return cls(t, name, value, rx)

    def matches(self, v: str) -> bool:
        """Whether label value ``v`` (``""`` when the label is absent) matches."""
        t = self.type
        if t is MatchType.EQUAL:
            return v == self.value
        if t is MatchType.NOT_EQUAL:
            return v != self.value
        assert self._re is not None
        hit = self._re.matches(v)
        return hit if t is MatchType.REGEX else not hit

    def matches_many(self, values: Sequence[str]) -> np.ndarray:
        """``matches`` for every value as a bool array (regexes over the whole array at once)."""
        t = self.type
        if t is MatchType.EQUAL or t is MatchType.NOT_EQUAL:
            hit = np.fromiter((v == self.value for v in values), dtype=bool, count=len(values))
            return hit if t is MatchType.EQUAL else ~hit
        assert self._re is not None
        hit = self._re.match_many(values)
        return hit if t is MatchType.REGEX else ~hit

    def matches_empty(self) -> bool:
        return self.matches("")

    def __str__(self) -> str:
        return f'{self.name}{self.type.value}"{_escape(self.value)}"'
