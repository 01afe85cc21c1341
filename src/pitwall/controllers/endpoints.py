"""The endpoints controller: each selecting Service's Endpoints and EndpointSlices, from its Pods.

For every Service with a ``spec.selector`` it keeps, as kube-controller-manager's
endpoint and endpointslice controllers do:

- the ``v1`` Endpoints of the same name: ready pods in ``addresses``, not
  ready ones in ``notReadyAddresses``, terminating pods left out (all of them
  in ``addresses`` with ``publishNotReadyAddresses``), grouped into subsets by
  their resolved ports;
- ``discovery.k8s.io/v1`` EndpointSlices labelled ``kubernetes.io/service-name``
  and ``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io``,
  owned by the Service: one slice per distinct set of resolved ports (at most
  100 endpoints each), every endpoint with ``conditions`` ready / serving /
  terminating as upstream computes them (serving = pod Ready, or
  publishNotReadyAddresses; terminating = deletionTimestamp; ready = serving
  and not terminating, or publishNotReadyAddresses), ``targetRef`` to the Pod
  and ``nodeName``. A Service selecting no pod keeps one empty slice.

A pod counts once it has ``status.podIP`` and is not Succeeded or Failed. A
``targetPort`` given by name is resolved on each pod from its containers'
``ports[].name``; a pod without that port name is left out of that port, so
pods naming different numbers end up in different slices. Services without a
selector are left alone (their endpoints are written by hand).

The controller is a ``controllers.loop.Reconciler`` on Services, watching
Pods (mapped to the Services whose selector matches them now or matched them
before) and its own outputs (so a slice edited by hand is put back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from pitwall.controllers.loop import object_key, split_key
from pitwall.kube import AlreadyExists, Conflict, KubeClient, NotFoundError

__all__ = ["MANAGED_BY", "MAX_ENDPOINTS_PER_SLICE", "EndpointsReconciler", "desired_endpoints", "desired_slices"]

Obj = dict[str, Any]
SLICE = ("discovery.k8s.io/v1", "EndpointSlice")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
MAX_ENDPOINTS_PER_SLICE = 100  # kube-controller-manager's --max-endpoints-per-slice default
PortKey = tuple[tuple[str, int, str], ...]  # (name, port, protocol) per resolved Service port


def _meta(o: Obj) -> Obj:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def _counted(pod: Obj) -> bool:
    st = pod.get("status") or {}
    return bool(st.get("podIP")) and st.get("phase") not in ("Succeeded", "Failed")


def resolve_ports(svc: Obj, pod: Obj) -> PortKey:
    """The Service's ports as this pod serves them: ``(name, number, protocol)``; a named targetPort the pod
    does not declare leaves that port out."""
    named: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") and isinstance(p.get("containerPort"), int):
                named.setdefault(str(p["name"]), int(p["containerPort"]))
    out = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        if isinstance(target, str) and not target.isdigit():
            if target not in named:
                continue
            number = named[target]
        else:
            number = int(target)
        out.append((str(sp.get("name") or ""), number, str(sp.get("protocol") or "TCP")))
    return tuple(out)


def _target_ref(pod: Obj) -> Obj:
    m = _meta(pod)
    return {"kind": "Pod", "namespace": m.get("namespace", "default"), "name": m.get("name", ""),
            "uid": m.get("uid", "")}


def _groups(svc: Obj, pods: Sequence[Obj]) -> dict[PortKey, list[Obj]]:
    groups: dict[PortKey, list[Obj]] = {}
    for pod in sorted(pods, key=lambda p: str(_meta(p).get("name"))):
        if _counted(pod):
            groups.setdefault(resolve_ports(svc, pod), []).append(pod)
    return groups


def desired_endpoints(svc: Obj, pods: Sequence[Obj]) -> list[Obj]:
    """The ``subsets`` of the Service's Endpoints."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    subsets: list[Obj] = []
    for ports, group in sorted(_groups(svc, pods).items()):
        if not ports:
            continue
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        for pod in group:
            terminating = bool(_meta(pod).get("deletionTimestamp"))
            if terminating and not publish:
                continue
            addr: Obj = {"ip": pod["status"]["podIP"], "targetRef": _target_ref(pod)}
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                addr["nodeName"] = node
            (ready if publish or _pod_ready(pod) else not_ready).append(addr)
        if not ready and not not_ready:
            continue
        subset: Obj = {"ports": [{"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
                                 for n, p, proto in ports]}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets.append(subset)
    return subsets


def desired_slices(svc: Obj, pods: Sequence[Obj]) -> list[tuple[list[Obj], list[Obj]]]:
    """``(ports, endpoints)`` of each EndpointSlice the Service should have (at least one)."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    out: list[tuple[list[Obj], list[Obj]]] = []
    for ports, group in sorted(_groups(svc, pods).items()):
        eps: list[Obj] = []
        for pod in group:
            terminating = bool(_meta(pod).get("deletionTimestamp"))
            serving = publish or _pod_ready(pod)
            ep: Obj = {"addresses": [pod["status"]["podIP"]],
                       "conditions": {"ready": publish or (serving and not terminating), "serving": serving,
                                      "terminating": terminating},
                       "targetRef": _target_ref(pod)}
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                ep["nodeName"] = node
            eps.append(ep)
        slice_ports = [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]
        for i in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
            out.append((slice_ports, eps[i:i + MAX_ENDPOINTS_PER_SLICE]))
    return out or [([], [])]


def _selector_string(selector: Obj) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _matches(selector: Obj, labels: Obj) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class EndpointsReconciler:
    """Writes each selecting Service's Endpoints and EndpointSlices (a ``controllers.loop.Reconciler``)."""

    name = "endpointslice-controller"
    primary = ("v1", "Service")
    secondary: Sequence[tuple[str, str]] = (("v1", "Pod"), SLICE, ("v1", "Endpoints"))

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._selectors: dict[str, Obj] = {}  # service key -> spec.selector
        self._service_pods: dict[str, set[str]] = {}  # service key -> pod keys its last reconcile counted

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        """Services an event concerns: the Service itself; for a Pod, the Services selecting it now or
        before; for an Endpoints or a slice, its Service."""
        m = _meta(obj)
        ns = str(m.get("namespace") or "default")
        if kind == "Service":
            key = object_key(obj)
            selector = (obj.get("spec") or {}).get("selector") or {}
            if selector:
                self._selectors[key] = dict(selector)
            else:
                self._selectors.pop(key, None)
            return [key]
        if kind == "Pod":
            pkey = object_key(obj)
            labels = m.get("labels") or {}
            now = {k for k, sel in self._selectors.items() if split_key(k)[0] == ns and _matches(sel, labels)}
            before = {k for k, pods in self._service_pods.items() if pkey in pods}
            return sorted(now | before)
        if kind == "EndpointSlice":
            svc = (m.get("labels") or {}).get(SERVICE_NAME_LABEL)
            return [f"{ns}/{svc}"] if svc else []
        return [object_key(obj)]  # Endpoints: same name as its Service

    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            svc = await self.client.get("v1", "Service", name, ns)
        except NotFoundError:
            # the Endpoints of a Service seen selecting (not one written by hand), and the managed slices
            ours = self._selectors.pop(key, None) is not None or self._service_pods.pop(key, None) is not None
            await self._delete_outputs(ns, name, endpoints=ours)
            return None
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector:
            self._selectors.pop(key, None)
            self._service_pods.pop(key, None)
            return None  # endpoints of a selector-less Service are written by hand
        self._selectors[key] = dict(selector)
        pods = (await self.client.list("v1", "Pod", ns, label_selector=_selector_string(selector))).items
        self._service_pods[key] = {object_key(p) for p in pods}
        await self._write_endpoints(svc, desired_endpoints(svc, pods))
        await self._write_slices(svc, desired_slices(svc, pods))
        return None

    def _labels(self, svc: Obj) -> Obj:
        labels = {k: v for k, v in (_meta(svc).get("labels") or {}).items()
                  if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)}
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS_LABEL] = ""
        return labels

    async def _write_endpoints(self, svc: Obj, subsets: list[Obj]) -> None:
        m = _meta(svc)
        ns, name = str(m.get("namespace") or "default"), str(m["name"])
        labels = self._labels(svc)
        try:
            old = await self.client.get("v1", "Endpoints", name, ns)
        except NotFoundError:
            body: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets}
            try:
                await self.client.create(body)
            except AlreadyExists:
                raise Conflict(f'endpoints "{name}" appeared meanwhile') from None
            return
        if (old.get("subsets") or []) == subsets and (_meta(old).get("labels") or {}) == labels:
            return
        old["subsets"] = subsets
        old["metadata"]["labels"] = labels
        await self.client.update(old)

    async def _write_slices(self, svc: Obj, want: list[tuple[list[Obj], list[Obj]]]) -> None:
        m = _meta(svc)
        ns, name = str(m.get("namespace") or "default"), str(m["name"])
        labels = {**self._labels(svc), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
        owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": m.get("uid", ""),
                 "controller": True, "blockOwnerDeletion": True}
        have = sorted(await self._managed_slices(ns, name), key=lambda s: str(_meta(s).get("name")))
        # reuse a slice that already holds the same ports first, so an endpoint change rewrites one slice
        unused = list(have)
        plan: list[tuple[Obj | None, list[Obj], list[Obj]]] = []
        for ports, eps in want:
            match = next((s for s in unused if (s.get("ports") or []) == ports), None)
            if match is not None:
                unused.remove(match)
            plan.append((match, ports, eps))
        plan = [(old if old is not None else (unused.pop(0) if unused else None), ports, eps)
                for old, ports, eps in plan]
        for old, ports, eps in plan:
            if old is None:
                await self.client.create({
                    "apiVersion": SLICE[0], "kind": SLICE[1],
                    "metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                                 "ownerReferences": [owner]},
                    "addressType": "IPv4", "ports": ports, "endpoints": eps})
                continue
            om = _meta(old)
            if (old.get("ports") or []) == ports and (old.get("endpoints") or []) == eps \
                    and (om.get("labels") or {}) == labels and om.get("ownerReferences") == [owner]:
                continue
            old.update({"ports": ports, "endpoints": eps, "addressType": "IPv4"})
            om["labels"] = labels
            om["ownerReferences"] = [owner]
            await self.client.update(old)
        for extra in unused:
            with contextlib.suppress(NotFoundError):
                await self.client.delete(*SLICE, str(_meta(extra)["name"]), ns)

    async def _managed_slices(self, ns: str, name: str) -> list[Obj]:
        sel = f"{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        return (await self.client.list(*SLICE, ns, label_selector=sel)).items

    async def _delete_outputs(self, ns: str, name: str, *, endpoints: bool) -> None:
        if endpoints:
            with contextlib.suppress(NotFoundError):
                await self.client.delete("v1", "Endpoints", name, ns)
        for s in await self._managed_slices(ns, name):
            with contextlib.suppress(NotFoundError):
                await self.client.delete(*SLICE, str(_meta(s)["name"]), ns)
