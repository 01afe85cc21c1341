"""LogQL abstract syntax tree: frozen dataclasses produced by ``parser.parse_expr``.

Log expressions (``LogSelector``) yield streams; sample expressions (range and
vector aggregations, binary operations, literals) yield vectors/matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pitwall.core.labels import Matcher

__all__ = [
    "BinOp",
    "BinaryLabelFilter",
    "BytesLabelFilter",
    "Decolorize",
    "Distinct",
    "DropLabels",
    "DurationLabelFilter",
    "Expr",
    "Grouping",
    "IpLabelFilter",
    "IpLineFilter",
    "JsonParser",
    "KeepLabels",
    "LabelFilter",
    "LabelFormat",
    "LabelReplace",
    "LineFilterExpr",
    "LineFormat",
    "Literal",
    "LogRange",
    "LogSelector",
    "LogfmtParser",
    "NumericLabelFilter",
    "PatternParser",
    "RangeAgg",
    "RegexpParser",
    "SampleExpr",
    "Stage",
    "StringLabelFilter",
    "UnpackParser",
    "Unwrap",
    "VectorAgg",
    "VectorExpr",
    "VectorMatching",
]


@dataclass(frozen=True)
class LineFilterExpr:
    """``|= "a" or "b"``: ``op`` one of ``|= != |~ !~ |> !>``; several patterns are or-ed."""

    op: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class IpLineFilter:
    """``|= ip("...")`` / ``!= ip("...")``: lines holding (not holding) an address in the set."""

    op: str
    pattern: str


@dataclass(frozen=True)
class JsonParser:
    """``| json`` or ``| json a="path", b`` (``params`` empty extracts everything)."""

    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LogfmtParser:
    params: tuple[tuple[str, str], ...] = ()
    strict: bool = False
    keep_empty: bool = False


@dataclass(frozen=True)
class RegexpParser:
    pattern: str


@dataclass(frozen=True)
class PatternParser:
    pattern: str


@dataclass(frozen=True)
class UnpackParser:
    pass


@dataclass(frozen=True)
class StringLabelFilter:
    matcher: Matcher


@dataclass(frozen=True)
class NumericLabelFilter:
    name: str
    op: str  # == != > >= < <=
    value: float


@dataclass(frozen=True)
class DurationLabelFilter:
    name: str
    op: str
    value_ns: int


@dataclass(frozen=True)
class BytesLabelFilter:
    name: str
    op: str
    value: int


@dataclass(frozen=True)
class BinaryLabelFilter:
    left: LabelFilter
    right: LabelFilter
    and_: bool


@dataclass(frozen=True)
class IpLabelFilter:
    """``| name = ip("...")`` (``op`` ``=`` or ``!=``)."""

    name: str
    op: str
    pattern: str


LabelFilter = (
    StringLabelFilter | NumericLabelFilter | DurationLabelFilter | BytesLabelFilter | BinaryLabelFilter
    | IpLabelFilter
)


@dataclass(frozen=True)
class LineFormat:
    template: str


@dataclass(frozen=True)
class LabelFormat:
    """``| label_format dst=src, dst2="{{.x}}"``: (dst, value, is_rename) triples."""

    items: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True)
class DropLabels:
    """``| drop a, b="v"``: names, optionally with a matcher on the value."""

    items: tuple[tuple[str, Matcher | None], ...]


@dataclass(frozen=True)
class KeepLabels:
    items: tuple[tuple[str, Matcher | None], ...]


@dataclass(frozen=True)
class Decolorize:
    pass


@dataclass(frozen=True)
class Distinct:
    """``| distinct a, b``: only the first entry of each combination of the labels' values."""

    labels: tuple[str, ...]


Stage = (
    LineFilterExpr
    | IpLineFilter
    | JsonParser
    | LogfmtParser
    | RegexpParser
    | PatternParser
    | UnpackParser
    | LabelFilter
    | LineFormat
    | LabelFormat
    | DropLabels
    | KeepLabels
    | Decolorize
    | Distinct
)


@dataclass(frozen=True)
class LogSelector:
    """``{matchers} | stage | ...``."""

    matchers: tuple[Matcher, ...]
    stages: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class Unwrap:
    """``| unwrap [conv(]label[)]`` and the label filters after it."""

    label: str
    conversion: str = ""  # "", "duration", "duration_seconds", "bytes"
    post_filters: tuple[LabelFilter, ...] = ()


@dataclass(frozen=True)
class LogRange:
    """``{...} | ... [5m] offset 1h``."""

    selector: LogSelector
    range_ns: int
    offset_ns: int = 0
    unwrap: Unwrap | None = None


@dataclass(frozen=True)
class Grouping:
    """``by (a, b)`` (``without=False``) or ``without (a)``."""

    labels: tuple[str, ...]
    without: bool = False


@dataclass(frozen=True)
class RangeAgg:
    op: str
    range: LogRange
    param: float | None = None
    grouping: Grouping | None = None


@dataclass(frozen=True)
class VectorAgg:
    op: str
    expr: SampleExpr
    grouping: Grouping | None = None
    param: int | None = None


@dataclass(frozen=True)
class VectorMatching:
    on: bool
    labels: tuple[str, ...]
    card: str = "one-to-one"  # "many-to-one" (group_left), "one-to-many" (group_right)
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class BinOp:
    op: str
    lhs: SampleExpr
    rhs: SampleExpr
    return_bool: bool = False
    matching: VectorMatching | None = None


@dataclass(frozen=True)
class Literal:
    value: float


@dataclass(frozen=True)
class VectorExpr:
    """``vector(1)``."""

    value: float


@dataclass(frozen=True)
class LabelReplace:
    expr: SampleExpr
    dst: str
    replacement: str
    src: str
    regex: str
    _compiled: object = field(default=None, compare=False, repr=False)


SampleExpr = RangeAgg | VectorAgg | BinOp | Literal | VectorExpr | LabelReplace
Expr = LogSelector | SampleExpr
