"""The statistical judge's verdicts where Flagger users look: a ``Judged`` condition in the Canary's status
(Flagger's schema takes any condition type; its status has no room for other fields, and unknown ones would be
pruned), a Normal Event when the judge passes (a failing judgement is already the Halt Warning), and the whole
result as JSON in the annotation ``JUDGEMENT`` for tools and the UI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pitwall.releases.judge import JudgeResult
from pitwall.releases.model import ANNOTATION_PREFIX

__all__ = ["CONDITION", "JUDGEMENT", "judged_condition", "judgement_annotation", "pass_message"]

CONDITION = "Judged"
JUDGEMENT = ANNOTATION_PREFIX + "judgement"
MAX_MESSAGE = 2048
MAX_ANNOTATION = 32 << 10
_RANK = {"Pass": 0, "Marginal": 1, "Nodata": 1, "Fail": 2}
Judgements = Sequence[tuple[str, JudgeResult]]


def _reason(r: JudgeResult) -> str:
    return "Nodata" if r.inconclusive else str(r.classification)


def _summary(name: str, r: JudgeResult) -> str:
    verdicts = "; ".join(f"{v.name} {v.classification}: {v.reason}" for v in r.metrics)
    return f"{name}: score {r.score:.0f} {_reason(r)} ({verdicts or r.reason})"


def judged_condition(judgements: Judgements, now: str, current: dict[str, Any] | None) -> dict[str, Any]:
    """The condition for this step's judgements: the worst one's reason (Pass, Marginal, Nodata, Fail); status
    True on Pass, False on Fail, else Unknown; each metric's score and verdicts in the message."""
    worst = max((_reason(r) for _, r in judgements), key=lambda c: _RANK.get(c, 1))
    status = {"Pass": "True", "Fail": "False"}.get(worst, "Unknown")
    message = " | ".join(_summary(n, r) for n, r in judgements)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 3] + "..."
    since = now
    if current is not None and current.get("status") == status and current.get("lastTransitionTime"):
        since = str(current["lastTransitionTime"])
    return {"type": CONDITION, "status": status, "reason": worst, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": since}


def judgement_annotation(judgements: Judgements, now: str, weight: int) -> str:
    """Every result as JSON (score, classification, each metric's interval, estimate, ratio, effect size and
    the two samples' summaries); the samples' summaries dropped if it would exceed ``MAX_ANNOTATION``."""
    doc: dict[str, Any] = {"time": now, "canaryWeight": weight,
                           "metrics": {n: r.to_dict() for n, r in judgements}}
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_ANNOTATION:
        for m in doc["metrics"].values():
            for v in m["metrics"]:
                v.pop("canary", None)
                v.pop("baseline", None)
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)[:MAX_ANNOTATION]
    return text


def pass_message(cd_name: str, namespace: str, name: str, r: JudgeResult) -> str:
    """The Normal Event of a passing judgement (Kayenta's score and each verdict)."""
    verdicts = "; ".join(f"{v.name} {v.classification}: {v.reason}" for v in r.metrics)
    return f"Judge {name} passed {cd_name}.{namespace} score {r.score:.0f}: {verdicts or r.reason}"
