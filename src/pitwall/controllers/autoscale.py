"""The HorizontalPodAutoscaler's arithmetic, as upstream's (pkg/controller/podautoscaler), as pure functions.

- ``per_pod_replicas``: a per-pod metric (Resource utilisation or average
  value, Pods metrics) against its target: ``ceil(ready pods × usage ratio)``
  unless the ratio is within the tolerance (0.1) of 1; pods being deleted or
  Failed are ignored; Pending pods (and, for cpu, pods not ready yet) are
  *unready*, pods without a sample *missing*. When the ratio says scale up,
  unready and missing pods count as using 0; when it says scale down,
  missing pods count as using 100% of their request (the target, when it is
  higher; the target value for plain metrics). If that reversed the
  direction or fell within the tolerance, nothing changes.
- ``ratio_replicas`` / ``total_replicas``: one value for the whole target
  (Object and External metrics; ``Value`` and ``AverageValue`` targets).
- ``Behavior``: ``spec.behavior`` with upstream's defaults (scale up: no
  stabilisation, the larger of +100% or +4 pods per 15 s; scale down: a
  300 s window, -100% per 15 s); ``stabilize`` keeps the recommendation
  within the recent ones, ``rate_limit`` applies the policies, min and max.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "TOLERANCE",
    "Behavior",
    "History",
    "PodSample",
    "Proposal",
    "Rules",
    "ScaleEvent",
    "limited",
    "longest_period",
    "per_pod_replicas",
    "ratio_replicas",
    "stabilize",
    "total_replicas",
]

TOLERANCE = 0.1
Obj = dict[str, Any]


@dataclass(frozen=True)
class PodSample:
    """What the calculation needs of one pod of the target."""

    name: str
    phase: str = "Running"
    deleting: bool = False
    unready: bool = False  # counted as unready (Pending, or a cpu sample not to trust yet)
    request: float = 0.0  # the pod's summed container requests of the resource (utilisation only)


@dataclass(frozen=True)
class Proposal:
    """A metric's replica proposal and what it measured (utilisation in %, or the average/total value)."""

    replicas: int
    utilization: int | None = None
    value: float = 0.0


def _group(pods: Sequence[PodSample], metrics: Mapping[str, float]) -> tuple[list[str], set[str], set[str], set[str]]:
    ready: list[str] = []
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for p in pods:
        if p.deleting or p.phase == "Failed":
            ignored.add(p.name)
        elif p.phase == "Pending":
            unready.add(p.name)
        elif p.name not in metrics:
            missing.add(p.name)
        elif p.unready:
            unready.add(p.name)
        else:
            ready.append(p.name)
    return ready, unready, missing, ignored


def per_pod_replicas(current: int, pods: Sequence[PodSample], metrics: Mapping[str, float], target: float, *,
                     utilization: bool, tolerance: float = TOLERANCE) -> Proposal:
    """The replica count a per-pod metric asks for; ``utilization`` compares ``metrics`` with each pod's
    ``request`` (``target`` in percent), else ``target`` is an average value per pod.

    Raises ``ValueError`` when no pod is left to measure, or a measured pod lacks a request."""
    if not pods:
        raise ValueError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = _group(pods, metrics)
    requests = {p.name: p.request for p in pods}
    used = {n: v for n, v in metrics.items() if n in requests and n not in ignored and n not in unready}
    if not used:
        raise ValueError("did not receive metrics for targeted pods (pods might be unready)")

    def ratio(m: Mapping[str, float]) -> tuple[float, float]:
        """(usage ratio, measured value: utilisation % or average)."""
        # in milli-units, utilisation a whole percentage, as upstream computes them
        total = sum(round(v * 1000) for v in m.values())
        if utilization:
            req = sum(round(requests[n] * 1000) for n in m)
            if req <= 0:
                raise ValueError("missing request for the resource")
            util = total * 100 // req
            return util / target, float(util)
        return total / (round(target * 1000) * len(m)), total / 1000 / len(m)

    usage, measured = ratio(used)
    proposal = Proposal(current, int(measured) if utilization else None, measured)
    up_with_unready = bool(unready) and usage > 1.0
    if not up_with_unready and not missing:
        if abs(1.0 - usage) <= tolerance:
            return proposal
        return Proposal(math.ceil(usage * len(ready)), proposal.utilization, measured)
    filled = dict(used)
    if missing:
        if usage < 1.0:
            for n in missing:
                filled[n] = requests[n] * max(100.0, target) / 100 if utilization else target
        elif usage > 1.0:
            for n in missing:
                filled[n] = 0.0
    if up_with_unready:
        for n in unready:
            filled[n] = 0.0
    new_usage, _ = ratio(filled)
    if abs(1.0 - new_usage) <= tolerance or (usage < 1.0 < new_usage) or (usage > 1.0 > new_usage):
        return proposal
    replicas = math.ceil(new_usage * len(filled))
    if (new_usage < 1.0 and replicas > current) or (new_usage > 1.0 and replicas < current):
        return proposal
    return Proposal(replicas, proposal.utilization, measured)


def ratio_replicas(current: int, ready_pods: int, value: float, target: float,
                   tolerance: float = TOLERANCE) -> Proposal:
    """An Object/External metric with a ``Value`` target: ``ceil(ready pods × value/target)`` (of the ratio
    alone when the target has no replicas)."""
    usage = value / target
    if current == 0:
        return Proposal(math.ceil(usage), None, value)
    if abs(1.0 - usage) <= tolerance:
        return Proposal(current, None, value)
    return Proposal(math.ceil(usage * ready_pods), None, value)


def total_replicas(current: int, status_replicas: int, total: float, target_average: float,
                   tolerance: float = TOLERANCE) -> Proposal:
    """An Object/External metric with an ``AverageValue`` target: ``ceil(total / target)``; the status
    shows the average over the target's replicas."""
    replicas = max(status_replicas, 1)
    usage = total / (target_average * replicas)
    average = total / replicas
    if abs(1.0 - usage) <= tolerance:
        return Proposal(current, None, average)
    return Proposal(math.ceil(total / target_average), None, average)


# -- behavior ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    type: str  # "Pods" | "Percent"
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    """One direction of ``spec.behavior`` (``HPAScalingRules``), defaults filled in."""

    window_s: int
    select: str  # "Max" | "Min" | "Disabled"
    policies: tuple[Policy, ...]


_UP_DEFAULT = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))
_DOWN_DEFAULT = (Policy("Percent", 100, 15),)


def _rules(raw: Obj | None, window: int, policies: tuple[Policy, ...]) -> Rules:
    raw = raw or {}
    w = raw.get("stabilizationWindowSeconds")
    pols = tuple(Policy(str(p.get("type")), int(p.get("value") or 0), int(p.get("periodSeconds") or 15))
                 for p in raw.get("policies") or [] if isinstance(p, dict))
    return Rules(window if w is None else int(w), str(raw.get("selectPolicy") or "Max"), pols or policies)


@dataclass(frozen=True)
class Behavior:
    """``spec.behavior`` with upstream's defaults."""

    up: Rules
    down: Rules

    @classmethod
    def of(cls, behavior: Obj | None) -> Behavior:
        b = behavior or {}
        return cls(_rules(b.get("scaleUp"), 0, _UP_DEFAULT), _rules(b.get("scaleDown"), 300, _DOWN_DEFAULT))


@dataclass(frozen=True)
class ScaleEvent:
    """A past rescale: how many replicas it added (positive) or removed (negative), and when."""

    change: int
    at: datetime


@dataclass
class Recommendation:
    replicas: int
    at: datetime


@dataclass
class History:
    """What one HPA's stabilisation and policies remember between syncs (in memory, as upstream)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)

    def record_scale(self, change: int, at: datetime, keep_s: int) -> None:
        self.events = [e for e in self.events if (at - e.at).total_seconds() <= keep_s]
        self.events.append(ScaleEvent(change, at))


def stabilize(history: History, current: int, desired: int, behavior: Behavior, at: datetime) -> tuple[int, str, str]:
    """The desired count within the recent recommendations (the lowest of the scale-up window, the highest
    of the scale-down window); records ``desired``. Returns (count, reason, message) for AbleToScale."""
    up_cut = at - timedelta(seconds=behavior.up.window_s)
    down_cut = at - timedelta(seconds=behavior.down.window_s)
    up, down = desired, desired
    old: int | None = None
    for i, rec in enumerate(history.recommendations):
        if rec.at > up_cut:
            up = min(up, rec.replicas)
        if rec.at > down_cut:
            down = max(down, rec.replicas)
        if rec.at < up_cut and rec.at < down_cut:
            old = i
    out = max(current, up)
    out = min(out, down)
    if old is not None:
        history.recommendations[old] = Recommendation(desired, at)
    else:
        history.recommendations.append(Recommendation(desired, at))
    if desired >= current:
        return out, "ScaleUpStabilized", ("recent recommendations were lower than current one, applying the lowest "
                                          "recent recommendation")
    return out, "ScaleDownStabilized", ("recent recommendations were higher than current one, applying the highest "
                                        "recent recommendation")


def _changed_in(events: Sequence[ScaleEvent], period_s: int, at: datetime, sign: int) -> int:
    cut = at - timedelta(seconds=period_s)
    return sum(abs(e.change) for e in events if e.at > cut and (e.change > 0) == (sign > 0))


def _up_limit(current: int, events: Sequence[ScaleEvent], rules: Rules, at: datetime) -> int:
    if rules.select == "Disabled":
        return current
    pick = min if rules.select == "Min" else max
    result: int | None = None
    for p in rules.policies:
        start = current - _changed_in(events, p.period_s, at, 1) + _changed_in(events, p.period_s, at, -1)
        proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _down_limit(current: int, events: Sequence[ScaleEvent], rules: Rules, at: datetime) -> int:
    if rules.select == "Disabled":
        return current
    pick = max if rules.select == "Min" else min
    result: int | None = None
    for p in rules.policies:
        start = current - _changed_in(events, p.period_s, at, 1) + _changed_in(events, p.period_s, at, -1)
        proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def limited(history: History, current: int, desired: int, behavior: Behavior, min_replicas: int,
            max_replicas: int, at: datetime) -> tuple[int, str, str]:
    """The count the scaling policies, ``minReplicas`` and ``maxReplicas`` allow on the way to ``desired``;
    (count, ScalingLimited reason, message)."""
    if desired > current:
        limit = max(_up_limit(current, history.events, behavior.up, at), current)
        if max_replicas > limit:
            allowed, reason, msg = limit, "ScaleUpLimit", ("the desired replica count is increasing faster than the "
                                                           "maximum scale rate")
        else:
            allowed, reason, msg = max_replicas, "TooManyReplicas", ("the desired replica count is more than the "
                                                                     "maximum replica count")
        if desired > allowed:
            return allowed, reason, msg
    elif desired < current:
        limit = min(_down_limit(current, history.events, behavior.down, at), current)
        if min_replicas < limit:
            allowed, reason, msg = limit, "ScaleDownLimit", ("the desired replica count is decreasing faster than "
                                                             "the maximum scale rate")
        else:
            allowed, reason, msg = min_replicas, "TooFewReplicas", ("the desired replica count is less than the "
                                                                    "minimum replica count")
        if desired < allowed:
            return allowed, reason, msg
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def longest_period(behavior: Behavior) -> int:
    """How long scale events matter (the longest policy period)."""
    return max((p.period_s for p in (*behavior.up.policies, *behavior.down.policies)), default=15)
