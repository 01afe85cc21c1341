"""The inputs of an A/B report (:class:`ABTestSpec`), read from a request's fields with their limits.

Either two PromQL queries split by a label (``numerator`` and ``denominator``, e.g.
``sum by (variant) (increase(orders_total[$window]))``) or, per variant, a query for its successes and one for
its trials; ``$window`` becomes the spec's ``window`` (a Prometheus duration). :func:`spec_from_json` (the
endpoint's JSON body, an ABTest object's ``spec``) and :func:`spec_from_pairs` (query strings and forms) raise
:class:`ABTestInputError` (a ``BadData``: 400) naming the first bad field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.core.durations import format_duration_ms, parse_duration_ms
from pitwall.core.errors import BadData
from pitwall.core.params import parse_time_ms

__all__ = ["FIELDS", "MAX_QUERIED_VARIANTS", "MAX_QUERY_CHARS", "MAX_WINDOW_MS", "ROW_KEYS", "ABTestInputError",
           "ABTestSpec", "QueriedVariant", "parse_spec", "queries", "spec_from_json", "spec_from_pairs"]

MAX_QUERY_CHARS = 4096  # per query; PromQL for a conversion rarely passes a few hundred characters
MAX_QUERIED_VARIANTS = 10  # variants given one by one: two instant queries each
MAX_WINDOW_MS = 90 * 86_400_000  # $window: increase() over 90 days reads every sample of that span
WINDOW = "$window"
DEFAULT_CONFIDENCE, DEFAULT_POWER, DEFAULT_MDE = 0.95, 0.8, 0.1


class ABTestInputError(BadData):
    """A field of the request is missing, malformed or past a limit; the message starts with the field."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name
        self.detail = message  # without the field, for a Kubernetes cause that names it apart


@dataclass(frozen=True, slots=True)
class QueriedVariant:
    """A variant given by its own two queries (each one number: a scalar or a single series)."""

    name: str
    successes: str
    trials: str


@dataclass(frozen=True, slots=True)
class ABTestSpec:
    """What to query and how to judge it; build with :func:`parse_spec`."""

    numerator: str = ""
    denominator: str = ""
    by: str = "variant"
    variants: tuple[QueriedVariant, ...] = ()
    control: str | None = None
    at_ms: int | None = None  # None: now
    window_ms: int | None = None
    confidence: float = DEFAULT_CONFIDENCE
    power: float = DEFAULT_POWER
    mde: float = DEFAULT_MDE  # relative: 0.1 = a 10% lift of the control's rate

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 12)  # 0.05, not 1 - 0.95's 0.050000000000000044

    def render(self, query: str) -> str:
        """``query`` with ``$window`` replaced by the window."""
        return query if self.window_ms is None else query.replace(WINDOW, format_duration_ms(self.window_ms))


def parse_spec(fields: Mapping[str, Any], variants: Sequence[Mapping[str, Any]] = ()) -> ABTestSpec:
    """A spec from a request's fields (JSON values or form strings) and its per-variant rows; an empty string
    counts as absent. Raises :class:`ABTestInputError` naming the first bad field."""
    rows = _variant_rows(variants)
    numerator, denominator = _query(fields, "numerator"), _query(fields, "denominator")
    if rows and (numerator or denominator):
        raise ABTestInputError("variants", "give either numerator and denominator or variants, not both")
    if not rows and not (numerator and denominator):
        missing = "denominator" if numerator else "numerator"
        raise ABTestInputError(missing, "required (or give variants, each with its successes and trials queries)")
    by = _text(fields, "by") or "variant"
    if not by.isidentifier():
        raise ABTestInputError("by", f"{by!r} is not a label name")
    confidence = _level(fields, "confidence", None)
    alpha = _level(fields, "alpha", None)
    if alpha is not None and confidence is not None and not math.isclose(alpha, 1 - confidence):
        raise ABTestInputError("alpha", f"{alpha:g} disagrees with confidence {confidence:g} (alpha = 1 - confidence)")
    if confidence is None:
        confidence = 1 - alpha if alpha is not None else DEFAULT_CONFIDENCE
    mde = _number(fields, "mde", DEFAULT_MDE)
    if not 0 < abs(mde) <= 10:
        raise ABTestInputError("mde", f"{mde:g}: the relative effect to detect must be non-zero, at most 10 (1000%)")
    spec = ABTestSpec(numerator=numerator, denominator=denominator, by=by, variants=rows,
                      control=_text(fields, "control") or None, at_ms=_time(fields),
                      window_ms=_window(fields), confidence=confidence,
                      power=_probability(fields, "power", DEFAULT_POWER), mde=mde)
    _check_window_use(spec)
    return spec


FIELDS = frozenset({"numerator", "denominator", "by", "variants", "control", "time", "window", "confidence",
                    "alpha", "power", "mde"})
ROW_KEYS = ("variant", "successes", "trials")  # a form's per-variant inputs, repeated once per row


def spec_from_json(doc: Any) -> ABTestSpec:
    """A spec from a JSON document: the fields of :func:`parse_spec`, ``variants`` a list of
    ``{name, successes, trials}``; an unknown key is refused (a typo would otherwise be ignored)."""
    if not isinstance(doc, dict):
        raise ABTestInputError("body", "must be a JSON object")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise ABTestInputError(unknown[0], f"unknown field (known: {', '.join(sorted(FIELDS))})")
    return parse_spec(doc, doc.get("variants") or [])


def spec_from_pairs(pairs: Sequence[tuple[str, str]]) -> ABTestSpec:
    """A spec from query or form parameters: one value per field (the last wins) and, per variant, the
    repeated ``variant``, ``successes`` and ``trials`` inputs in row order."""
    fields: dict[str, str] = {}
    columns: dict[str, list[str]] = {k: [] for k in ROW_KEYS}
    for k, v in pairs:
        if k in columns:
            columns[k].append(v)
        elif k in FIELDS:
            fields[k] = v
    n = max(len(c) for c in columns.values())
    rows = [{"name": _at(columns["variant"], i), "successes": _at(columns["successes"], i),
             "trials": _at(columns["trials"], i)} for i in range(n)]
    return parse_spec(fields, rows)


def _at(values: list[str], i: int) -> str:
    return values[i] if i < len(values) else ""


def _text(fields: Mapping[str, Any], name: str) -> str:
    v = fields.get(name)
    if v is None:
        return ""
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ABTestInputError(name, "must be a string")
    return str(v).strip()


def _query(fields: Mapping[str, Any], name: str) -> str:
    q = _text(fields, name)
    if len(q) > MAX_QUERY_CHARS:
        raise ABTestInputError(name, f"query of {len(q)} characters, more than the limit of {MAX_QUERY_CHARS}")
    return q


def _number(fields: Mapping[str, Any], name: str, default: float) -> float:
    raw = _text(fields, name)
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ABTestInputError(name, f"{raw!r} is not a number") from None
    if not math.isfinite(v):
        raise ABTestInputError(name, f"{raw!r} is not a finite number")
    return v


def _level(fields: Mapping[str, Any], name: str, default: float | None) -> float | None:
    """A probability strictly between 0 and 1 (confidence, alpha, power)."""
    if not _text(fields, name):
        return default
    v = _number(fields, name, 0.0)
    if not 0 < v < 1:
        raise ABTestInputError(name, f"{v:g} must be between 0 and 1 (exclusive)")
    return v


def _probability(fields: Mapping[str, Any], name: str, default: float) -> float:
    v = _level(fields, name, default)
    return default if v is None else v


def _time(fields: Mapping[str, Any]) -> int | None:
    raw = _text(fields, "time")
    if not raw:
        return None
    try:
        return parse_time_ms(raw)
    except BadData as e:
        raise ABTestInputError("time", e.message) from None


def _window(fields: Mapping[str, Any]) -> int | None:
    raw = _text(fields, "window")
    if not raw:
        return None
    try:
        ms = parse_duration_ms(raw)
    except ValueError as e:
        raise ABTestInputError("window", str(e)) from None
    if not 0 < ms <= MAX_WINDOW_MS:
        raise ABTestInputError("window", f"{raw} must be above 0 and at most {format_duration_ms(MAX_WINDOW_MS)}")
    return ms


def _variant_rows(variants: Sequence[Mapping[str, Any]]) -> tuple[QueriedVariant, ...]:
    if not isinstance(variants, Sequence) or isinstance(variants, str):
        raise ABTestInputError("variants", "must be a list of {name, successes, trials}")
    rows: list[QueriedVariant] = []
    for i, row in enumerate(variants):
        where = f"variants[{i}]"
        if not isinstance(row, Mapping):
            raise ABTestInputError(where, "must be an object with name, successes and trials")
        name, successes, trials = (_query(row, k) for k in ("name", "successes", "trials"))
        if not (name or successes or trials):
            continue  # an empty row of a form
        for key, value in (("name", name), ("successes", successes), ("trials", trials)):
            if not value:
                raise ABTestInputError(f"{where}.{key}", "required")
        rows.append(QueriedVariant(name, successes, trials))
    if len(rows) > MAX_QUERIED_VARIANTS:
        raise ABTestInputError("variants", f"{len(rows)} variants, more than the limit of {MAX_QUERIED_VARIANTS}")
    if len(rows) == 1:
        raise ABTestInputError("variants", "an experiment needs at least two variants")
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ABTestInputError("variants", "variant names must be unique")
    return tuple(rows)


def queries(spec: ABTestSpec) -> list[tuple[str, str]]:
    """(field, query) of every query the spec runs."""
    if not spec.variants:
        return [("numerator", spec.numerator), ("denominator", spec.denominator)]
    return [(f"variants[{i}].{k}", q) for i, v in enumerate(spec.variants)
            for k, q in (("successes", v.successes), ("trials", v.trials))]


def _check_window_use(spec: ABTestSpec) -> None:
    """``$window`` needs a window, and a window nothing uses is a mistake worth saying."""
    uses = [f for f, q in queries(spec) if WINDOW in q]
    if uses and spec.window_ms is None:
        raise ABTestInputError("window", f"required: {uses[0]} uses {WINDOW}")
    if spec.window_ms is not None and not uses:
        raise ABTestInputError("window", f"no query uses {WINDOW} (e.g. increase(orders_total[{WINDOW}]))")
