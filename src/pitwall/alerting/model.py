"""Alert data model shared by the rule evaluator and the notification pipeline.

``Alert`` is Alertmanager's ``postableAlert``: what Prometheus sends to
``POST /api/v2/alerts`` and what pitwall's own rules hand to its pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None  # set when resolved (or as the expected resolve time)
    generator_url: str = ""


class NotifyFunc(Protocol):
    """Hands alerts to a notification pipeline (pitwall's own or a remote Alertmanager)."""

    async def __call__(self, alerts: Sequence[Alert]) -> None: ...
