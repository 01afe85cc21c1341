"""Instant-vector functions: math, clamping, dates, labels, sorting, absent."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from pitwall.core import regex as regex_
from pitwall.core.labels import METRIC_NAME, Labels, MatchType
from pitwall.metrics.promql.ast import MatrixSel, Node, Paren, Selector
from pitwall.metrics.promql.errors import PromQLEvalError
from pitwall.metrics.promql.values import StepVector

_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sgn": np.sign,
    "acos": np.arccos,
    "acosh": np.arccosh,
    "asin": np.arcsin,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "sin": np.sin,
    "sinh": np.sinh,
    "tan": np.tan,
    "tanh": np.tanh,
    "deg": np.degrees,
    "rad": np.radians,
}
MATH_FUNCTIONS = frozenset(_MATH)
DATE_FUNCTIONS = frozenset(
    ["day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"]
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def drop_all(vec: StepVector, values: np.ndarray, present: np.ndarray | None = None) -> StepVector:
    """A result keeping the input series, whose names are dropped at the end."""
    return StepVector(
        vec.labels,
        values,
        vec.present.copy() if present is None else present,
        np.ones(vec.num_series, dtype=bool),
    )


def math_func(name: str, vec: StepVector) -> StepVector:
    with np.errstate(all="ignore"):
        return drop_all(vec, _MATH[name](vec.values))


def round_func(vec: StepVector, to_nearest: np.ndarray | None) -> StepVector:
    with np.errstate(all="ignore"):
        if to_nearest is None:
            return drop_all(vec, np.floor(vec.values + 0.5))
        inv = 1.0 / to_nearest[None, :]
        return drop_all(vec, np.floor(vec.values * inv + 0.5) / inv)


def clamp(vec: StepVector, lo: np.ndarray | None, hi: np.ndarray | None) -> StepVector:
    v = vec.values
    present = vec.present.copy()
    if lo is not None and hi is not None:
        present &= ~(hi < lo)[None, :]
    if hi is not None:
        v = np.where(np.isnan(v), v, np.minimum(hi[None, :], v))
    if lo is not None:
        v = np.where(np.isnan(v), v, np.maximum(lo[None, :], v))
    return drop_all(vec, v, present)


def date_func(name: str, vec: StepVector) -> StepVector:
    """Calendar fields of unix-seconds values, in UTC."""
    v = vec.values
    finite = np.isfinite(v)
    secs = np.where(finite, np.trunc(np.where(finite, v, 0.0)), 0.0).astype(np.int64)
    days = np.floor_divide(secs, 86400)
    sod = secs - days * 86400
    d64 = days.astype("datetime64[D]")
    years = d64.astype("datetime64[Y]")
    months = d64.astype("datetime64[M]")
    if name == "hour":
        out = sod // 3600
    elif name == "minute":
        out = (sod // 60) % 60
    elif name == "day_of_week":
        out = (days + 4) % 7
    elif name == "day_of_month":
        out = (d64 - months).astype(np.int64) + 1
    elif name == "day_of_year":
        out = (d64 - years.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "days_in_month":
        out = ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)
    elif name == "month":
        out = months.astype(np.int64) % 12 + 1
    else:
        out = years.astype(np.int64) + 1970
    res = np.where(finite, out.astype(np.float64), np.nan)
    return drop_all(vec, res)


def quantile_label(q: float) -> str:
    """The quantile label of histogram_quantiles: always with a decimal point (``0.0``, ``1.0``)."""
    from pitwall.metrics.promql.format import format_float

    text = format_float(q)
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def _check_label_name(name: str, func: str, what: str) -> None:
    if not _LABEL_NAME.match(name):
        raise PromQLEvalError(f"invalid {what} label name in {func}(): {name}")


def label_replace(vec: StepVector, dst: str, repl: str, src: str, regex: str) -> StepVector:
    try:
        rx = regex_.compile(regex, anchored=True, dot_nl=True)
    except regex_.RegexError as ex:
        raise PromQLEvalError(f"invalid regular expression in label_replace(): {regex}") from ex
    _check_label_name(dst, "label_replace", "destination")
    labels: list[Labels] = []
    drops = _drops(vec).copy()
    for i, lb in enumerate(vec.labels):
        d = dict(lb)
        m = rx.search(d.get(src, ""))
        if m is None:
            labels.append(lb)
            continue
        val = m.expand(repl)
        if val:
            d[dst] = val
        else:
            d.pop(dst, None)
        if dst == METRIC_NAME:
            drops[i] = False
        labels.append(tuple(sorted(d.items())))
    return StepVector(labels, vec.values, vec.present, drops)


def label_join(vec: StepVector, dst: str, sep: str, srcs: list[str]) -> StepVector:
    _check_label_name(dst, "label_join", "destination")
    for s in srcs:
        _check_label_name(s, "label_join", "source")
    labels: list[Labels] = []
    drops = _drops(vec).copy()
    for i, lb in enumerate(vec.labels):
        d = dict(lb)
        val = sep.join(d.get(s, "") for s in srcs)
        if val:
            d[dst] = val
        else:
            d.pop(dst, None)
        if dst == METRIC_NAME:
            drops[i] = False
        labels.append(tuple(sorted(d.items())))
    return StepVector(labels, vec.values, vec.present, drops)


def _drops(vec: StepVector) -> np.ndarray:
    return vec.drop_name if vec.drop_name is not None else np.zeros(vec.num_series, dtype=bool)


def reorder(vec: StepVector, order: list[int] | np.ndarray) -> StepVector:
    idx = np.asarray(order, dtype=np.int64)
    drop = vec.drop_name[idx] if vec.drop_name is not None else None
    return StepVector([vec.labels[i] for i in idx], vec.values[idx], vec.present[idx], drop)


def sort_by_value(vec: StepVector, desc: bool) -> StepVector:
    """Order series by their (first step's) value, NaN last; only instant results show it."""
    if vec.num_series == 0:
        return vec
    v = vec.values[:, 0]
    isnan = np.isnan(v)
    key = np.where(isnan, 0.0, -v if desc else v)
    return reorder(vec, np.lexsort((key, isnan)))


_NAT = re.compile(r"(\d+)")


def _natural_key(s: str) -> list[tuple[int, int | str]]:
    parts = _NAT.split(s)
    return [(1, int(p)) if i % 2 else (0, p) for i, p in enumerate(parts) if p != ""]


def sort_by_label(vec: StepVector, names: list[str], desc: bool) -> StepVector:
    def key(i: int) -> tuple[list[list[tuple[int, int | str]]], Labels]:
        d = dict(vec.labels[i])
        return [_natural_key(d.get(n, "")) for n in names], vec.labels[i]

    order = sorted(range(vec.num_series), key=key, reverse=desc)
    return reorder(vec, order)


def absent_labels(arg: Node) -> Labels:
    """Labels of absent()'s output: the equality matchers of a plain selector."""
    while isinstance(arg, Paren):
        arg = arg.expr
    if isinstance(arg, MatrixSel):
        arg = arg.sel
    if not isinstance(arg, Selector):
        return ()
    d: dict[str, str] = {}
    seen: set[str] = set()
    for m in arg.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.type is MatchType.EQUAL and m.name not in seen:
            d[m.name] = m.value
            seen.add(m.name)
        else:
            d.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in d.items() if v))
