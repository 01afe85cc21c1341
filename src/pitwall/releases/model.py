"""A Canary (``flagger.app/v1beta1``) read as Flagger reads it: names, defaults, strategy, and the checks the
CRD schema cannot make (reported with the field's path).

Flagger's defaults: ``analysis.interval`` 60s, ``threshold`` 1, metric
``interval`` 1m, ``progressDeadlineSeconds`` 600, the Service port name
``http``. One deliberate difference: Flagger raises an interval below 10s
to 10s; pitwall honours short intervals (tests and demos run in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pitwall.core.durations import parse_duration_ns
from pitwall.kube import fmt_time, parse_time

__all__ = [
    "ALERT_PROVIDER",
    "API_VERSION",
    "CANARY",
    "FINALIZER",
    "METRIC_TEMPLATE",
    "PHASES",
    "CanaryView",
    "Phase",
    "duration_s",
    "fmt_time",
    "parse_time",
]

API_VERSION = "flagger.app/v1beta1"
CANARY = "Canary"
METRIC_TEMPLATE = "MetricTemplate"
ALERT_PROVIDER = "AlertProvider"
FINALIZER = "finalizer.flagger.app"  # Flagger's name for the finalizer that reverts on deletion
ANNOTATION_PREFIX = "releases.pitwall.dev/"
MIN_REQUESTS = ANNOTATION_PREFIX + "min-requests"
NO_TRAFFIC = ANNOTATION_PREFIX + "no-traffic"  # fail (Flagger's behaviour) | wait | pass
ORIGINAL_REPLICAS = ANNOTATION_PREFIX + "original-replicas"


class Phase:
    """Flagger's CanaryPhase values."""

    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


PHASES = (Phase.INITIALIZING, Phase.INITIALIZED, Phase.WAITING, Phase.PROGRESSING, Phase.WAITING_PROMOTION,
          Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED, Phase.FAILED, Phase.TERMINATING, Phase.TERMINATED)
# Phases in which an analysis is under way (Flagger's shouldAdvance).
ADVANCING = (Phase.PROGRESSING, Phase.WAITING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING)
TOTAL_WEIGHT = 100


def duration_s(text: str) -> float:
    """Seconds in a Go duration (``30s``, ``1m30s``); ``ValueError`` on a malformed one."""
    return parse_duration_ns(text, go_only=True) / 1e9


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


@dataclass(frozen=True)
class CanaryView:
    """Read-only accessors over a Canary object, with Flagger's defaults."""

    obj: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = self.obj.get("metadata") or {}
        return m

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.meta.get("namespace") or "default")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> dict[str, Any]:
        s: dict[str, Any] = self.obj.get("spec") or {}
        return s

    @property
    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = self.obj.get("status") or {}
        return s

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def target_ref(self) -> dict[str, Any]:
        t: dict[str, Any] = self.spec.get("targetRef") or {}
        return t

    @property
    def target(self) -> str:
        return str(self.target_ref.get("name") or "")

    @property
    def service(self) -> dict[str, Any]:
        s: dict[str, Any] = self.spec.get("service") or {}
        return s

    def service_names(self) -> tuple[str, str, str]:
        """(apex, primary, canary) Service names: ``service.name`` or the target's name, then -primary/-canary."""
        apex = str(self.service.get("name") or self.target)
        return apex, f"{apex}-primary", f"{apex}-canary"

    @property
    def primary_workload(self) -> str:
        return f"{self.target}-primary"

    @property
    def analysis(self) -> dict[str, Any]:
        a: dict[str, Any] = self.spec.get("analysis") or self.spec.get("canaryAnalysis") or {}
        return a

    @property
    def skip_analysis(self) -> bool:
        if not (self.spec.get("analysis") or self.spec.get("canaryAnalysis")):
            return True
        return bool(self.spec.get("skipAnalysis"))

    @property
    def suspended(self) -> bool:
        return bool(self.spec.get("suspend"))

    def interval_s(self) -> float:
        text = self.analysis.get("interval")
        if not isinstance(text, str) or not text:
            return 60.0
        try:
            v = duration_s(text)
        except ValueError:
            return 60.0
        return v if v > 0 else 60.0

    @property
    def threshold(self) -> int:
        t = _int(self.analysis.get("threshold"))
        return t if t > 0 else 1

    @property
    def progress_deadline_s(self) -> int:
        v = self.spec.get("progressDeadlineSeconds")
        return v if isinstance(v, int) and not isinstance(v, bool) else 600

    @property
    def iterations(self) -> int:
        return _int(self.analysis.get("iterations"))

    @property
    def match(self) -> list[dict[str, Any]]:
        m = self.analysis.get("match")
        return list(m) if isinstance(m, list) else []

    @property
    def step_weight(self) -> int:
        return _int(self.analysis.get("stepWeight"))

    @property
    def step_weights(self) -> list[int]:
        s = self.analysis.get("stepWeights")
        return [_int(x) for x in s] if isinstance(s, list) else []

    @property
    def step_weight_promotion(self) -> int:
        return _int(self.analysis.get("stepWeightPromotion"))

    @property
    def mirror(self) -> bool:
        return bool(self.analysis.get("mirror"))

    @property
    def mirror_weight(self) -> int:
        return _int(self.analysis.get("mirrorWeight"))

    @property
    def autoscaler_ref(self) -> dict[str, Any]:
        """``spec.autoscalerRef`` ({} when absent)."""
        a = self.spec.get("autoscalerRef")
        return a if isinstance(a, dict) else {}

    @property
    def primary_ready_threshold(self) -> int:
        """Percent of the primary's pods available before the analysis goes on (Flagger's default 100)."""
        v = self.analysis.get("primaryReadyThreshold")
        return v if isinstance(v, int) and not isinstance(v, bool) else 100

    @property
    def canary_ready_threshold(self) -> int:
        """Percent of the canary's pods available before a step is taken (Flagger's default 100)."""
        v = self.analysis.get("canaryReadyThreshold")
        return v if isinstance(v, int) and not isinstance(v, bool) else 100

    @property
    def session_affinity(self) -> dict[str, Any] | None:
        """``analysis.sessionAffinity`` (None when absent)."""
        s = self.analysis.get("sessionAffinity")
        return s if isinstance(s, dict) else None

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        w = self.analysis.get("webhooks")
        return [x for x in w if isinstance(x, dict)] if isinstance(w, list) else []

    @property
    def metrics(self) -> list[dict[str, Any]]:
        m = self.analysis.get("metrics")
        return [x for x in m if isinstance(x, dict)] if isinstance(m, list) else []

    def strategy(self) -> str:
        """Flagger's DeploymentStrategy: "ab-testing", "blue-green" or "canary"."""
        if self.match and self.iterations > 0:
            return "ab-testing"
        if self.iterations > 0:
            return "blue-green"
        return "canary"

    def max_weight(self) -> int:
        """The weight at which promotion starts (Flagger's maxWeight)."""
        sw = self.step_weights
        if sw:
            return min(TOTAL_WEIGHT, sw[-1])
        mw = _int(self.analysis.get("maxWeight"))
        return mw if mw > 0 else TOTAL_WEIGHT

    def next_step_weight(self, canary_weight: int) -> int:
        """How much to add to ``canary_weight`` (Flagger's nextStepWeight)."""
        sw = self.step_weights
        if self.step_weight > 0 or not sw:
            return self.step_weight
        max_step = TOTAL_WEIGHT - canary_weight
        if max_step == 0:
            return 1
        if canary_weight == 0:
            return min(max_step, sw[0])
        for i in range(len(sw) - 1):
            if sw[i] == canary_weight:
                return min(max_step, sw[i + 1] - canary_weight)
        return max_step

    def annotation(self, key: str) -> str:
        a = self.meta.get("annotations") or {}
        return str(a.get(key) or "")

    def problems(self) -> list[str]:
        """What Flagger's schema lets through but cannot work: ``"field.path: why"`` for each."""
        out: list[str] = []
        ref = self.target_ref
        if ref.get("kind") not in (None, "Deployment"):
            out.append(f"spec.targetRef.kind: Unsupported value: {ref.get('kind')!r}: supported values: \"Deployment\"")
        kind = self.autoscaler_ref.get("kind")
        if self.autoscaler_ref and kind != "HorizontalPodAutoscaler":
            out.append(f"spec.autoscalerRef.kind: Unsupported value: {kind!r}: supported values: "
                       "\"HorizontalPodAutoscaler\"")
        if self.analysis:
            out += self._weight_problems()
            text = self.analysis.get("interval")
            if isinstance(text, str) and text:
                try:
                    duration_s(text)
                except ValueError as e:
                    out.append(f"spec.analysis.interval: Invalid value: {text!r}: {e}")
            for i, m in enumerate(self.metrics):
                iv = m.get("interval")
                if isinstance(iv, str) and iv:
                    try:
                        duration_s(iv)
                    except ValueError as e:
                        out.append(f"spec.analysis.metrics[{i}].interval: Invalid value: {iv!r}: {e}")
        return out

    def _weight_problems(self) -> list[str]:
        out: list[str] = []
        a = self.analysis
        for field in ("stepWeight", "maxWeight", "mirrorWeight", "stepWeightPromotion", "primaryReadyThreshold",
                      "canaryReadyThreshold"):
            v = a.get(field)
            if isinstance(v, int) and not 0 <= v <= TOTAL_WEIGHT:
                out.append(f"spec.analysis.{field}: Invalid value: {v}: must be between 0 and 100")
        sw = self.step_weights
        for i, w in enumerate(sw):
            if not 0 < w <= TOTAL_WEIGHT:
                out.append(f"spec.analysis.stepWeights[{i}]: Invalid value: {w}: must be between 1 and 100")
            elif i and w <= sw[i - 1]:
                out.append(f"spec.analysis.stepWeights[{i}]: Invalid value: {w}: must be greater than the step before")
        mw, step = _int(a.get("maxWeight")), self.step_weight
        if step and mw and step > mw:
            out.append(f"spec.analysis.stepWeight: Invalid value: {step}: must not exceed maxWeight ({mw})")
        if self.strategy() == "canary" and not step and not sw:
            out.append("spec.analysis.stepWeight: Required value: a canary analysis needs stepWeight, stepWeights "
                       "or iterations")
        return out
