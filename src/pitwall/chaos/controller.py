"""The chaos controller: Chaos Mesh's reconcile pipeline (desired phase, records, conditions, finalizer)
for one kind, applying faults through ``pitwall.chaos.faults``.

As in Chaos Mesh, the desired phase is ``Stop`` when the object is being
deleted, its ``duration`` (from creation) is over or it carries the pause
annotation, ``Run`` otherwise (always ``Run`` for the one-shot pod-kill and
container-kill). Targets are selected once and kept as
``status.experiment.containerRecords``; each record walks
Not Injected -> Injected -> Not Injected, with an event per apply/recover.
Beyond Chaos Mesh, an injected record whose fault is no longer in place (the
pod restarted, pitwall restarted) is recovered and, while the experiment
runs, applied again; the finalizer ``chaos-mesh/records`` keeps a deleted
object until every record is recovered.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.chaos.events import ChaosReport
from pitwall.chaos.faults import Fault, FaultError, NodeHooks, fault_for
from pitwall.chaos.guard import Guard
from pitwall.chaos.meshfaults import MeshHttpChaos, MeshNetworkChaos
from pitwall.chaos.model import (
    API_VERSION,
    FINALIZER,
    INJECTED,
    NOT_INJECTED,
    NOT_YET_INJECTED,
    PAUSE_ANNOTATION,
    ChaosSpecError,
    now_rfc3339,
    parse_go_duration,
    parse_time,
)
from pitwall.chaos.selector import filter_by_mode, select_pods, target_ids
from pitwall.chaos.shimfaults import SHIM_KINDS, shim_fault_for
from pitwall.controllers import record_event
from pitwall.kube import KubeClient, NotFoundError
from pitwall.storage.revstore import RevStore
from pitwall.traffic import FaultTable

__all__ = ["ChaosReconciler", "desired_phase"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MAX_EVENTS = 10  # per record, as Chaos Mesh's controller config (oldest dropped)
COMPONENT = "chaos-controller-manager"
RETRY_S = 2.0
GUARD_RETRY_S = 10.0  # a refused experiment is tried again (the blast radius may free up, the SLO recover)


def _action(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "StressChaos":
        return "stress"
    return str(spec.get("action") or "")


def _target(r: Obj) -> str:
    """What a fault is applied to: the record's id, prefixed ``target:`` on a NetworkChaos's target side."""
    return f"target:{r['id']}" if r.get("selectorKey") == ".Target" else str(r["id"])


def is_paused(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


def desired_phase(obj: Obj, one_shot: bool, now: datetime) -> tuple[str, float | None]:
    """``("Run"|"Stop", seconds until the duration ends or None)``: Chaos Mesh's CalcDesiredPhase."""
    m = obj.get("metadata") or {}
    if m.get("deletionTimestamp"):
        return "Stop", None
    if one_shot:
        return "Run", None
    until: float | None = None
    dur = (obj.get("spec") or {}).get("duration")
    if dur:
        created = parse_time(str(m.get("creationTimestamp") or now_rfc3339()))
        left = created.timestamp() + parse_go_duration(str(dur)) - now.timestamp()
        if left <= 0:
            return "Stop", None
        until = left
    if is_paused(obj):
        return "Stop", until
    return "Run", until


def conditions(obj: Obj, records: list[Obj] | None, reason: str = "") -> list[Obj]:
    """Chaos Mesh's four conditions from the records; ``reason`` explains AllInjected False when set."""
    sel = records is not None and len(records) > 0
    inj = sel and all(r["phase"] == INJECTED for r in records or [])
    rec = sel and all(r["phase"] == NOT_INJECTED for r in records or [])
    out = [{"type": "Selected", "status": "True" if sel else "False"},
           {"type": "AllInjected", "status": "True" if inj else "False"},
           {"type": "AllRecovered", "status": "True" if rec else "False"},
           {"type": "Paused", "status": "True" if is_paused(obj) else "False"}]
    if reason:
        out[1]["reason"] = reason
    return out


def _event(type_: str, op: str, message: str = "") -> Obj:
    ev: Obj = {"type": type_, "operation": op, "timestamp": now_rfc3339()}
    if message:
        ev["message"] = message
    return ev


def _push(record: Obj, ev: Obj) -> None:
    events = record.setdefault("events", [])
    events.append(ev)
    del events[:-MAX_EVENTS]


class ChaosReconciler:
    """Reconciles one chaos kind (a ``controllers.Reconciler``); pod events wake the experiments on them."""

    def __init__(self, kind: str, client: KubeClient, *, node: NodeHooks | None, store: RevStore,
                 report: ChaosReport, mesh: FaultTable | None = None, guard: Guard | None = None) -> None:
        self.kind = kind
        self.guard = guard  # the namespaces' guard rails (chaos.guard), checked before and while injecting
        self.mesh = mesh  # the service proxy's fault table: HTTPChaos and NetworkChaos go there
        self.name = f"chaos-{kind.lower()}"
        self.primary = (API_VERSION, kind)
        self.secondary: Sequence[tuple[str, str]] = [("v1", "Pod")]
        self.client = client
        self.node = node
        self.store = store
        self.report = report
        self._by_pod: dict[str, set[str]] = {}  # "ns/pod" -> experiment keys with a record on it
        self._faults: dict[str, Fault | None] = {}

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        if kind == self.kind:
            return [f"{m.get('namespace') or ''}/{m.get('name') or ''}"]
        return sorted(self._by_pod.get(f"{m.get('namespace')}/{m.get('name')}", ()))

    def _index(self, key: str, records: list[Obj]) -> None:
        for keys in self._by_pod.values():
            keys.discard(key)
        for r in records:
            ns, pod = r["id"].split("/")[:2]
            self._by_pod.setdefault(f"{ns}/{pod}", set()).add(key)

    def _fault(self, obj: Obj) -> Fault | None:
        """One fault object per action, kept: a stressor's process is awaited by the one that started it."""
        action = _action(obj)
        if action not in self._faults and self.kind in ("HTTPChaos", "NetworkChaos"):
            mesh = self.mesh
            self._faults[action] = None if mesh is None else (
                MeshHttpChaos(self.client, mesh) if self.kind == "HTTPChaos" else MeshNetworkChaos(self.client, mesh))
        if action not in self._faults and self.kind in SHIM_KINDS:
            self._faults[action] = shim_fault_for(self.kind, action, client=self.client, node=self.node)
        if action not in self._faults:
            self._faults[action] = fault_for(self.kind, action, client=self.client, node=self.node, store=self.store)
        return self._faults[action]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            obj = await self.client.get(API_VERSION, self.kind, name, ns)
        except NotFoundError:
            self._index(key, [])
            return None
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", self.kind)
        status = obj.get("status") or {}
        experiment = status.get("experiment") or {}
        # a copy: the records change below, and the status is written only when it differs from the stored one
        records: list[Obj] | None = copy.deepcopy(experiment.get("containerRecords"))
        fault = self._fault(obj)
        why_not = "" if fault is not None else self._why_not(obj)
        try:
            phase, until = desired_phase(obj, fault.one_shot if fault is not None else False, datetime.now(UTC))
        except ChaosSpecError as e:
            await self._refuse(obj, str(e))
            return None
        deleting = bool(obj["metadata"].get("deletionTimestamp"))
        check = getattr(fault, "check", None)
        if check is not None and not deleting and (records is None or phase == "Run"):
            try:
                check(obj)  # an invalid spec is refused with its field path before anything is injected
            except ChaosSpecError as e:
                await self._refuse(obj, str(e))
                return None
        note = getattr(fault, "note", None)
        where = str(note(obj)) if note is not None else ""  # where (and only where) the fault is enforced
        if fault is not None and not deleting and FINALIZER not in (obj["metadata"].get("finalizers") or []):
            obj["metadata"]["finalizers"] = [*(obj["metadata"].get("finalizers") or []), FINALIZER]
            await self.client.update(obj)
            return 0.0
        if records is None and phase == "Run":
            try:
                records = await self._select(obj)
            except ChaosSpecError as e:
                await record_event(self.client, obj, "Warning", "Failed", f"Failed to select targets: {e}", COMPONENT)
                await self._write_status(obj, phase, None, str(e) if why_not == "" else why_not, selected_reason=str(e))
                return None
            refused = await self._guard_refuses(obj, fault, records, phase)
            if refused:
                return GUARD_RETRY_S
        elif records and phase == "Run" and not deleting and await self._guard_halts(obj, fault, records):
            return 0.0  # paused: the next pass (at once) reverts every fault
        records = records or []  # none selected yet (paused, or nothing matched): selected when it runs
        self._index(key, records)
        if fault is not None:
            for r in records:
                await self._step(obj, fault, r, phase)
        await self._write_status(obj, phase, records or None, why_not or where)
        if deleting and all(r["phase"] == NOT_INJECTED for r in records):
            await self._drop_finalizer(obj)
            return None
        if fault is not None and any(r["phase"] != (INJECTED if phase == "Run" else NOT_INJECTED) for r in records):
            return RETRY_S  # a failed apply/recover is retried (a target not running yet, a store hiccup)
        if fault is not None and phase == "Run" and not fault.one_shot:
            return min(until, 5.0) if until is not None else 5.0  # check the fault is still in place
        return until

    async def _guard_refuses(self, obj: Obj, fault: Fault | None, records: list[Obj], phase: str) -> bool:
        """Refuse newly selected targets a namespace guard forbids: nothing injected, the reason in the status."""
        if self.guard is None or fault is None:
            return False
        why = await self.guard.refuse(obj, records)
        if why is None:
            return False
        cur = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        if cur.get("AllInjected", {}).get("reason") != why:
            await record_event(self.client, obj, "Warning", "GuardRefused", why, COMPONENT)
        await self._write_status(obj, phase, None, why)
        return True

    async def _guard_halts(self, obj: Obj, fault: Fault | None, records: list[Obj]) -> bool:
        """Halt a running experiment whose namespace's SLO guard is crossed: the pause annotation, an event
        and a change event; True when it was halted."""
        if self.guard is None or fault is None or fault.one_shot:
            return False
        why = await self.guard.halt_reason(obj, records)
        if why is None:
            return False
        m = obj["metadata"]
        await self.client.patch(API_VERSION, self.kind, m["name"], {"metadata": {"annotations": {PAUSE_ANNOTATION:
                                                                                                 "true"}}},
                                namespace=m["namespace"])
        await record_event(self.client, obj, "Warning", "GuardHalted", why, COMPONENT)
        await self.report.halt(f"guard ({why})", [f"{self.kind} {m['namespace']}/{m['name']}"])
        return True

    def _why_not(self, obj: Obj) -> str:
        if self.kind in SHIM_KINDS and self.node is not None:
            why = self.node.chaos_shim()
            if why:
                return f"NotInjectedYet: {why}"
        elif self.kind in NOT_YET_INJECTED:
            return f"NotInjectedYet: {NOT_YET_INJECTED[self.kind]}"
        if self.kind == "PodChaos" and self.node is None:
            return "NotInjectedYet: pod-failure and container-kill need pitwall's node (kube.enabled with a node)"
        return f"NotSupported: action {_action(obj)!r}"

    async def _select(self, obj: Obj) -> list[Obj]:
        spec = obj.get("spec") or {}
        pods = await select_pods(self.client, obj["metadata"]["namespace"], spec.get("selector") or {})
        if not pods:
            raise ChaosSpecError("no target has been selected")
        chosen = filter_by_mode(pods, str(spec.get("mode") or ""), str(spec.get("value") or ""))
        containers: list[str] | None = None
        if self.kind == "StressChaos" or (self.kind == "PodChaos" and _action(obj) == "container-kill"):
            containers = [str(c) for c in spec.get("containerNames") or []]
            if not containers and _action(obj) == "container-kill":  # Chaos Mesh's webhook refuses it
                raise ChaosSpecError("spec.containerNames: the name of container is required on container-kill "
                                     "action")
        elif self.kind in ("NetworkChaos", "HTTPChaos"):
            containers = None
        elif self.kind in ("IOChaos", "TimeChaos", "DNSChaos"):
            containers = [str(c) for c in spec.get("containerNames") or []]
        records = [{"id": t, "selectorKey": ".", "phase": NOT_INJECTED, "injectedCount": 0, "recoveredCount": 0}
                   for t in target_ids(chosen, containers)]
        target = spec.get("target") if self.kind == "NetworkChaos" else None
        if isinstance(target, dict) and target.get("selector") is not None:
            # the other side of a NetworkChaos (direction to/from/both), selected with its own mode
            others = await select_pods(self.client, obj["metadata"]["namespace"], target.get("selector") or {})
            if others:
                picked = filter_by_mode(others, str(target.get("mode") or ""), str(target.get("value") or ""))
                records += [{"id": t, "selectorKey": ".Target", "phase": NOT_INJECTED, "injectedCount": 0,
                             "recoveredCount": 0} for t in target_ids(picked, None)]
        return records

    async def _step(self, obj: Obj, fault: Fault, r: Obj, phase: str) -> None:
        exp = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        action = _action(obj)
        if phase == "Run" and r["phase"] == INJECTED and not fault.one_shot and not await fault.active(obj, _target(r)):
            await self._do(fault.recover, obj, r, "Recover", exp, action, note="the fault was no longer in place")
        if phase == "Run" and r["phase"] != INJECTED:
            await self._do(fault.apply, obj, r, "Apply", exp, action)
        elif phase == "Stop" and r["phase"] != NOT_INJECTED:
            await self._do(fault.recover, obj, r, "Recover", exp, action)

    async def _do(self, fn: Any, obj: Obj, r: Obj, op: str, exp: str, action: str, note: str = "") -> None:
        try:
            await fn(obj, _target(r))
        except (FaultError, ChaosSpecError, OSError) as e:
            last = (r.get("events") or [{}])[-1]
            if last.get("type") == "Failed" and last.get("operation") == op and last.get("message") == str(e):
                return  # the same failure again (a retry): reported once
            _push(r, _event("Failed", op, str(e)))
            await record_event(self.client, obj, "Warning", "Failed", f"Failed to {op.lower()} chaos: {e}", COMPONENT)
            await self.report.fault(op, self.kind, action, exp, r["id"], ok=False, message=str(e))
            return
        if op == "Apply":
            r["phase"] = INJECTED
            r["injectedCount"] = int(r.get("injectedCount") or 0) + 1
            await record_event(self.client, obj, "Normal", "Applied", f"Successfully apply chaos for {r['id']}",
                               COMPONENT)
        else:
            r["phase"] = NOT_INJECTED
            r["recoveredCount"] = int(r.get("recoveredCount") or 0) + 1
            await record_event(self.client, obj, "Normal", "Recovered", f"Successfully recover chaos for {r['id']}",
                               COMPONENT)
        _push(r, _event("Succeeded", op, note))
        await self.report.fault(op, self.kind, action, exp, r["id"], message=note)

    async def _write_status(self, obj: Obj, phase: str, records: list[Obj] | None, reason: str,
                            selected_reason: str = "") -> None:
        exp: Obj = {"desiredPhase": phase}
        if records is not None:
            exp["containerRecords"] = records
        conds = conditions(obj, records, reason)
        if selected_reason:
            conds[0]["reason"] = selected_reason
        want = {"conditions": conds, "experiment": exp}
        await self.client.modify(obj, lambda o: o.__setitem__("status", want), status=True)

    async def _drop_finalizer(self, obj: Obj) -> None:
        def drop(o: Obj) -> None:
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or [] if f != FINALIZER]

        m = obj["metadata"]
        try:
            cur = await self.client.get(API_VERSION, self.kind, m["name"], m["namespace"])
        except NotFoundError:
            return
        await self.client.modify(cur, drop)

    async def _refuse(self, obj: Obj, message: str) -> None:
        await record_event(self.client, obj, "Warning", "Failed", message, COMPONENT)
        await self._write_status(obj, "Stop", (obj.get("status") or {}).get("experiment", {}).get("containerRecords"),
                                 f"InvalidSpec: {message}")
