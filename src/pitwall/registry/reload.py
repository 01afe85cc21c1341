"""Reload on config change, as Stakater Reloader does: a Deployment whose ConfigMap or Secret changed rolls.

The Deployment opts in with Reloader's annotations (on its own metadata):

- ``reloader.stakater.com/auto: "true"`` (or pitwall's ``pitwall.dev/reload-on-config: "true"``): every
  ConfigMap and Secret its pod template references (env ``valueFrom``, ``envFrom``, volumes, projected
  volumes, in containers and init containers);
- ``configmap.reloader.stakater.com/auto`` / ``secret.reloader.stakater.com/auto: "true"``: only the
  referenced ConfigMaps / Secrets;
- ``configmap.reloader.stakater.com/reload: "a,b"`` / ``secret.reloader.stakater.com/reload``: these named
  ones, referenced or not;
- ``reloader.stakater.com/search: "true"``: referenced ones that carry ``reloader.stakater.com/match: "true"``.

A ConfigMap or Secret annotated ``reloader.stakater.com/ignore: "true"`` never triggers a reload.

Reloader's annotation strategy: on a change the pod template gets
``reloader.stakater.com/last-reloaded-from`` (JSON: type, name, namespace, hash, containerRefs,
observedAt), so the Deployment controller rolls the pods. The hash is Reloader's: SHA-1 of the sorted
``key=value`` pairs joined by ``;``. To stay level-triggered (a change made while no leader ran still
reloads), the hashes last seen are kept on the Deployment's own metadata in ``pitwall.dev/config-hashes``;
the first sight of a Deployment (or of a newly referenced object) only records them, as Reloader does not
reload on create. A deleted ConfigMap or Secret does not reload (Reloader's ``reloadOnDelete`` default).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.controllers import object_key, record_event
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["HASHES_ANNOTATION", "LAST_RELOADED_FROM", "ReloadController", "Target", "config_hash", "targets_of"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]

R = "reloader.stakater.com"
AUTO = f"{R}/auto"
PITWALL_AUTO = "pitwall.dev/reload-on-config"
SEARCH = f"{R}/search"
MATCH = f"{R}/match"
IGNORE = f"{R}/ignore"
LAST_RELOADED_FROM = f"{R}/last-reloaded-from"
HASHES_ANNOTATION = "pitwall.dev/config-hashes"
KINDS = {"configmap": "ConfigMap", "secret": "Secret"}
COMPONENT = "pitwall-reloader"


@dataclass(frozen=True)
class Target:
    """A ConfigMap or Secret a Deployment reloads on: ``kind`` is "configmap" or "secret"."""

    kind: str
    name: str
    search: bool = False  # only if the object carries reloader.stakater.com/match: "true"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def _true(annotations: dict[str, Any], key: str) -> bool:
    return str(annotations.get(key, "")).lower() == "true"


def references(template: Obj) -> dict[str, list[str]]:
    """``"configmap/NAME"`` or ``"secret/NAME"`` -> the containers using it ("" for volumes)."""
    spec = template.get("spec") or {}
    out: dict[str, list[str]] = {}

    def add(kind: str, name: Any, container: str) -> None:
        if name:
            users = out.setdefault(f"{kind}/{name}", [])
            if container and container not in users:
                users.append(container)

    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        cname = str(c.get("name") or "")
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            add("configmap", (vf.get("configMapKeyRef") or {}).get("name"), cname)
            add("secret", (vf.get("secretKeyRef") or {}).get("name"), cname)
        for ef in c.get("envFrom") or []:
            add("configmap", (ef.get("configMapRef") or {}).get("name"), cname)
            add("secret", (ef.get("secretRef") or {}).get("name"), cname)
    for vol in spec.get("volumes") or []:
        add("configmap", (vol.get("configMap") or {}).get("name"), "")
        add("secret", (vol.get("secret") or {}).get("secretName"), "")
        for src in (vol.get("projected") or {}).get("sources") or []:
            add("configmap", (src.get("configMap") or {}).get("name"), "")
            add("secret", (src.get("secret") or {}).get("name"), "")
    return out


def targets_of(deployment: Obj) -> list[Target]:
    """What ``deployment``'s annotations ask to reload on (empty: it did not opt in)."""
    ann = (deployment.get("metadata") or {}).get("annotations") or {}
    refs = references((deployment.get("spec") or {}).get("template") or {})
    out: dict[str, Target] = {}
    auto = _true(ann, AUTO) or _true(ann, PITWALL_AUTO)
    search = _true(ann, SEARCH)
    for ref in refs:
        kind, _, name = ref.partition("/")
        if auto or _true(ann, f"{kind}.{AUTO}"):
            out[ref] = Target(kind, name)
        elif search:
            out.setdefault(ref, Target(kind, name, search=True))
    for kind in KINDS:
        for name in str(ann.get(f"{kind}.{R}/reload", "")).split(","):
            if name.strip():
                out[f"{kind}/{name.strip()}"] = Target(kind, name.strip())
    return list(out.values())


def config_hash(kind: str, obj: Obj) -> str:
    """Reloader's hash of a ConfigMap's or Secret's data: SHA-1 of sorted ``key=value`` joined by ``;``
    (a ConfigMap's binaryData as base64, a Secret's values decoded)."""
    values: list[bytes] = []
    if kind == "configmap":
        values += [f"{k}={v}".encode() for k, v in (obj.get("data") or {}).items()]
        values += [f"{k}={v}".encode() for k, v in (obj.get("binaryData") or {}).items()]
    else:
        for k, v in (obj.get("data") or {}).items():
            try:
                raw = base64.b64decode(str(v), validate=True)
            except ValueError:
                raw = str(v).encode()
            values.append(k.encode() + b"=" + raw)
        values += [f"{k}={v}".encode() for k, v in (obj.get("stringData") or {}).items()]
    return hashlib.sha1(b";".join(sorted(values)), usedforsecurity=False).hexdigest()


class ReloadController:
    """A ``controllers.loop.Reconciler`` over Deployments, woken by their ConfigMaps and Secrets."""

    name = COMPONENT
    primary = ("apps/v1", "Deployment")
    secondary: Sequence[tuple[str, str]] = (("v1", "ConfigMap"), ("v1", "Secret"))

    def __init__(self, client: KubeClient, changes: ChangeSink | None = None) -> None:
        self.client = client
        self.changes = changes
        # (namespace, "configmap/NAME") -> the Deployments that reload on it, and each Deployment's entries
        # (to replace them when it changes). A ConfigMap event wakes only those; a deleted Deployment's
        # entries stay until a reconcile finds it gone.
        self._users: dict[tuple[str, str], set[str]] = {}
        self._targets: dict[tuple[str, str], set[str]] = {}
        self.reloads = 0

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        ns = str(m.get("namespace") or "")
        if kind == "Deployment":
            self._index(ns, str(m.get("name") or ""), {t.ref for t in targets_of(obj)})
            return [object_key(obj)]
        if _true(m.get("annotations") or {}, IGNORE):
            return []
        ref = f"{'configmap' if kind == 'ConfigMap' else 'secret'}/{m.get('name') or ''}"
        return [f"{ns}/{name}" for name in sorted(self._users.get((ns, ref), ()))]

    def _index(self, ns: str, name: str, refs: set[str]) -> None:
        for ref in self._targets.pop((ns, name), set()) - refs:
            users = self._users.get((ns, ref))
            if users is not None:
                users.discard(name)
                if not users:
                    del self._users[(ns, ref)]
        if refs:
            self._targets[(ns, name)] = refs
            for ref in refs:
                self._users.setdefault((ns, ref), set()).add(name)

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            d = await self.client.get("apps/v1", "Deployment", name, ns)
        except NotFoundError:
            self._index(ns, name, set())
            return None
        targets = targets_of(d)
        ann = d["metadata"].get("annotations") or {}
        if not targets:
            return None
        try:
            recorded: dict[str, str] = orjson.loads(ann[HASHES_ANNOTATION])
        except (KeyError, orjson.JSONDecodeError, TypeError):
            recorded = {}
        first = HASHES_ANNOTATION not in ann
        now, changed = await self._hashes(ns, targets, recorded)
        if now == recorded and not first:
            return None
        patch: Obj = {"metadata": {"annotations": {HASHES_ANNOTATION: orjson.dumps(now).decode()}}}
        if changed and not first:
            patch["spec"] = _rollout(d, *changed[-1])
        d["metadata"]["annotations"] = {**ann, **patch["metadata"]["annotations"]}
        await self.client.patch("apps/v1", "Deployment", name, _with_version(patch, d), namespace=ns,
                                patch_type="merge", field_manager=COMPONENT)
        if "spec" in patch:
            await self._announce(d, [ref for ref, _ in changed])
        return None

    async def roll(self, namespace: str, name: str, ref: str, hash_: str, *, component: str = COMPONENT) -> bool:
        """Roll Deployment ``namespace/name`` as a change of ``ref`` ("configmap/NAME" or "secret/NAME",
        now hashing ``hash_``) does: the pod template gets ``LAST_RELOADED_FROM``, an Event and a change
        event say why. False when the Deployment does not exist. (Other controllers, the ConfigTemplate
        one, roll Deployments through this.)"""
        try:
            d = await self.client.get("apps/v1", "Deployment", name, namespace)
        except NotFoundError:
            return False
        patch = {"metadata": {"resourceVersion": d["metadata"].get("resourceVersion")},
                 "spec": _rollout(d, ref, hash_)}
        await self.client.patch("apps/v1", "Deployment", name, patch, namespace=namespace, patch_type="merge",
                                field_manager=component)
        await self._announce(d, [ref])
        return True

    async def _hashes(self, ns: str, targets: list[Target],
                      recorded: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The hashes of ``targets`` now (absent ones keep what was recorded), and those that changed."""
        now: dict[str, str] = {}
        changed: list[tuple[str, str]] = []
        for t in targets:
            try:
                obj = await self.client.get("v1", KINDS[t.kind], t.name, ns)
            except NotFoundError:
                if t.ref in recorded:
                    now[t.ref] = recorded[t.ref]
                continue
            oann = (obj.get("metadata") or {}).get("annotations") or {}
            if _true(oann, IGNORE) or (t.search and not _true(oann, MATCH)):
                continue
            h = config_hash(t.kind, obj)
            now[t.ref] = h
            if t.ref in recorded and recorded[t.ref] != h:
                changed.append((t.ref, h))
        return now, changed

    async def _announce(self, d: Obj, refs: list[str]) -> None:
        self.reloads += 1
        what = ", ".join(refs)
        await record_event(self.client, d, "Normal", "Reloaded",
                           f"{what} changed: rolling the pods (pod template annotation {LAST_RELOADED_FROM})",
                           COMPONENT)
        if self.changes is None:
            return
        try:
            await self.changes.record(ChangeEvent(
                kind="config", summary=f"Deployment {object_key(d)} reloaded: {what} changed",
                source=COMPONENT, service=object_key(d), details={"reloaded_from": refs}))
        except Exception:  # the rollout is under way; a lost timeline entry must not retry the reload
            log.exception("reload change event not recorded", extra={"deployment": object_key(d)})


def _rollout(d: Obj, ref: str, hash_: str) -> Obj:
    """The ``spec`` patch that rolls ``d``'s pods because ``ref`` changed (Reloader's annotation strategy)."""
    kind, _, cname = ref.partition("/")
    refs = references(d["spec"].get("template") or {})
    source = {"type": kind.upper(), "name": cname, "namespace": d["metadata"].get("namespace", ""), "hash": hash_,
              "containerRefs": refs.get(ref, []), "observedAt": int(time.time())}
    return {"template": {"metadata": {"annotations": {LAST_RELOADED_FROM: orjson.dumps(source).decode()}}}}


def _with_version(patch: Obj, d: Obj) -> Obj:
    """``patch`` guarded by the resourceVersion read, so a concurrent edit makes it retry (409)."""
    out = dict(patch)
    out["metadata"] = {**patch["metadata"], "resourceVersion": d["metadata"].get("resourceVersion")}
    return out

