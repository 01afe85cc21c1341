"""Tracked configs: the ConfigMaps and Secrets a Canary's target uses, as Flagger's ConfigTracker
(``pkg/canary/config_tracker.go``, v1.44.0) handles them.

The target's pod spec is scanned (volumes, projected volumes, ``env``
``valueFrom`` and ``envFrom`` of containers and init containers). Each
referenced ConfigMap and Secret (Secrets of type Opaque, basic-auth, ssh-auth
or tls only; not one annotated ``flagger.app/config-tracking: disabled``) is
copied to ``<name>-primary`` (owned by the Canary) when the primary is made
and at each promotion, and the primary's pod spec is rewritten to use the
copies. The checksums (sha256 of the data's JSON, first 8 bytes in hex) are
kept in the Canary's ``status.trackedConfigs`` as ``{"configmap/<name>":
sum}``; a changed checksum starts an analysis as a new pod template does. A
missing reference that is not ``optional`` stops the tick with an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases.model import API_VERSION, CANARY, CanaryView

TOOLKIT = "toolkit.fluxcd.io"  # Flux's labels and annotations, never copied to what Flagger makes

__all__ = ["CONFIG_TRACKING", "TOOLKIT", "ConfigError", "ConfigRef", "apply_primary_configs", "changed", "checksum",
           "include_by_prefix", "sync_primary_configs", "target_configs", "tracked", "without_flux"]

CONFIG_TRACKING = "flagger.app/config-tracking"
CONFIGMAP, SECRET = "configmap", "secret"
_SECRET_TYPES = ("Opaque", "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth", "kubernetes.io/tls")
Obj = dict[str, Any]


class ConfigError(Exception):
    """A required ConfigMap or Secret cannot be read (the tick stops with a Warning)."""


@dataclass(frozen=True)
class ConfigRef:
    kind: str  # configmap | secret
    name: str
    checksum: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def checksum(data: Any) -> str:
    """Flagger's checksum: sha256 over Go's JSON of the data (sorted keys, HTML-escaped), 8 bytes in hex."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return hashlib.sha256(text.encode()).digest()[:8].hex()


def _required(ref: Obj) -> bool:
    return not bool(ref.get("optional"))


def _refs(pod: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(kind, the object holding the name, the name's field) of every config reference in a pod spec."""
    for v in pod.get("volumes") or []:
        if isinstance(v.get("configMap"), dict):
            yield CONFIGMAP, v["configMap"], "name"
        if isinstance(v.get("secret"), dict):
            yield SECRET, v["secret"], "secretName"
        for src in (v.get("projected") or {}).get("sources") or []:
            if isinstance(src.get("configMap"), dict):
                yield CONFIGMAP, src["configMap"], "name"
            if isinstance(src.get("secret"), dict):
                yield SECRET, src["secret"], "name"
    for c in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            if isinstance(vf.get("configMapKeyRef"), dict):
                yield CONFIGMAP, vf["configMapKeyRef"], "name"
            elif isinstance(vf.get("secretKeyRef"), dict):
                yield SECRET, vf["secretKeyRef"], "name"
        for ef in c.get("envFrom") or []:
            if isinstance(ef.get("configMapRef"), dict):
                yield CONFIGMAP, ef["configMapRef"], "name"
            elif isinstance(ef.get("secretRef"), dict):
                yield SECRET, ef["secretRef"], "name"


def _disabled(obj: Obj) -> bool:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(CONFIG_TRACKING, "")).startswith("disable")


async def _ref(client: KubeClient, kind: str, name: str, namespace: str) -> ConfigRef | None:
    obj = await client.get("v1", "ConfigMap" if kind == CONFIGMAP else "Secret", name, namespace)
    if kind == SECRET and str(obj.get("type") or "Opaque") not in _SECRET_TYPES:
        return None  # registry secrets go with the service account
    if _disabled(obj):
        return None
    return ConfigRef(kind, name, checksum(obj.get("data")))


async def target_configs(client: KubeClient, namespace: str, target: Obj) -> dict[str, ConfigRef]:
    """The tracked ConfigMaps and Secrets of the target Deployment, by ``kind/name``."""
    pod = (((target.get("spec") or {}).get("template") or {}).get("spec")) or {}
    wanted: dict[tuple[str, str], bool] = {}
    for kind, holder, field in _refs(pod):
        name = str(holder.get(field) or "")
        if name:
            wanted[(kind, name)] = _required(holder)
    out: dict[str, ConfigRef] = {}
    for (kind, name), required in sorted(wanted.items()):
        try:
            ref = await _ref(client, kind, name, namespace)
        except NotFoundError as e:
            if required:
                raise ConfigError(f"{kind} {name}.{namespace} get query error: {e}") from None
            continue
        if ref is not None:
            out[ref.key] = ref
    return out


def tracked(refs: dict[str, ConfigRef]) -> dict[str, str]:
    """``status.trackedConfigs``: checksum by ``kind/name``."""
    return {k: r.checksum for k, r in sorted(refs.items())}


def changed(cd: CanaryView, refs: dict[str, ConfigRef]) -> bool:
    """Flagger's HasConfigChanged: a tracked config added, removed or with another checksum."""
    known = cd.status.get("trackedConfigs")
    if not isinstance(known, dict):
        return bool(refs)
    return known != tracked(refs)


def apply_primary_configs(pod: Obj, refs: dict[str, ConfigRef]) -> Obj:
    """The pod spec with every tracked reference renamed to its ``-primary`` copy (ApplyPrimaryConfigs)."""
    out = copy.deepcopy(pod)
    for kind, holder, field in _refs(out):
        if f"{kind}/{holder.get(field)}" in refs:
            holder[field] = f"{holder[field]}-primary"
    return out


def without_flux(meta: dict[str, Any] | None) -> dict[str, str]:
    """Flagger's filterMetadata: every key but Flux's ``toolkit.fluxcd.io`` ones."""
    return {k: v for k, v in (meta or {}).items() if TOOLKIT not in k}


def include_by_prefix(meta: dict[str, Any] | None, prefixes: Sequence[str]) -> dict[str, str]:
    """Flagger's includeLabelsByPrefix: the keys starting with one of ``prefixes`` (``*``: all), never Flux's
    ``toolkit.fluxcd.io`` ones (on a primary they would make Flux prune it as its own)."""
    return {k: v for k, v in (meta or {}).items() if TOOLKIT not in k
            and any(p == "*" or (p and k.startswith(p)) for p in prefixes)}


async def sync_primary_configs(client: KubeClient, cd: CanaryView, refs: dict[str, ConfigRef],
                               prefixes: Sequence[str] = ()) -> None:
    """Create or update ``<name>-primary`` for each tracked config (CreatePrimaryConfigs), with the original's
    labels that start with one of ``prefixes``."""
    owner = {"apiVersion": API_VERSION, "kind": CANARY, "name": cd.name, "uid": str(cd.meta.get("uid") or ""),
             "controller": True, "blockOwnerDeletion": True}
    for ref in refs.values():
        kind = "ConfigMap" if ref.kind == CONFIGMAP else "Secret"
        src = await client.get("v1", kind, ref.name, cd.namespace)
        body: Obj = {"apiVersion": "v1", "kind": kind,
                     "metadata": {"name": f"{ref.name}-primary", "namespace": cd.namespace,
                                  "labels": include_by_prefix((src.get("metadata") or {}).get("labels"), prefixes),
                                  "ownerReferences": [owner]}}
        for f in ("data", "binaryData", "type"):
            if f in src:
                body[f] = copy.deepcopy(src[f])
        try:
            old = await client.get("v1", kind, f"{ref.name}-primary", cd.namespace)
        except NotFoundError:
            await client.create(body)
            continue
        if all(old.get(f) == body.get(f) for f in ("data", "binaryData")) and \
                (old.get("metadata") or {}).get("labels", {}) == body["metadata"]["labels"]:
            continue

        def change(o: Obj, body: Obj = body) -> None:
            for f in ("data", "binaryData"):
                if f in body:
                    o[f] = copy.deepcopy(body[f])
                else:
                    o.pop(f, None)
            o["metadata"]["labels"] = body["metadata"]["labels"]

        await client.modify(old, change)
