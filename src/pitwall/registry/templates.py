"""``ConfigTemplate`` (``pitwall.dev/v1``): consul-template's renderer as a Kubernetes kind.

A ConfigTemplate's ``spec.template`` (``template.py``'s language) is rendered
from the Consul KV and catalog into ``spec.target.configMap``'s key
``spec.target.key`` (the ConfigMap is created, owned by the ConfigTemplate,
when absent). Each render records what it read (keys, ``ls``/``tree``
prefixes, services); the registry's ``WatchHub`` hands this controller every
store event, and an event under something a template read queues that
template, so a KV put or an endpoint change re-renders at once, with no
polling. The ConfigMap is written only when the text changed; then
``spec.action`` runs: ``none`` (the node refreshes mounted ConfigMaps in
place), ``restart`` (each Deployment in ``spec.deployments`` rolls through
``ReloadController.roll``, Reloader's annotation), ``signal`` (``spec.signal``
to the main process of the selected containers, through the node's
container process groups). A render that fails (a syntax error, a missing
``key``, an output over the limit) keeps the previous text and says why in
the status and an Event.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal as signals
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pitwall.controllers import object_key, record_event
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import Conflict, KubeClient, NotFoundError, match_label_selector_object
from pitwall.registry.agent import AGENT_PREFIX
from pitwall.registry.catalog import KUBE_PREFIX, Catalog, consul_name
from pitwall.registry.kv import KVStore
from pitwall.registry.model import KV_PREFIX
from pitwall.registry.reload import ReloadController
from pitwall.registry.template import MissingKey, Record, TemplateError, parse
from pitwall.storage.revstore import Event

__all__ = ["API_VERSION", "COMPONENT", "KIND", "ConfigTemplateController", "Deps", "Reader"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]

API_VERSION = "pitwall.dev/v1"
KIND = "ConfigTemplate"
COMPONENT = "pitwall-config-template"
MAX_DEPENDENCIES = 1024  # distinct keys, prefixes and services one template may read
GroupsOf = Callable[[str, str], dict[str, int]]  # (namespace, pod) -> container -> process group


@dataclass
class Deps:
    """What one render read: a change under any of it re-renders the template."""

    keys: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    all_services: bool = False  # read ``services`` (the whole catalog)

    def count(self) -> int:
        return len(self.keys) + len(self.prefixes) + len(self.services)

    def to_status(self) -> Obj:
        return {"keys": sorted(self.keys), "prefixes": sorted(self.prefixes),
                "services": sorted(self.services) + (["*"] if self.all_services else [])}


class Reader:
    """The template functions' data (``template.Data``) from the KV and the catalog, recording ``deps``."""

    def __init__(self, kv: KVStore, catalog: Catalog, env: dict[str, str]) -> None:
        self.kv, self.catalog, self._env = kv, catalog, env
        self.deps = Deps()
        self._instances: list[Any] | None = None  # one catalog read per render

    def _note(self) -> None:
        if self.deps.count() > MAX_DEPENDENCIES:
            raise TemplateError(f"the template reads more than {MAX_DEPENDENCIES} keys, prefixes and services")

    async def key(self, path: str) -> str | None:
        self.deps.keys.add(path)
        self._note()
        entry, _ = await self.kv.get(path)
        return None if entry is None else entry.value.decode("utf-8", errors="replace")

    async def pairs(self, prefix: str) -> list[tuple[str, str, int]]:
        self.deps.prefixes.add(prefix)
        self._note()
        entries, _ = await self.kv.tree(prefix)
        return [(e.key, e.value.decode("utf-8", errors="replace"), e.flags) for e in entries]

    async def _all(self) -> list[Any]:
        if self._instances is None:
            self._instances, _ = await self.catalog.instances()
        return self._instances

    async def service(self, name: str, tag: str, statuses: frozenset[str]) -> list[Record]:
        self.deps.services.add(name)
        self._note()
        out = []
        for i in await self._all():
            s = i.service
            if i.name != name or (tag and tag not in s["Tags"]) or i.status() not in statuses:
                continue
            out.append(Record(ID=s["ID"], Name=s["Service"], Tags=list(s["Tags"]), Address=s["Address"] or i.node_address,
                              Port=s["Port"], Node=i.node, NodeAddress=i.node_address,
                              ServiceMeta=dict(s.get("Meta") or {}), Status=i.status()))
        return sorted(out, key=lambda r: (r["Node"], r["ID"]))

    async def services(self) -> list[Record]:
        self.deps.all_services = True
        tags: dict[str, set[str]] = {}
        for i in await self._all():
            tags.setdefault(i.name, set()).update(i.service["Tags"])
        return [Record(Name=n, Tags=sorted(t)) for n, t in sorted(tags.items())]

    def env(self, name: str) -> str:
        return self._env.get(name, "")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: bool, reason: str, message: str, old: list[Obj]) -> list[Obj]:
    prev = next((c for c in old if c.get("type") == "Rendered"), None)
    s = "True" if status else "False"
    when = prev["lastTransitionTime"] if prev and prev.get("status") == s and prev.get("lastTransitionTime") \
        else _now()
    return [{"type": "Rendered", "status": s, "reason": reason, "message": message[:1024],
             "lastTransitionTime": when}]


class ConfigTemplateController:
    """A ``controllers.loop.Reconciler`` over ConfigTemplates (their ConfigMaps as the secondary kind), queued
    also by the KV and catalog changes their renders read (``on_events``, a ``WatchHub`` listener)."""

    name = COMPONENT
    primary = (API_VERSION, KIND)
    secondary: Sequence[tuple[str, str]] = (("v1", "ConfigMap"),)

    def __init__(self, client: KubeClient, kv: KVStore, catalog: Catalog, reloader: ReloadController, *,
                 changes: ChangeSink | None = None, groups_of: GroupsOf | None = None) -> None:
        self.client, self.kv, self.catalog, self.reloader = client, kv, catalog, reloader
        self.changes = changes
        self.groups_of = groups_of
        self.enqueue: Callable[[str], None] | None = None  # the runner's, set by the wiring
        self.deps: dict[str, Deps] = {}
        self._by_key: dict[str, set[str]] = {}  # KV key -> templates that read it
        self.renders = self.writes = self.actions = 0

    # ---- queueing --------------------------------------------------------------------------------------

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        if kind == KIND:
            return [object_key(obj)]
        return [f"{m.get('namespace', '')}/{o['name']}" for o in m.get("ownerReferences") or []
                if o.get("kind") == KIND and str(o.get("apiVersion", "")).startswith("pitwall.dev/")]

    def on_events(self, batch: list[Event]) -> None:
        """Queue the templates whose last render read a key, prefix or service ``batch`` changed."""
        if self.enqueue is None or not self.deps:
            return
        woken: set[str] = set()
        for ev in batch:
            woken |= self._readers_of(ev.kv.key)
        for t in woken:
            self.enqueue(t)

    def _readers_of(self, store_key: str) -> set[str]:
        if store_key.startswith(KV_PREFIX):
            key = store_key[len(KV_PREFIX):]
            out = set(self._by_key.get(key, ()))
            out.update(t for t, d in self.deps.items() if any(key.startswith(p) for p in d.prefixes))
            return out
        if store_key.startswith(KUBE_PREFIX):  # /registry/services/{specs,endpoints}/<ns>/<name>
            parts = store_key[len(KUBE_PREFIX):].split("/")
            name = consul_name(parts[1], parts[2]) if len(parts) >= 3 else ""
            return {t for t, d in self.deps.items() if d.all_services or name in d.services}
        if store_key.startswith(AGENT_PREFIX):  # the agent's own services and checks: any service may change
            return {t for t, d in self.deps.items() if d.all_services or d.services}
        return set()

    def _track(self, key: str, deps: Deps | None) -> None:
        old = self.deps.pop(key, None)
        for k in old.keys if old else ():
            users = self._by_key.get(k)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._by_key[k]
        if deps is not None:
            self.deps[key] = deps
            for k in deps.keys:
                self._by_key.setdefault(k, set()).add(key)

    # ---- reconciling ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            obj = await self.client.get(API_VERSION, KIND, name, ns)
        except NotFoundError:
            self._track(key, None)  # its ConfigMap goes with it (owner reference)
            return None
        spec = obj.get("spec") or {}
        status = dict(obj.get("status") or {})
        self.renders += 1
        reader = Reader(self.kv, self.catalog, {str(k): str(v) for k, v in (spec.get("env") or {}).items()})
        try:
            text = await parse(str(spec.get("template") or "")).render(reader)
        except TemplateError as e:
            self._track(key, reader.deps)  # a missing key or a fixed value re-renders it
            reason = "WaitingForKey" if isinstance(e, MissingKey) else "RenderFailed"
            said = [c.get("message") for c in status.get("conditions") or [] if c.get("reason") == reason]
            if str(e)[:1024] not in said:  # one Event per distinct failure, not one per retry
                await record_event(self.client, obj, "Warning", reason, str(e), COMPONENT)
            await self._status(obj, status, reader.deps, False, reason, str(e))
            return None
        self._track(key, reader.deps)
        digest = hashlib.sha256(text.encode()).hexdigest()
        target = spec.get("target") or {}
        previous = await self._write(obj, str(target.get("configMap")), str(target.get("key")), text)
        if previous is not False:
            self.writes += 1
            status["renderedAt"] = _now()
            await self._announce(obj, target, digest, created=previous is None)
            if previous is not None:
                status["actions"] = int(status.get("actions", 0)) + await self._act(obj, spec, digest)
        status["hash"] = digest
        await self._status(obj, status, reader.deps, True, "Rendered",
                           f"configmap/{target.get('configMap')} key {target.get('key')}: {len(text)} bytes")
        return None

    async def _write(self, obj: Obj, cm_name: str, cm_key: str, text: str) -> str | bool | None:
        """Put ``text`` into the ConfigMap: False when it already held it, else the key's previous text (None
        when new)."""
        ns = obj["metadata"]["namespace"]
        try:
            cm = await self.client.get("v1", "ConfigMap", cm_name, ns)
        except NotFoundError:
            owner = {"apiVersion": API_VERSION, "kind": KIND, "name": obj["metadata"]["name"],
                     "uid": obj["metadata"].get("uid", ""), "controller": True, "blockOwnerDeletion": True}
            # created meanwhile by someone else: AlreadyExists, and the runner's retry writes into it
            await self.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": cm_name, "namespace": ns, "ownerReferences": [owner],
                "labels": {"app.kubernetes.io/managed-by": COMPONENT}}, "data": {cm_key: text}},
                field_manager=COMPONENT)
            return None
        data = cm.get("data") or {}
        if data.get(cm_key) == text:
            return False
        previous: str | None = data.get(cm_key)
        patch = {"metadata": {"resourceVersion": cm["metadata"].get("resourceVersion")}, "data": {cm_key: text}}
        await self.client.patch("v1", "ConfigMap", cm_name, patch, namespace=ns, patch_type="merge",
                                field_manager=COMPONENT)
        return previous

    async def _act(self, obj: Obj, spec: Obj, digest: str) -> int:
        """Runs ``spec.action`` after a change; how many Deployments rolled or containers were signalled."""
        action = spec.get("action") or "none"
        ns = obj["metadata"]["namespace"]
        ref = f"configmap/{(spec.get('target') or {}).get('configMap')}"
        done = 0
        if action == "restart":
            for d in spec.get("deployments") or []:
                if await self.reloader.roll(ns, str(d), ref, digest[:40], component=COMPONENT):
                    done += 1
                else:
                    await record_event(self.client, obj, "Warning", "RestartFailed",
                                       f"Deployment {ns}/{d} does not exist", COMPONENT)
        elif action == "signal":
            done = await self._signal(obj, spec)
        self.actions += done
        return done

    async def _signal(self, obj: Obj, spec: Obj) -> int:
        """``spec.signal`` to the main process of each selected container (the process-group leader the node
        runs it as: a container's PID 1)."""
        ns = obj["metadata"]["namespace"]
        sig_name = str(spec.get("signal") or "SIGHUP")
        sig = getattr(signals, sig_name, None)
        if not isinstance(sig, signals.Signals) or self.groups_of is None:
            await record_event(self.client, obj, "Warning", "SignalFailed",
                               f"cannot send {sig_name}: " + ("no node runs pods here" if sig else "unknown signal"),
                               COMPONENT)
            return 0
        selector = spec.get("podSelector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):  # never every pod
            await record_event(self.client, obj, "Warning", "SignalFailed",
                               "action signal needs a non-empty spec.podSelector", COMPONENT)
            return 0
        wanted = set(spec.get("containers") or [])
        sent: list[str] = []
        for pod in (await self.client.list("v1", "Pod", ns)).items:
            if not match_label_selector_object(selector, pod["metadata"].get("labels")):
                continue
            pname = pod["metadata"]["name"]
            for cname, pgid in self.groups_of(ns, pname).items():
                if wanted and cname not in wanted:
                    continue
                try:
                    os.kill(pgid, sig)
                    sent.append(f"{pname}/{cname}")
                except ProcessLookupError:
                    continue
        await record_event(self.client, obj, "Normal" if sent else "Warning", "Signalled" if sent else "SignalFailed",
                           f"{sig_name} sent to {', '.join(sent)}" if sent else
                           f"no running container on this node matched spec.podSelector for {sig_name}", COMPONENT)
        return len(sent)

    async def _announce(self, obj: Obj, target: Obj, digest: str, *, created: bool) -> None:
        what = f"configmap/{target.get('configMap')} key {target.get('key')}"
        await record_event(self.client, obj, "Normal", "Rendered",
                           f"{'created' if created else 'updated'} {what} (sha256 {digest[:12]})", COMPONENT)
        if self.changes is None:
            return
        try:
            await self.changes.record(ChangeEvent(
                kind="config", summary=f"ConfigTemplate {object_key(obj)} rendered into {what}",
                source=COMPONENT, service=object_key(obj), details={"hash": digest, "action": (obj.get("spec") or {})
                                                                     .get("action") or "none"}))
        except Exception:  # the ConfigMap is written; a lost timeline entry must not re-run the action
            log.exception("template change event not recorded", extra={"template": object_key(obj)})

    async def _status(self, obj: Obj, status: Obj, deps: Deps, ok: bool, reason: str, message: str) -> None:
        new = {**status, "observedGeneration": obj["metadata"].get("generation", 0),
               "dependencies": deps.to_status(), "actions": int(status.get("actions", 0))}
        new["conditions"] = _condition(ok, reason, message, status.get("conditions") or [])
        if new == (obj.get("status") or {}):
            return
        for _ in range(5):  # a concurrent edit of the spec must not lose the status (its action count)
            obj["status"] = new
            try:
                await self.client.update_status(obj, field_manager=COMPONENT)
                return
            except NotFoundError:
                return
            except Conflict:
                try:
                    obj = await self.client.get(API_VERSION, KIND, obj["metadata"]["name"], obj["metadata"]["namespace"])
                except NotFoundError:
                    return
        log.warning("ConfigTemplate status not written after conflicts", extra={"template": object_key(obj)})
