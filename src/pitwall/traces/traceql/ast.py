"""TraceQL syntax tree: spanset expressions over field expressions. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Attribute", "Binary", "Count", "FieldExpr", "Intrinsic", "Literal", "Not", "Query",
           "SpansetExpr", "SpansetFilter", "SpansetOp", "Static"]


@dataclass(frozen=True)
class Static:
    """A literal: ``kind`` is string, int, float, bool, duration (ns), status, spankind or nil."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Attribute:
    """``span.x``, ``resource.x`` or unscoped ``.x`` (span first, then resource)."""

    scope: str  # "span", "resource" or "" (unscoped)
    name: str

    def text(self) -> str:
        return f"{self.scope}.{self.name}"


@dataclass(frozen=True)
class Intrinsic:
    """``name``, ``status``, ``statusMessage``, ``duration``, ``kind``, ``traceDuration``, ``rootName``,
    ``rootServiceName``, ``span:id``, ``span:parentID``, ``trace:id``, ``span:childCount``."""

    name: str


@dataclass(frozen=True)
class Binary:
    """A comparison (``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``=~``, ``!~``) or ``&&``/``||``."""

    op: str
    lhs: FieldExpr
    rhs: FieldExpr


@dataclass(frozen=True)
class Not:
    expr: FieldExpr


FieldExpr = Static | Attribute | Intrinsic | Binary | Not
Literal = Static


@dataclass(frozen=True)
class SpansetFilter:
    """``{ expr }``; ``{}`` (expr None) matches every span."""

    expr: FieldExpr | None


@dataclass(frozen=True)
class SpansetOp:
    """``&&``, ``||`` or a structural operator (``>``, ``>>``, ``<``, ``<<``, ``~``) between spansets."""

    op: str
    lhs: SpansetExpr
    rhs: SpansetExpr


SpansetExpr = SpansetFilter | SpansetOp


@dataclass(frozen=True)
class Count:
    """``| count() op n``: keep spansets with that many spans."""

    op: str
    value: float


@dataclass(frozen=True)
class Query:
    spansets: SpansetExpr
    pipeline: tuple[Count, ...] = ()
