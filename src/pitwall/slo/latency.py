"""Latency SLIs from Prometheus histograms: "requests slower than T are errors".

With a bucket boundary at ``T`` the good requests are that bucket's count;
with ``T`` between two boundaries ``lo < T < hi`` (sloth#506) the good count
is interpolated linearly inside the bucket, the assumption
``histogram_quantile`` makes::

    good(T) = b(lo) + (b(hi) - b(lo)) * (T - lo) / (hi - lo)

and the SLI says so (``interpolated`` and ``note``; the CLI prints the note,
the controller records it as an Event, the budget API returns it). Below the
first boundary the lower edge is 0 (as ``histogram_quantile``); above the
last finite boundary there is nothing to interpolate with, so it is refused.

In a Sloth spec: ``sli: {plugin: {id: pitwall/histogram-latency/v1, options:
{metric: http_request_duration_seconds, threshold: "0.3", buckets:
"0.1,0.25,0.5,1", filter: 'job="api"'}}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pitwall.slo.errors import SpecError
from pitwall.slo.model import SLI

__all__ = ["PLUGIN_ID", "LatencySLI", "histogram_latency_sli"]

PLUGIN_ID = "pitwall/histogram-latency/v1"


@dataclass(frozen=True)
class LatencySLI:
    sli: SLI
    interpolated: bool
    note: str


def _rate(metric: str, matchers: Sequence[str]) -> str:
    sel = ",".join(m for m in matchers if m)
    return f"sum(rate({metric}{{{sel}}}[{{{{.window}}}}]))"


def _num(x: float) -> str:
    return repr(x) if x != int(x) else str(int(x)) if abs(x) < 1e15 else repr(x)


def histogram_latency_sli(metric: str, threshold: float, buckets: Sequence[str] | None = None,
                          filter: str = "") -> LatencySLI:
    """Events SLI (errors = requests slower than ``threshold`` seconds) over histogram ``metric``.

    ``buckets`` are the ``le`` values as the metric carries them ("0.25", "1"); without them the
    threshold is assumed to be a boundary written as ``threshold`` prints. ``filter`` is a matcher list
    (``job="api",route="/pay"``) applied to every selector.
    """
    if not metric:
        raise SpecError("sli.plugin.options.metric: is required")
    if not math.isfinite(threshold) or threshold <= 0:
        raise SpecError(f"sli.plugin.options.threshold: must be a positive number of seconds, got {threshold}")
    total = _rate(metric + "_count", [filter])
    les = sorted(((float(b), b) for b in (buckets or []) if b.strip() not in ("+Inf", "Inf")), key=lambda x: x[0])
    exact = next((text for value, text in les if value == threshold), None)
    if not les or exact is not None:
        le = exact if exact is not None else _num(threshold)
        good = _rate(metric + "_bucket", [filter, f'le="{le}"'])
        return LatencySLI(SLI(error_query=f"{total} - {good}", total_query=total), False,
                          f"threshold {le}s is a bucket boundary: exact" if exact else
                          f"threshold {le}s assumed to be a bucket boundary (no buckets given)")
    above = [(v, t) for v, t in les if v > threshold]
    if not above:
        raise SpecError(f"sli.plugin.options.threshold: {_num(threshold)}s is above the largest finite bucket "
                        f"({les[-1][1]}s): no upper bound to interpolate with")
    hi, hi_text = above[0]
    below = [(v, t) for v, t in les if v < threshold]
    b_hi = _rate(metric + "_bucket", [filter, f'le="{hi_text}"'])
    if below:
        lo, lo_text = below[-1]
        b_lo = _rate(metric + "_bucket", [filter, f'le="{lo_text}"'])
        good = f"({b_lo} + ({b_hi} - {b_lo}) * {_num((threshold - lo) / (hi - lo))})"
    else:
        lo, lo_text = 0.0, "0"
        good = f"({b_hi} * {_num(threshold / hi)})"
    note = (f"threshold {_num(threshold)}s is not a bucket boundary: good requests interpolated linearly between "
            f"le={lo_text} and le={hi_text} (fraction {_num((threshold - lo) / (hi - lo))} of that bucket), "
            "as histogram_quantile assumes; the SLI is an estimate")
    return LatencySLI(SLI(error_query=f"{total} - {good}", total_query=total), True, note)
