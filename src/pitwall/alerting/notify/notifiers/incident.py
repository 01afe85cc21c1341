"""``pitwall_incident_configs``: pitwall's own receiver type, events into its incidents capability in process.

No HTTP and no token: the composition root hands the pipeline an ``IncidentIntake``
(the incidents capability's ``AlertIntake``). The events are the ones
``pagerduty_configs`` sends (``events_v2_message``), minus the routing key. At
send time the receiver asks the service how it deduplicates (``alert_dedup``):

- ``group`` (Alertmanager's way): one event per notification, ``dedup_key`` the
  SHA-256 of the group key, resolved when the whole group is;
- ``alert``: one event per alert, ``dedup_key`` the alert's fingerprint, and the
  group's key as the incident key, so a group's alerts are the alerts of one
  open incident and each resolves on its own (the incident with its last).
  Triggers go before resolves, so a notification in which one alert resolves
  and another starts moves the incident on rather than closing it.

A service or event the incidents side refuses (``core`` ``NotFound``/``BadData``)
fails the notification for good; anything else is retried by the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import PitwallIncidentConfig
from pitwall.alerting.notify.errors import DeliveryError
from pitwall.alerting.notify.notifiers.base import NotifyContext
from pitwall.alerting.notify.notifiers.pagerduty import events_v2_message, group_dedup_key
from pitwall.core.errors import BadData, NotFound

__all__ = ["IncidentIntake", "PitwallIncident"]


class IncidentIntake(Protocol):
    """What this receiver needs from the incidents capability (wired in ``server.py``)."""

    async def alert_dedup(self, service: str) -> str:
        """``"group"`` or ``"alert"`` for the service with that id, name or integration key;
        raises a ``core.errors.NotFound`` when there is none."""
        ...

    async def enqueue(self, service: str, events: Sequence[Mapping[str, Any]], incident_key: str = "") -> None:
        """Apply Events API v2 events (no ``routing_key``) to the service, in order; with ``incident_key``, a
        new alert joins the open incident under that key. ``core.errors.BadData``: the events are refused."""
        ...


class PitwallIncident:
    name = "pitwall_incident"

    def __init__(self, cfg: PitwallIncidentConfig, index: int,
                 intake: Callable[[], IncidentIntake | None]) -> None:
        self.cfg = cfg
        self.index = index
        self.send_resolved = cfg.send_resolved
        self.service = cfg.service or cfg.routing_key
        self._intake = intake  # read per send: the incidents capability is wired after the pipeline is built

    def events(self, ctx: NotifyContext, alerts: list[StoredAlert], mode: str) -> list[dict[str, Any]]:
        """The events one notification becomes under the service's dedup ``mode``."""
        if mode != "alert":
            return [events_v2_message(self.cfg, ctx, ctx.data(alerts), dedup_key=group_dedup_key(ctx.group_key))]
        out = [events_v2_message(self.cfg, ctx, ctx.data([a]), dedup_key=a.fingerprint) for a in alerts]
        return sorted(out, key=lambda e: e["event_action"] != "trigger")  # stable: triggers first

    async def notify(self, ctx: NotifyContext, alerts: list[StoredAlert]) -> None:
        intake = self._intake()
        if intake is None:
            raise DeliveryError("pitwall_incident_configs: no incidents capability is wired into this "
                                "notification pipeline", retryable=False)
        try:
            mode = await intake.alert_dedup(self.service)
            incident_key = group_dedup_key(ctx.group_key) if mode == "alert" else ""
            await intake.enqueue(self.service, self.events(ctx, alerts, mode), incident_key)
        except (NotFound, BadData) as e:
            raise DeliveryError(f"incident service {self.service!r}: {e.message}", retryable=False) from e
        except Exception as e:  # the state store: worth another try
            raise DeliveryError(f"incident service {self.service!r}: {e.__class__.__name__}: {e}") from e

    async def close(self) -> None:
        return None  # nothing held open
