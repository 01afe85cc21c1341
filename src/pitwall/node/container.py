"""The state of one container of a pod as the kubelet reports it: runs, exits, back-off, probe verdicts."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from pitwall.node.logs import LogBuffer
from pitwall.node.runtime import Exited, Process

__all__ = ["BackOff", "ContainerRun", "rfc3339"]

Obj = dict[str, Any]


def rfc3339(ts: float | None = None) -> str:
    t = dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class BackOff:
    """CrashLoopBackOff: the first restart is immediate, then ``initial`` doubling to ``maximum``;
    a run of ``reset`` seconds or more starts over (the kubelet's defaults: 10 s, 5 min, 10 min)."""

    initial: float = 10.0
    maximum: float = 300.0
    reset: float = 600.0
    current: float = 0.0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset:
            self.current = 0.0
        delay = self.current
        self.current = self.initial if self.current == 0 else min(self.current * 2, self.maximum)
        return delay


@dataclass
class ContainerRun:
    """One container of a pod: its spec, current process, reported state and counters."""

    spec: Obj
    backoff: BackOff
    is_init: bool = False
    restart_count: int = 0
    ever_started: bool = False
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    proc: Process | None = None
    wait_task: asyncio.Task[Exited] | None = None
    started_mono: float = 0.0
    next_start: float = 0.0  # monotonic; when the next start may happen
    done: bool = False  # terminated and not to be restarted
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    kill_reason: str = ""  # "OOMKilled" when pitwall killed it for memory, "liveness"/"startup" probe kills
    probers: list[asyncio.Task[None]] = field(default_factory=list)
    logs: LogBuffer | None = None
    previous: LogBuffer | None = None
    env: dict[str, str] = field(default_factory=dict)
    # usage, sampled from /proc each second
    rss: int = 0
    cpu_dead: float = 0.0  # CPU seconds of the container's processes that ended
    pid_cpu: dict[int, float] = field(default_factory=dict)
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, cpu seconds), last two

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def cpu_total(self) -> float:
        return self.cpu_dead + sum(self.pid_cpu.values())

    def running(self) -> bool:
        return self.proc is not None and self.proc.exited is None

    def container_id(self) -> str:
        return f"pitwall://{self.proc.pid}" if self.proc is not None else ""

    def status(self) -> Obj:
        out: Obj = {"name": self.name, "state": self.state, "lastState": self.last_state,
                    "ready": self.ready and self.running(), "restartCount": self.restart_count,
                    "image": str(self.spec.get("image", "")), "imageID": "",
                    "started": self.running() and self.started}
        if self.proc is not None:
            out["containerID"] = self.container_id()
        return out
