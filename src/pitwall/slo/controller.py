"""The PrometheusServiceLevel controller: each ``sloth.slok.dev/v1`` object becomes rule groups that
pitwall's rule manager runs, as Sloth's Kubernetes controller turns them into PrometheusRules.

Level-triggered: read the object, generate its rules (``sloth_mode:
ctrl-gen-k8s``), hand them to the rule manager under the source
``slo:<namespace>/<name>``, write the status Sloth writes
(``processedSLOs``, ``promOpRulesGenerated``, ``promOpRulesGeneratedSLOs``,
``lastPromOpRulesSuccessfulGenerated``, ``observedGeneration``). A deleted
object's groups go (their series get staleness markers). An invalid spec
leaves the previous rules running, sets ``promOpRulesGenerated: false`` and
records a Warning Event naming the field; it is not retried until the object
changes. A new generation's rules loaded is a change event ("config").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import yaml

from pitwall.controllers import object_key, record_event
from pitwall.core.errors import PitwallError
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import Conflict, KubeClient, NotFoundError
from pitwall.slo.generate import GenerateOptions, generate_group
from pitwall.slo.render import rule_file_dict
from pitwall.slo.spec import parse_k8s_object

__all__ = ["API_VERSION", "KIND", "RuleSink", "SLOController", "source_of"]

log = logging.getLogger(__name__)

API_VERSION = "sloth.slok.dev/v1"
KIND = "PrometheusServiceLevel"
COMPONENT = "sloth-controller"


class RuleSink(Protocol):
    """Where generated rule groups go (pitwall's ``RuleManager``)."""

    async def set_rule_groups(self, source: str, text: str) -> None: ...

    async def remove_rule_groups(self, source: str) -> None: ...


def source_of(namespace: str, name: str) -> str:
    """The rule manager's source name for an object's groups (shown as their ``file`` in /api/v1/rules)."""
    return f"slo:{namespace}/{name}"


class SLOController:
    """A ``pitwall.controllers.Reconciler`` for PrometheusServiceLevel."""

    name = COMPONENT
    primary = (API_VERSION, KIND)
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, client: KubeClient, rules: RuleSink, *,
                 options: Callable[[], GenerateOptions] | None = None, default_period_ms: int = 30 * 86_400_000,
                 changes: ChangeSink | None = None) -> None:
        self.client = client
        self.rules = rules
        self.options = options or (lambda: GenerateOptions(agent="ctrl"))
        self.default_period_ms = default_period_ms
        self.changes = changes

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            obj = await self.client.get(API_VERSION, KIND, name, ns)
        except NotFoundError:
            await self.rules.remove_rule_groups(source_of(ns, name))
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            await self.rules.remove_rule_groups(source_of(ns, name))
            return None
        status = dict(obj.get("status") or {})
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        try:
            group = parse_k8s_object(obj, self.default_period_ms)
            results = generate_group(group, self.options())
            text = yaml.safe_dump(rule_file_dict(results), sort_keys=False)
            await self.rules.set_rule_groups(source_of(ns, name), text)
        except PitwallError as e:
            await self._failed(obj, status, generation, e.message)
            return None
        fresh = not status.get("promOpRulesGenerated") or status.get("observedGeneration") != generation
        new = {**status, "processedSLOs": len(group.slos), "promOpRulesGeneratedSLOs": len(results),
               "promOpRulesGenerated": True, "observedGeneration": generation}
        if fresh:
            new["lastPromOpRulesSuccessfulGenerated"] = _now()
        if new != status:
            await self._write_status(obj, new)
        if fresh:
            await record_event(self.client, obj, "Normal", "RulesGenerated",
                               f"{len(results)} SLOs: rules loaded into the rule manager", COMPONENT)
            await self._change(obj, group.slos[0].service if group.slos else name, generation, len(results))
            for s in group.slos:
                for note in s.notes:
                    await record_event(self.client, obj, "Normal", "SLIInterpolated", f"{s.id}: {note}", COMPONENT)
        return None

    async def _failed(self, obj: dict[str, Any], status: dict[str, Any], generation: int, message: str) -> None:
        slos = ((obj.get("spec") or {}).get("slos")) or []
        new = {**status, "processedSLOs": len(slos) if isinstance(slos, list) else 0,
               "promOpRulesGeneratedSLOs": 0, "promOpRulesGenerated": False, "observedGeneration": generation}
        if new != status:
            await self._write_status(obj, new)
            await record_event(self.client, obj, "Warning", "InvalidSLO", message[:1000], COMPONENT)
        log.warning("invalid PrometheusServiceLevel", extra={"object": _key(obj), "error": message})

    async def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        try:
            await self.client.update_status({**obj, "status": status}, field_manager=COMPONENT)
        except Conflict:
            raise  # stale read: the runner retries with the stored object
        except NotFoundError:
            return

    async def _change(self, obj: dict[str, Any], service: str, generation: int, n: int) -> None:
        if self.changes is None:
            return
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        try:
            await self.changes.record(ChangeEvent(
                kind="config", summary=f"SLO rules of {_key(obj)} (generation {generation}, {n} SLOs) loaded",
                source=COMPONENT, service=f"{ns}/{service}"))
        except Exception as e:  # the change stream must not stop reconciling
            log.warning("could not record change event", extra={"object": _key(obj), "error": repr(e)})


def _key(obj: dict[str, Any]) -> str:
    m = obj.get("metadata") or {}
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
