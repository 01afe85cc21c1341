"""The kubelet: registers this machine as a Node, binds and runs its pods as processes.

It acts only through the Kubernetes API's in-process client. Pods whose
``spec.nodeName`` is empty are bound to this node (a merge patch of
``spec.nodeName``, with a ``Scheduled`` event, as kube-scheduler would); pods
bound here get a ``PodWorker`` each. A pod with a ``deletionTimestamp`` is
stopped (preStop, SIGTERM, SIGKILL after its grace period) and then deleted
with a grace period of 0, so ``kubectl delete pod`` returns once its
processes are gone. On start, processes a previous run left (pid files)
are killed and the pods are started again; on stop every container is
stopped and the objects are kept, so the next start re-creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from pitwall.core.tasks import Supervisor
from pitwall.kube import AlreadyExists, Conflict, Gone, KubeAPI, NotFoundError
from pitwall.logs import LogAppender
from pitwall.metrics import Appender
from pitwall.node.chaosshim import shim_missing
from pitwall.node.container import BackOff, rfc3339
from pitwall.node.logs import LogShipper
from pitwall.node.logsapi import logs_handler
from pitwall.node.podconfig import chaos_shim_library
from pitwall.node.pods import PodEgress, PodWorker
from pitwall.node.runtime import kill_leftovers, sample_groups
from pitwall.node.stats import NodeStats

__all__ = ["POD_NETWORK", "Kubelet"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
POD_NETWORK = ipaddress.ip_network("127.42.0.0/16")
DEFAULT_POD_NETWORK = POD_NETWORK  # a node's pod addresses when its settings name none
VERSION = "v1.32.0-pitwall"


class Kubelet:
    """The node component (``start``/``stop``); its loops run under ``self.tasks``."""

    name = "node"

    def __init__(self, kube: KubeAPI, *, data_dir: Path, logs: LogAppender | None = None,
                 metrics: Appender | None = None, node_name: str = "", backoff_initial_s: float = 10.0,
                 backoff_max_s: float = 300.0, backoff_reset_s: float = 600.0, volume_sync_s: float = 10.0,
                 sample_interval_s: float = 1.0, metrics_interval_s: float = 15.0, lease_interval_s: float = 10.0,
                 max_shutdown_grace_s: float = 30.0, log_flush_s: float = 1.0, resync_s: float = 300.0,
                 tenant: str = "default", pod_cidr: str = "", chaos_preload: bool = True) -> None:
        self.kube = kube
        self.client = kube.client
        self.node_name = node_name or socket.gethostname().lower()
        # Several nodes on one machine (servers sharing an etcd) need disjoint pod address ranges.
        self.pod_network = ipaddress.ip_network(pod_cidr) if pod_cidr else DEFAULT_POD_NETWORK
        if not self.pod_network.subnet_of(POD_NETWORK):  # type: ignore[arg-type]
            raise ValueError(f"pod_cidr {pod_cidr} is not inside {POD_NETWORK}")
        self.pods_dir = data_dir / "pods"
        self.shipper = LogShipper(logs, tenant=tenant, flush_s=log_flush_s)
        self.backoff = BackOff(backoff_initial_s, backoff_max_s, backoff_reset_s)
        self.volume_sync_s = volume_sync_s
        self.sample_interval_s = sample_interval_s
        self.metrics_interval_s = metrics_interval_s
        self.lease_interval_s = lease_interval_s
        self.max_shutdown_grace_s = max_shutdown_grace_s
        # The mesh's per-pod egress listeners (traffic.egress), set by the composition root; None: no proxy.
        self.egress: PodEgress | None = None
        # the chaos shim in every container's LD_PRELOAD (kube.chaos_preload): TimeChaos and IOChaos need it
        self.chaos_preload = chaos_preload
        self.resync_s = resync_s
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self.stats = NodeStats(self, metrics, tenant=tenant)
        self.tasks = Supervisor("node")
        self._synced: asyncio.Event | None = None
        self._events: dict[tuple[str, str, str, str, str], tuple[str, int]] = {}

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        n = kill_leftovers(self.pods_dir)
        if n:
            log.warning("node: killed %d container process group(s) left by a previous run", n)
        self._synced = asyncio.Event()
        await self._register()
        self.kube.subresource_handlers[("", "pods", "log")] = logs_handler(self)
        self.kube.set_metrics_provider(self.stats)
        self.tasks.spawn(self._follow_pods(), name="pods")
        self.tasks.spawn(self.shipper.run(), name="log-shipper")
        self.tasks.spawn(self._sample_loop(), name="sampler")
        self.tasks.spawn(self.stats.run(self.metrics_interval_s), name="metrics")
        self.tasks.spawn(self._lease_loop(), name="lease")

    async def stop(self) -> None:
        """Stop every container (each with its grace period, at most ``max_shutdown_grace_s``); keep the pods."""
        for w in self.workers.values():
            w.stop_for_shutdown()
        tasks = list(self._worker_tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.tasks.stop()
        self.kube.subresource_handlers.pop(("", "pods", "log"), None)
        now = rfc3339()
        ready = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "pitwall node stopped",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
        conds = [c for c in self._node()["status"]["conditions"] if c["type"] != "Ready"] + [ready]
        try:
            await self.client.patch("v1", "Node", self.node_name, {"status": {"conditions": conds}},
                                     subresource="status")
        except Exception as e:  # the API is already down: the lease expires on its own
            log.debug("node: not marked NotReady: %s", e)

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Until the first list of pods was handled (tests, readiness)."""
        assert self._synced is not None
        await asyncio.wait_for(self._synced.wait(), timeout)

    # -- the Node and its Lease ------------------------------------------------

    def _node(self) -> Obj:
        cpus = str(os.cpu_count() or 1)
        mem = "0"
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = line.split()[1] + "Ki"
        now = rfc3339()
        cap = {"cpu": cpus, "memory": mem, "pods": "110", "ephemeral-storage": "0"}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                 platform.machine()),
                "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": str(self.pod_network), "podCIDRs": [str(self.pod_network)]},
            "status": {
                "capacity": cap, "allocatable": cap,
                "conditions": [
                    {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
                     "lastTransitionTime": now}
                    for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                                    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID"))
                ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "pitwall node is posting ready status", "lastHeartbeatTime": now,
                      "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node_name}],
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                             "osImage": platform.platform(), "containerRuntimeVersion": "pitwall://processes",
                             "kubeletVersion": VERSION, "kubeProxyVersion": VERSION, "operatingSystem": "linux",
                             "architecture": "amd64"},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            },
        }

    async def _register(self) -> None:
        node = self._node()
        try:
            await self.client.create(node)
        except AlreadyExists:
            await self.client.patch("v1", "Node", self.node_name, {"status": node["status"]}, subresource="status")
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": now}
        try:
            await self.client.patch("coordination.k8s.io/v1", "Lease", self.node_name, {"spec": spec},
                                    namespace="kube-node-lease")
        except NotFoundError:
            await self.client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                                      "spec": spec})

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_interval_s)
            try:
                await self._renew_lease()
            except Exception as e:
                log.warning("node: lease renewal failed: %s", e)

    # -- pods ------------------------------------------------------------------

    async def _follow_pods(self) -> None:
        while True:
            try:
                listed = await self.client.list("v1", "Pod")
                seen = set()
                for pod in listed.items:
                    seen.add(str((pod.get("metadata") or {}).get("uid")))
                    self._handle(pod)
                for uid, w in list(self.workers.items()):
                    if uid not in seen:
                        w.deleted()
                self._clean_dirs(seen)
                assert self._synced is not None
                self._synced.set()
                async with asyncio.timeout(self.resync_s):  # a periodic relist heals any missed step
                    async for ev in self.client.watch("v1", "Pod", resource_version=listed.resource_version):
                        if ev.type == "DELETED":
                            gone = self.workers.get(str((ev.object.get("metadata") or {}).get("uid")))
                            if gone is not None:
                                gone.deleted()
                        elif ev.type in ("ADDED", "MODIFIED"):
                            self._handle(ev.object)
            except asyncio.CancelledError:
                raise
            except (Gone, TimeoutError):
                continue
            except Exception:
                log.exception("node: following pods failed; listing again")
                await asyncio.sleep(1.0)

    def _clean_dirs(self, live: set[str]) -> None:
        for d in self.pods_dir.iterdir() if self.pods_dir.is_dir() else []:
            if d.name not in live and d.name not in self.workers:
                shutil.rmtree(d, ignore_errors=True)

    def _handle(self, pod: Obj) -> None:
        m, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(m.get("uid"))
        node = spec.get("nodeName")
        if not node:
            if not m.get("deletionTimestamp") and spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                self.tasks.spawn(self._bind(pod), name=f"bind {m.get('namespace')}/{m.get('name')}", loop=False)
            return
        if node != self.node_name:
            return
        existing = self.workers.get(uid)
        if existing is not None:
            existing.update(pod)
            return
        if m.get("deletionTimestamp"):  # terminating and not ours to run (e.g. after a restart): finish it
            self.tasks.spawn(self._finish(pod), name=f"finish {m.get('namespace')}/{m.get('name')}", loop=False)
            return
        old_ip = str((pod.get("status") or {}).get("podIP") or "")
        w = PodWorker(self, pod, self._allocate_ip(old_ip))
        self.workers[uid] = w
        task = self.tasks.spawn(w.run(), name=f"pod {m.get('namespace')}/{m.get('name')}", loop=False)
        self._worker_tasks[uid] = task

        def done(_: asyncio.Task[None]) -> None:
            self.workers.pop(uid, None)
            self._worker_tasks.pop(uid, None)

        task.add_done_callback(done)

    async def _bind(self, pod: Obj) -> None:
        m = pod.get("metadata") or {}
        name, ns = str(m.get("name")), str(m.get("namespace"))
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                   "target": {"kind": "Node", "name": self.node_name}}
        for attempt in range(5):
            try:  # pods/binding refuses a pod another node took first (servers sharing an etcd)
                await self.kube.resources.bind(ns, name, binding, field_manager="pitwall-scheduler")
                break
            except (NotFoundError, Conflict):
                return
            except Exception as e:  # the store is busy: try again, then leave it to the next resync
                log.warning("node: binding pod %s/%s failed: %s", ns, name, e)
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            return
        self.event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {self.node_name}",
                   component="default-scheduler")

    async def _finish(self, pod: Obj) -> None:
        m = pod.get("metadata") or {}
        with contextlib.suppress(NotFoundError):
            await self.client.delete("v1", "Pod", str(m.get("name")), str(m.get("namespace")),
                                     uid=str(m.get("uid")), grace_period=0)

    def _allocate_ip(self, wanted: str) -> str:
        used = {w.pod_ip for w in self.workers.values()}
        if wanted and wanted not in used:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(wanted) in self.pod_network:
                    return wanted
        for ip in self.pod_network.hosts():
            s = str(ip)
            if ip == self.pod_network.network_address + 1:
                continue  # the first address is the network's gateway in a real cluster: left free
            if s not in used:
                return s
        raise RuntimeError(f"no pod address left in {self.pod_network}")

    def container_output(self, namespace: str, name: str, container: str) -> str | None:
        """The lines a container's current run printed, once it ended and they are all read; else None."""
        w = self.worker_for(namespace, name)
        run = next((c for c in w.runs if c.name == container), None) if w is not None else None
        if run is None or run.logs is None or not run.logs.closed:
            return None
        return "\n".join(line for _, _, line in run.logs.after(0))

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        for w in self.workers.values():
            if w.namespace == namespace and w.name == name:
                return w
        return None

    # -- backup hooks (pitwall.backup): where a hook command runs, which directories a volume backup reads --

    def exec_context(self, namespace: str, name: str, container: str | None = None) -> tuple[dict[str, str], Path] | None:
        """Environment and working directory of a running container of the pod, as ``kubectl exec`` would run a
        command there; None when the pod or container is not running on this node."""
        w = self.worker_for(namespace, name)
        return None if w is None else w.exec_context(container)

    def volume_dirs(self, namespace: str, name: str) -> dict[str, Path]:
        """The directory of each ready volume of the pod on this node (empty when it is not here)."""
        w = self.worker_for(namespace, name)
        return {} if w is None else w.volume_dirs()

    # -- fault hooks (pitwall.chaos) ---------------------------------------------
    # Chaos experiments act on pods through these calls only: they are the
    # runtime's side of Chaos Mesh's chaos-daemon (kill a container, attach a
    # stressor to a pod's cgroup, make a pod fail for a while, put time and
    # file faults in the control file the chaos shim reads in its processes).

    def container_groups(self, namespace: str, name: str) -> dict[str, int]:
        """The process group of each running container of the pod (empty when not on this node)."""
        w = self.worker_for(namespace, name)
        if w is None:
            return {}
        return {c.name: c.proc.pid for c in w.containers if c.proc is not None and c.running()}

    def attach_group(self, namespace: str, name: str, container: str, pgid: int, attach: bool = True) -> bool:
        """Count process group ``pgid``'s CPU and memory as the container's (a stressor run "inside" it),
        or stop counting it; False when the pod is not on this node."""
        w = self.worker_for(namespace, name)
        if w is None:
            return False
        groups = w.attached.setdefault(container, set())
        if attach:
            groups.add(pgid)
        else:
            groups.discard(pgid)
        return True

    def hold_pod(self, namespace: str, name: str, held: bool) -> bool:
        """While held, the pod's containers are stopped and not restarted (pod-failure); False when the
        pod is not on this node. Not persisted: a restarted node runs every pod again."""
        w = self.worker_for(namespace, name)
        if w is None:
            return False
        w.hold(held)
        return True

    def is_held(self, namespace: str, name: str) -> bool:
        w = self.worker_for(namespace, name)
        return w is not None and w.held

    def chaos_shim(self) -> str:
        """Why the chaos shim cannot act on this node's containers, or "" when it can."""
        if not self.chaos_preload:
            return "the chaos shim is off on this node (kube.chaos_preload: false)"
        if not chaos_shim_library():
            return "the chaos shim is not built (pitwall.node._chaosshim; needs a C compiler at install)"
        return ""

    def set_chaos(self, namespace: str, name: str, container: str, key: str, lines: list[str] | None) -> bool:
        """Put fault ``key``'s lines in the container's chaos control file, or take them out (None); the
        container's processes pick the change up within the shim's check interval. False when the pod is
        not on this node."""
        w = self.worker_for(namespace, name)
        if w is None:
            return False
        w.set_chaos(container, key, lines)
        return True

    def chaos_shim_missing(self, namespace: str, name: str, container: str) -> str:
        """Why the container's process does not run the chaos shim (not running, a static executable...),
        or "" when it does."""
        pid = self.container_groups(namespace, name).get(container)
        if pid is None:
            return f"container {container} of pod {namespace}/{name} is not running on this node"
        return shim_missing(pid)

    def has_chaos(self, namespace: str, name: str, container: str, key: str) -> bool:
        w = self.worker_for(namespace, name)
        return w is not None and key in w.chaos.get(container, {})

    # -- events ----------------------------------------------------------------

    def event(self, pod: Obj, type_: str, reason: str, message: str, field_path: str = "",
              component: str = "kubelet") -> None:
        """Record an Event about ``pod`` (in the background; a failure is logged)."""
        m = pod.get("metadata") or {}
        now = rfc3339()
        key = (str(m.get("uid")), type_, reason, message, field_path)
        seen = self._events.get(key)
        if seen is not None:  # as the kubelet's event correlator: one object, counted
            name, count = seen
            self._events[key] = (name, count + 1)
            patch = {"count": count + 1, "lastTimestamp": now}

            async def bump() -> None:
                try:
                    await self.client.patch("v1", "Event", name, patch, namespace=str(m.get("namespace")))
                except Exception as e:
                    log.debug("node: event not updated: %s", e)

            with contextlib.suppress(RuntimeError):
                self.tasks.spawn(bump(), name="event", loop=False)
            return
        if len(self._events) >= 10_000:
            self._events.clear()
        ev_name = f"{m.get('name')}.{time.time_ns():x}"
        self._events[key] = (ev_name, 1)
        ev: Obj = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": ev_name, "namespace": m.get("namespace")},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": m.get("name"),
                               "namespace": m.get("namespace"), "uid": m.get("uid"),
                               **({"fieldPath": field_path} if field_path else {})},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component, **({"host": self.node_name} if component == "kubelet" else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": self.node_name if component == "kubelet" else "",
        }

        async def create() -> None:
            try:
                await self.client.create(ev)
            except Exception as e:
                log.debug("node: event not recorded: %s", e)

        with contextlib.suppress(RuntimeError):
            self.tasks.spawn(create(), name="event", loop=False)

    # -- usage -----------------------------------------------------------------

    async def _sample_loop(self) -> None:
        while True:
            workers = list(self.workers.values())
            groups = {c.proc.pid for w in workers for c in w.containers if c.proc is not None and c.running()}
            groups |= {g for w in workers for gs in w.attached.values() for g in gs}
            usage = await asyncio.to_thread(sample_groups, groups) if groups else {}
            for w in workers:
                w.sample(usage)
            self.stats.sample_node()
            await asyncio.sleep(self.sample_interval_s)
