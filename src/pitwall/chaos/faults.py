"""The faults pitwall injects itself, one class per Chaos Mesh action, over the node's fault hooks.

Each fault applies to one record (a target: ``ns/pod`` or ``ns/pod/container``)
and recovers it; ``active`` says whether an applied fault is still in place
(after a pitwall restart or a restart of the target pod it may not be), so the
controller can re-apply or clean up. Whatever must be undone after a crash
(a stressor's process group) is written to the state store before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
from pathlib import Path
from typing import Any, Protocol

import orjson

from pitwall.chaos.model import ChaosSpecError
from pitwall.kube import KubeClient, NotFoundError
from pitwall.storage.revstore import RevStore

__all__ = ["ContainerKill", "Fault", "FaultError", "NodeHooks", "PodFailure", "PodKill", "Stress", "fault_for",
           "split_target", "stress_argv", "sweep_stressors"]

Obj = dict[str, Any]
STRESSORS_PREFIX = "/pitwall/chaos/stressors/"
_PR_SET_PDEATHSIG = 1


class FaultError(RuntimeError):
    """A fault could not be applied or recovered (the record's event says why)."""


class NodeHooks(Protocol):
    """The node's side of fault injection (``pitwall.node.Kubelet`` implements it)."""

    def container_groups(self, namespace: str, name: str) -> dict[str, int]: ...

    def attach_group(self, namespace: str, name: str, container: str, pgid: int, attach: bool = True) -> bool: ...

    def hold_pod(self, namespace: str, name: str, held: bool) -> bool: ...

    def is_held(self, namespace: str, name: str) -> bool: ...

    def container_output(self, namespace: str, name: str, container: str) -> str | None:
        """What a container's last run printed, once it ended and its output is all read; else None."""
        ...

    def volume_dirs(self, namespace: str, name: str) -> dict[str, Path]: ...

    def chaos_shim(self) -> str:
        """Why the chaos shim cannot act on this node's containers, or "" when it can."""
        ...

    def chaos_shim_missing(self, namespace: str, name: str, container: str) -> str:
        """Why the container's process does not run the chaos shim, or "" when it does."""
        ...

    def set_chaos(self, namespace: str, name: str, container: str, key: str, lines: list[str] | None) -> bool: ...

    def has_chaos(self, namespace: str, name: str, container: str, key: str) -> bool: ...


class Fault(Protocol):
    one_shot: bool

    async def apply(self, obj: Obj, target: str) -> None: ...

    async def recover(self, obj: Obj, target: str) -> None: ...

    async def active(self, obj: Obj, target: str) -> bool: ...


def split_target(target: str) -> tuple[str, str, str]:
    parts = target.split("/")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


class PodKill:
    """``pod-kill``: delete the pod (``gracePeriod`` seconds, 0 by default); its controller replaces it."""

    one_shot = True

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def apply(self, obj: Obj, target: str) -> None:
        ns, name, _ = split_target(target)
        grace = int((obj.get("spec") or {}).get("gracePeriod") or 0)
        try:
            await self.client.delete("v1", "Pod", name, ns, grace_period=grace)
        except NotFoundError:
            raise FaultError(f'pods "{name}" not found') from None

    async def recover(self, obj: Obj, target: str) -> None:
        return None  # nothing to undo: the pod's controller made a new one

    async def active(self, obj: Obj, target: str) -> bool:
        return True


class ContainerKill:
    """``container-kill``: SIGKILL the container's process group; the node restarts it by policy."""

    one_shot = True

    def __init__(self, node: NodeHooks) -> None:
        self.node = node

    async def apply(self, obj: Obj, target: str) -> None:
        ns, name, container = split_target(target)
        pgid = self.node.container_groups(ns, name).get(container)
        if pgid is None:
            raise FaultError(f"container {container} of pod {ns}/{name} is not running on this node")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    async def recover(self, obj: Obj, target: str) -> None:
        return None

    async def active(self, obj: Obj, target: str) -> bool:
        return True


class PodFailure:
    """``pod-failure``: the pod's containers are stopped and kept stopped until recovery (Chaos Mesh swaps
    their images for ``pause``; pitwall runs processes, so the node holds them instead)."""

    one_shot = False

    def __init__(self, node: NodeHooks) -> None:
        self.node = node

    async def apply(self, obj: Obj, target: str) -> None:
        ns, name, _ = split_target(target)
        if not self.node.hold_pod(ns, name, True):
            raise FaultError(f"pod {ns}/{name} is not running on this node")

    async def recover(self, obj: Obj, target: str) -> None:
        ns, name, _ = split_target(target)
        self.node.hold_pod(ns, name, False)  # a pod that is gone holds nothing

    async def active(self, obj: Obj, target: str) -> bool:
        ns, name, _ = split_target(target)
        return self.node.is_held(ns, name)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?$|^(\d+(?:\.\d+)?)%$", re.IGNORECASE)


def _vm_bytes(size: str) -> str:
    m = _SIZE.match(size.strip())
    if m is None:
        raise ChaosSpecError(f'spec.stressors.memory.size: invalid size "{size}" (e.g. "256MB", "1GB", "50%")')
    if m.group(4) is not None:
        return f"{m.group(4)}%"
    return f"{m.group(1)}{(m.group(2) or 'b').lower()}"


def stress_argv(spec: Obj) -> list[str]:
    """stress-ng's arguments for a StressChaos spec: CPU workers with a load (Chaos Mesh's own flags),
    memory workers holding ``size`` each, or ``stressngStressors`` as written."""
    raw = str(spec.get("stressngStressors") or "").strip()
    if raw:
        return shlex.split(raw)
    st = spec.get("stressors") or {}
    argv: list[str] = []
    cpu = st.get("cpu") or {}
    if int(cpu.get("workers") or 0) > 0:
        argv += ["--cpu-load-slice", "10", "--cpu-method", "sqrt", "--cpu", str(int(cpu["workers"]))]
        if cpu.get("load") is not None:
            argv += ["--cpu-load", str(int(cpu["load"]))]
        argv += [str(o) for o in cpu.get("options") or []]
    mem = st.get("memory") or {}
    if int(mem.get("workers") or 0) > 0:
        argv += ["--vm", str(int(mem["workers"])), "--vm-keep"]
        if mem.get("size"):
            argv += ["--vm-bytes", _vm_bytes(str(mem["size"]))]
        argv += [str(o) for o in mem.get("options") or []]
    if not argv:
        raise ChaosSpecError("spec.stressors: missing stressors (cpu or memory workers, or stressngStressors)")
    return argv


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2:].split()[19])


def _group_members(pgid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
            comm = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
            f = raw[raw.rfind(b")") + 2:].split()
            if int(f[2]) == pgid and f[0] != b"Z":
                out.append((int(entry.name), comm))
    return out


def kill_stressor(rec: Obj) -> bool:
    """SIGKILL a recorded stressor's process group, if it is still ours; True when something was killed.

    The group is ours when its leader is the recorded process (same start time) or, the leader gone,
    every member is a stress-ng process (its workers)."""
    pgid = int(rec.get("pgid") or 0)
    if pgid <= 1 or rec.get("host", socket.gethostname()) != socket.gethostname():
        return False  # another machine's (servers sharing an etcd): not a process group here
    members = _group_members(pgid)
    if not members:
        return False
    leader_ok = _start_ticks(pgid) == rec.get("start_ticks")
    if not leader_ok and not all(comm.startswith("stress-ng") for _, comm in members):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def _child_setup() -> None:  # the stressor dies with pitwall's thread; stress-ng's workers follow it
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Stress:
    """StressChaos: a stress-ng process group attached to the target container (its CPU and memory count as
    the container's), written to the state store before it starts so a restart can kill it."""

    one_shot = False

    def __init__(self, client: KubeClient, node: NodeHooks, store: RevStore, binary: str = "stress-ng") -> None:
        self.client = client
        self.node = node
        self.store = store
        self.binary = binary
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._reapers: set[asyncio.Task[None]] = set()  # each waits for its stressor, so none is left a zombie

    @staticmethod
    def key(obj: Obj, target: str) -> str:
        m = obj["metadata"]
        return f"{STRESSORS_PREFIX}{m['namespace']}/{m['name']}/{target.replace('/', ':')}"

    async def _record(self, obj: Obj, target: str) -> Obj | None:
        kv = await self.store.get(self.key(obj, target))
        return orjson.loads(kv.value) if kv is not None else None

    async def apply(self, obj: Obj, target: str) -> None:
        ns, name, container = split_target(target)
        exe = shutil.which(self.binary)
        if exe is None:
            raise FaultError(f"{self.binary} not found on this node (Debian: apt-get install stress-ng)")
        argv = stress_argv(obj.get("spec") or {})
        try:
            pod = await self.client.get("v1", "Pod", name, ns)
        except NotFoundError:
            raise FaultError(f'pods "{name}" not found') from None
        if pod["metadata"].get("deletionTimestamp"):  # stressing a pod on its way out would outlive the record
            raise FaultError(f"pod {ns}/{name} is terminating")
        if container not in self.node.container_groups(ns, name):
            raise FaultError(f"container {container} of pod {ns}/{name} is not running on this node")
        await self.recover(obj, target)  # never two stressors on one target
        proc = await asyncio.create_subprocess_exec(
            exe, *argv, "--timeout", "0", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
        rec = {"pgid": proc.pid, "start_ticks": _start_ticks(proc.pid), "pod_uid": pod["metadata"].get("uid"),
               "target": target, "argv": argv, "host": socket.gethostname()}
        await self.store.put(self.key(obj, target), orjson.dumps(rec))
        self._procs[self.key(obj, target)] = proc
        reaper = asyncio.get_running_loop().create_task(self._reap(self.key(obj, target), proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        self.node.attach_group(ns, name, container, proc.pid)
        await asyncio.sleep(0.05)
        if proc.returncode is not None:
            raise FaultError(f"stress-ng exited at once (code {proc.returncode}); arguments: {shlex.join(argv)}")

    async def _reap(self, key: str, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if self._procs.get(key) is proc:
            del self._procs[key]

    async def recover(self, obj: Obj, target: str) -> None:
        key = self.key(obj, target)
        rec = await self._record(obj, target)
        if rec is None:
            return
        ns, name, container = split_target(target)
        kill_stressor(rec)
        self.node.attach_group(ns, name, container, int(rec.get("pgid") or 0), attach=False)
        proc = self._procs.pop(key, None)
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        await self.store.delete(key)

    async def active(self, obj: Obj, target: str) -> bool:
        rec = await self._record(obj, target)
        if rec is None or _start_ticks(int(rec.get("pgid") or 0)) != rec.get("start_ticks"):
            return False
        ns, name, container = split_target(target)
        try:
            pod = await self.client.get("v1", "Pod", name, ns)
        except NotFoundError:
            return False  # the target is gone: what is left of the fault must go too
        if pod["metadata"].get("uid") != rec.get("pod_uid") or pod["metadata"].get("deletionTimestamp"):
            return False
        if container not in self.node.container_groups(ns, name):
            return False
        # a node started again forgets attachments: the stressor's usage keeps counting as the container's
        return self.node.attach_group(ns, name, container, int(rec["pgid"]))


async def sweep_stressors(store: RevStore, exists: Any) -> int:
    """Kill every recorded stressor whose experiment is gone (``await exists(ns, name)`` is False);
    returns how many records were removed. Run once at start, before the controllers."""
    removed = 0
    res = await store.range(STRESSORS_PREFIX, limit=10_000)
    for kv in res.kvs:
        ns, name, _ = kv.key[len(STRESSORS_PREFIX):].split("/", 2)
        if await exists(ns, name):
            continue
        with contextlib.suppress(ValueError):
            kill_stressor(orjson.loads(kv.value))
        await store.delete(kv.key)
        removed += 1
    return removed


def fault_for(kind: str, action: str, *, client: KubeClient, node: NodeHooks | None, store: RevStore) -> Fault | None:
    """The fault implementing ``kind``/``action``, or None when pitwall cannot inject it here."""
    if kind == "PodChaos" and action == "pod-kill":
        return PodKill(client)
    if node is None:
        return None
    if kind == "PodChaos" and action == "container-kill":
        return ContainerKill(node)
    if kind == "PodChaos" and action == "pod-failure":
        return PodFailure(node)
    if kind == "StressChaos":
        return Stress(client, node, store)
    return None
