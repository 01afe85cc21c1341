"""TimeChaos, IOChaos and DNSChaos through the chaos shim (``pitwall/node/_native/chaosshim.c``).

Chaos Mesh patches a running process's vDSO through ptrace (TimeChaos) and
swaps a volume for a FUSE mount (IOChaos), both as root. pitwall starts
every container's processes itself, so the node preloads a small library
into them (``kube.chaos_preload``) that reads the faults in force from a
control file per container; a fault is applied by adding its lines there
and recovered by taking them out, and the processes see either within the
shim's check interval (100 ms), without a restart. The file is the node's
memory only: a new pod, a pod restarted by a restarted pitwall or a node
that forgot it reports the fault as no longer in place, and the controller
applies it again while the experiment runs.

DNSChaos acts on ``getaddrinfo``: Chaos Mesh answers the selected pods'
queries from its CoreDNS plugin (SERVFAIL for ``error``, a random address for
``random``); pitwall's pods have no cluster DNS, so the shim answers in the
process for the names the patterns match.

Processes that do not load the shim (static executables such as most Go
programs, or a container whose ``env`` sets ``LD_PRELOAD``) are refused at
apply with the reason in the record's event.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pitwall.chaos.faults import FaultError, NodeHooks, split_target
from pitwall.chaos.model import ChaosSpecError, parse_go_duration
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["CLOCK_IDS", "METHODS", "SHIM_KINDS", "ShimFault", "dns_line", "glob_escape", "io_rule", "shim_fault_for",
           "time_line"]

Obj = dict[str, Any]
SHIM_KINDS = ("TimeChaos", "IOChaos", "DNSChaos")
DNS_ACTIONS = {"error": "e", "random": "r"}
_DNS_PATTERN = re.compile(r"[A-Za-z0-9_?*.-]{1,253}")
IO_ACTIONS = ("latency", "fault")  # attrOverride and mistake are not implemented (NotSupported)

# Linux clock ids by Chaos Mesh's names (the bit of each in the control file's mask is 1 << id).
CLOCK_IDS = {"CLOCK_REALTIME": 0, "CLOCK_MONOTONIC": 1, "CLOCK_PROCESS_CPUTIME_ID": 2, "CLOCK_THREAD_CPUTIME_ID": 3,
             "CLOCK_MONOTONIC_RAW": 4, "CLOCK_REALTIME_COARSE": 5, "CLOCK_MONOTONIC_COARSE": 6, "CLOCK_BOOTTIME": 7,
             "CLOCK_REALTIME_ALARM": 8, "CLOCK_BOOTTIME_ALARM": 9}

# Chaos Mesh's I/O methods (FUSE operations) the shim intercepts, in the bit order chaosshim.c uses, with
# the calls that count as each; the others are accepted and never match (the status note lists them).
METHODS = ("open", "read", "write", "flush", "fsync", "mkdir", "unlink", "rmdir", "rename", "create", "release")
UPSTREAM_METHODS = frozenset((*METHODS, "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "symlink",
                              "link", "opendir", "readdir", "releasedir", "fsyncdir", "statfs", "setxattr",
                              "getxattr", "listxattr", "removexattr", "access", "getlk", "setlk", "bmap"))
_NO_METHOD = 1 << 30  # a mask no call carries: only unintercepted methods were named


def time_line(spec: Obj) -> str:
    """The control file line of a TimeChaos spec: ``time <offset ns> <clock mask>``."""
    raw = spec.get("timeOffset")
    if raw in (None, ""):
        raise ChaosSpecError("spec.timeOffset: Required value")
    offset = parse_go_duration(str(raw), "spec.timeOffset")
    mask = 0
    for name in spec.get("clockIds") or ["CLOCK_REALTIME"]:
        if name not in CLOCK_IDS:
            raise ChaosSpecError(f'spec.clockIds: unknown clock id "{name}" (one of {", ".join(CLOCK_IDS)})')
        mask |= 1 << CLOCK_IDS[name]
    return f"time {round(offset * 1e9)} {mask}"


def dns_line(spec: Obj) -> str:
    """The control file line of a DNSChaos spec: ``dns <e|r> [<pattern> ...]`` (no patterns: every name)."""
    action = str(spec.get("action") or "error")
    if action not in DNS_ACTIONS:
        raise ChaosSpecError(f'spec.action: Unsupported value: "{action}": supported values: "error", "random"')
    patterns = [str(p) for p in spec.get("patterns") or []]
    for i, p in enumerate(patterns):
        # Chaos Mesh's webhook: the wildcard only at the end ("chaos-*.org" is invalid)
        if not _DNS_PATTERN.fullmatch(p) or "*" in p[:-1]:
            raise ChaosSpecError(f'spec.patterns[{i}]: Invalid value: "{p}": a domain name with "?" for one '
                                 'character and "*" only at the end')
    return " ".join(["dns", DNS_ACTIONS[action], *patterns])


def glob_escape(text: str) -> str:
    """``text`` matched literally by the shim's glob."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _under(path: str, prefix: str) -> str | None:
    """The rest of ``path`` below directory ``prefix`` ("" for the directory itself), or None."""
    p, pre = path.rstrip("/") or "/", prefix.rstrip("/") or "/"
    if p == pre:
        return ""
    head = pre if pre.endswith("/") else pre + "/"
    return p[len(head):] if p.startswith(head) else None


def io_rule(spec: Obj) -> tuple[str, int, int, int, int]:
    """A checked IOChaos spec as ``(action letter, delay ns, errno, percent, method mask)``."""
    action = str(spec.get("action") or "")
    if action not in IO_ACTIONS:
        raise ChaosSpecError(f'spec.action: Unsupported value: "{action}" (pitwall injects {", ".join(IO_ACTIONS)})')
    if not str(spec.get("volumePath") or "").startswith("/"):
        raise ChaosSpecError("spec.volumePath: Required value (the mount path of the volume, absolute)")
    delay = 0
    if action == "latency":
        if not spec.get("delay"):
            raise ChaosSpecError("spec.delay: Required value for the latency action")
        delay = round(parse_go_duration(str(spec["delay"]), "spec.delay") * 1e9)
        if delay < 0:
            raise ChaosSpecError(f'spec.delay: "{spec["delay"]}" is negative')
    err = int(spec.get("errno") or 0)
    if action == "fault" and not 0 < err < 4096:
        raise ChaosSpecError("spec.errno: Required value for the fault action (an errno, e.g. 5 for EIO)")
    percent = 100 if spec.get("percent") is None else int(spec["percent"])
    if not 0 <= percent <= 100:
        raise ChaosSpecError(f"spec.percent: Invalid value: {percent}: must be between 0 and 100")
    mask = 0
    for m in spec.get("methods") or []:
        if m not in UPSTREAM_METHODS:
            raise ChaosSpecError(f'spec.methods: Unsupported value: "{m}"')
        mask |= 1 << METHODS.index(m) if m in METHODS else _NO_METHOD
    path, volume_path = str(spec.get("path") or ""), str(spec["volumePath"]).rstrip("/")
    if path and path != volume_path and not path.startswith(volume_path + "/"):
        raise ChaosSpecError(f'spec.path: "{path}" is not under spec.volumePath "{spec["volumePath"]}"')
    return ("l" if action == "latency" else "f"), delay, err, percent, mask


def _volume_dir(pod: Obj, container: str, volume_path: str, volumes: dict[str, Path]) -> str:
    """The host directory behind ``volume_path`` in the container (through its deepest volumeMount holding
    it), as the container's processes see it once resolved (realpath)."""
    spec = next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == container), None)
    best: tuple[str, str] | None = None
    for vm in (spec or {}).get("volumeMounts") or []:
        mount = str(vm.get("mountPath") or "")
        rest = _under(volume_path, mount)
        if rest is None or str(vm.get("name")) not in volumes or (best is not None and len(mount) <= len(best[0])):
            continue
        base = volumes[str(vm.get("name"))] / str(vm.get("subPath") or "")
        best = (mount, os.path.realpath(base / rest if rest else base))
    if best is None:
        raise FaultError(f'volumePath "{volume_path}" is not a volume mounted in container {container}')
    return best[1]


def _io_line(spec: Obj, volume_path: str, host_dir: str) -> str:
    action, delay, err, percent, mask = io_rule(spec)
    path = str(spec.get("path") or "")
    rest = path[len(volume_path.rstrip("/")):].lstrip("/") if path else "**"
    pattern = glob_escape(host_dir.rstrip("/")) + "/" + rest if rest else glob_escape(host_dir)
    return f"io {action} {delay} {err} {percent} {mask} {pattern}"


class ShimFault:
    """TimeChaos or IOChaos (latency, fault) on one container through its chaos control file."""

    one_shot = False

    def __init__(self, kind: str, client: KubeClient, node: NodeHooks) -> None:
        self.kind = kind
        self.client = client
        self.node = node

    def check(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        if self.kind == "TimeChaos":
            time_line(spec)
        elif self.kind == "DNSChaos":
            dns_line(spec)
        else:
            io_rule(spec)

    def note(self, obj: Obj) -> str:
        if self.kind == "DNSChaos":
            return ("on the names the target containers' processes look up with getaddrinfo, when they load "
                    "pitwall's chaos shim (dynamically linked; static executables such as most Go programs are "
                    "refused); HTTP through the pod's egress proxy is resolved by pitwall, not the pod")
        skipped = sorted({str(m) for m in (obj.get("spec") or {}).get("methods") or []} - set(METHODS))
        where = ("in the target containers' processes that load pitwall's chaos shim (dynamically linked; "
                 "static executables such as most Go programs are refused)")
        return where + (f"; methods not intercepted: {', '.join(skipped)}" if skipped else "")

    def key(self, obj: Obj) -> str:
        m = obj["metadata"]
        return f"{self.kind}/{m['namespace']}/{m['name']}"

    async def _lines(self, obj: Obj, ns: str, name: str, container: str) -> list[str]:
        spec = obj.get("spec") or {}
        if self.kind == "TimeChaos":
            return [time_line(spec)]
        if self.kind == "DNSChaos":
            return [dns_line(spec)]
        try:
            pod = await self.client.get("v1", "Pod", name, ns)
        except NotFoundError:
            raise FaultError(f'pods "{name}" not found') from None
        volume_path = str(spec.get("volumePath") or "")
        host_dir = _volume_dir(pod, container, volume_path, self.node.volume_dirs(ns, name))
        return [_io_line(spec, volume_path, host_dir)]

    async def apply(self, obj: Obj, target: str) -> None:
        ns, name, container = split_target(target)
        pid = self.node.container_groups(ns, name).get(container)
        if pid is None:
            raise FaultError(f"container {container} of pod {ns}/{name} is not running on this node")
        why = self.node.chaos_shim_missing(ns, name, container)
        if why:
            raise FaultError(f"container {container} of pod {ns}/{name}: {why}")
        lines = await self._lines(obj, ns, name, container)
        if not self.node.set_chaos(ns, name, container, self.key(obj), lines):
            raise FaultError(f"pod {ns}/{name} is not running on this node")

    async def recover(self, obj: Obj, target: str) -> None:
        ns, name, container = split_target(target)
        self.node.set_chaos(ns, name, container, self.key(obj), None)  # a pod that is gone holds nothing

    async def active(self, obj: Obj, target: str) -> bool:
        ns, name, container = split_target(target)
        return self.node.has_chaos(ns, name, container, self.key(obj))


def shim_fault_for(kind: str, action: str, *, client: KubeClient, node: NodeHooks | None) -> ShimFault | None:
    """The fault for a TimeChaos or an IOChaos ``action``, or None when this node cannot inject it (no node,
    the shim off or not built, an IOChaos action other than latency and fault)."""
    if node is None or node.chaos_shim():
        return None
    if kind == "IOChaos" and action not in IO_ACTIONS:
        return None
    return ShimFault(kind, client, node)
