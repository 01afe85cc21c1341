"""Per-kind rules applied on every write: defaulting, status reset, validation, generation, side effects.

The generic verbs in ``resources.py`` call these hooks; kind-specific
knowledge of the API machinery (not of what kinds mean to controllers) lives
here: built-in defaults and validation, custom objects against their CRD's
schema, CRDs registering their kinds, a Service's cluster IP, a Job's
generated selector.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import TYPE_CHECKING, Any

from pitwall.kube.crd import crd_status, prune_and_default, types_from_crd, validate_crd, validate_custom
from pitwall.kube.defaults import default_object
from pitwall.kube.errors import Cause, Invalid
from pitwall.kube.registry import Registry, ResourceType
from pitwall.kube.schemas import Node, node_for_definition
from pitwall.kube.validation import validate_builtin

if TYPE_CHECKING:
    from pitwall.kube.resources import Resources

__all__ = ["after_write", "drop_nulls", "prepare_create", "prepare_update", "spec_changed", "validate"]

Obj = dict[str, Any]

# Where Services get their cluster IPs unless the API is told otherwise (loopback: no root needed).
DEFAULT_SERVICE_CIDR = "127.96.0.0/16"


def _default(rt: ResourceType, obj: Obj) -> None:
    if rt.crd is not None:
        pruned = prune_and_default(obj, ((rt.crd.get("schema") or {}).get("openAPIV3Schema")), root=True)
        obj.clear()
        obj.update(pruned)
        return
    default_object(rt.kind, rt.group, obj)


def _free_form(node: Node) -> bool:
    """A position holding any JSON (``JSON``, ``x-kubernetes-preserve-unknown-fields``): nulls are values there."""
    sch = node.schema
    if sch.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return not any(k in sch for k in ("type", "properties", "additionalProperties", "items",
                                      "x-kubernetes-int-or-string", "anyOf", "format"))


def _drop_nulls(v: Any, node: Node | None) -> Any:
    if node is not None and _free_form(node):
        return v
    if isinstance(v, dict):
        return {k: _drop_nulls(x, node.child(k) if node is not None else None) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        item = node.items() if node is not None else None
        return [_drop_nulls(x, item) for x in v]
    return v


def drop_nulls(rt: ResourceType, obj: Obj) -> None:
    """Remove explicit nulls from map fields in place, as decoding into Go structs does: a built-in kind
    loses every null outside its free-form JSON fields; a custom object only in ``metadata`` (its schema's
    pruning decides for the rest, ``nullable`` keeps them)."""
    if rt.crd is not None:
        m = obj.get("metadata")
        if isinstance(m, dict):
            obj["metadata"] = _drop_nulls(m, None)
        return
    node = node_for_definition(rt.definition) if rt.definition else None
    out = _drop_nulls(obj, node)
    obj.clear()
    obj.update(out)


def prepare_create(rt: ResourceType, obj: Obj) -> None:
    if "status" in rt.subresources and rt.kind not in ("Namespace", "Node"):  # a node registers with its status
        obj.pop("status", None)
    if rt.kind == "Pod" and rt.group == "":
        obj["status"] = {"phase": "Pending", "qosClass": _qos(obj)}
    if rt.kind == "Job" and rt.group == "batch":
        _job_selector(obj)
    _default(rt, obj)
    if rt.kind == "CustomResourceDefinition":
        obj["status"] = crd_status(obj)


def prepare_update(rt: ResourceType, new: Obj, old: Obj) -> None:
    if rt.kind == "Job" and rt.group == "batch":
        spec, ospec = new.get("spec") or {}, old.get("spec") or {}
        if isinstance(spec, dict) and not spec.get("manualSelector"):
            spec.setdefault("selector", ospec.get("selector"))
    _default(rt, new)
    if rt.kind == "CustomResourceDefinition":
        new["status"] = {**(new.get("status") or {}), **crd_status(new)}
        if old.get("status"):
            new["status"]["conditions"] = old["status"].get("conditions", new["status"]["conditions"])
    if rt.kind == "Service" and rt.group == "":
        spec, ospec = new.get("spec"), old.get("spec") or {}
        if isinstance(spec, dict):
            for k in ("clusterIP", "clusterIPs"):
                if not spec.get(k) and ospec.get(k):
                    spec[k] = ospec[k]


def validate(registry: Registry, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
    if rt.crd is not None:
        return validate_custom(rt, obj, old)
    if rt.kind == "CustomResourceDefinition":
        causes = validate_crd(obj)
        if not causes and old is None:
            spec = obj.get("spec") or {}
            for t in types_from_crd(obj):
                existing = registry.get(t.group, t.version, t.plural)
                if existing is not None and existing.crd is None:
                    causes.append(Cause("spec.names.plural", "FieldValueInvalid",
                                        f"Invalid value: {json.dumps(spec.get('names', {}).get('plural'))}: "
                                        "conflicts with a built-in resource"))
                    break
        return causes
    return validate_builtin(rt.kind, rt.group, obj, old, rt.namespaced)


def spec_changed(rt: ResourceType, old: Obj, new: Obj) -> bool:
    """Whether ``generation`` moves: anything but metadata and status changed."""
    skip = {"metadata", "status"}
    keys = (set(old) | set(new)) - skip
    return any(old.get(k) != new.get(k) for k in keys)


async def after_write(res: Resources, rt: ResourceType, old: Obj | None, new: Obj | None) -> None:
    if rt.kind == "CustomResourceDefinition" and rt.group == "apiextensions.k8s.io":
        name = str(((new or old) or {}).get("metadata", {}).get("name", ""))
        if new is None:
            for t in types_from_crd(old or {}):
                await res.store.delete(t.prefix, prefix=True)
            res.registry.replace_crd(name, [])
        else:
            res.registry.replace_crd(name, types_from_crd(new))


async def admit_create(res: Resources, rt: ResourceType, obj: Obj, service_cidr: str) -> None:
    """Asynchronous create-time work: a Service's cluster IP from the service range."""
    if rt.kind != "Service" or rt.group != "":
        return
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("type") == "ExternalName":
        return
    want = spec.get("clusterIP")
    if want == "None":
        spec["clusterIPs"] = ["None"]
        return
    net = ipaddress.ip_network(service_cidr)
    used: set[str] = set()
    listed = await res.store.range(rt.prefix)
    for kv in listed.kvs:
        other = json.loads(res.plain_value(kv)).get("spec") or {}
        if other.get("clusterIP"):
            used.add(str(other["clusterIP"]))
    if want:
        try:
            ip = ipaddress.ip_address(want)
        except ValueError:
            raise Invalid("Service", "", str(obj.get("metadata", {}).get("name", "")), [
                Cause("spec.clusterIPs[0]", "FieldValueInvalid",
                      f'Invalid value: "{want}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)')
            ]) from None
        if str(ip) in used:
            raise Invalid("Service", "", str(obj.get("metadata", {}).get("name", "")), [
                Cause("spec.clusterIPs", "FieldValueInvalid",
                      f"Invalid value: []string{{\"{want}\"}}: failed to allocate IP {want}: provided IP is "
                      "already allocated")])
        spec["clusterIPs"] = [str(ip)]
        return
    size = net.num_addresses
    rng = random.Random()
    for _ in range(4096):
        cand = net.network_address + rng.randrange(1, max(2, size - 1))
        if str(cand) not in used:
            spec["clusterIP"] = str(cand)
            spec["clusterIPs"] = [str(cand)]
            return
    raise Invalid("Service", "", str(obj.get("metadata", {}).get("name", "")), [
        Cause("spec.clusterIPs", "FieldValueInvalid", "Invalid value: []: failed to allocate a serviceIP: range is full")])


def _job_selector(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector"):
        return
    uid = obj["metadata"]["uid"]
    name = obj["metadata"]["name"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tpl = spec.setdefault("template", {})
    if isinstance(tpl, dict):
        labels = tpl.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})


def _qos(pod: Obj) -> str:
    cs = (pod.get("spec") or {}).get("containers") or []
    reqs = [((c.get("resources") or {}).get("requests") or {}) for c in cs if isinstance(c, dict)]
    lims = [((c.get("resources") or {}).get("limits") or {}) for c in cs if isinstance(c, dict)]
    if not any(reqs) and not any(lims):
        return "BestEffort"
    if all(lim.get("cpu") and lim.get("memory") for lim in lims) and \
            all((r.get("cpu", lim.get("cpu")) == lim.get("cpu") and r.get("memory", lim.get("memory")) == lim.get("memory"))
                for r, lim in zip(reqs, lims, strict=False)):
        return "Guaranteed"
    return "Burstable"
