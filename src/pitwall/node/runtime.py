"""Container processes: spawn in their own session, read output by line, stop with a grace period.

Each container's process leads a new session (``start_new_session``), so
its process group is the container: a stop signals the whole group, and when
the main process ends the rest of the group is killed, as a container's
cgroup would be. The child also asks the kernel for SIGKILL when the thread
that started it dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of pitwall
leaves no container running. A pid file per container (pid, process start
time) lets the next pitwall find and kill leftovers without hitting a
reused pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Exited", "GroupUsage", "Process", "kill_leftovers", "proc_start_ticks", "sample_groups", "spawn"]

log = logging.getLogger(__name__)
MAX_LINE = 16 * 1024  # longer lines are split
_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _child_setup() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def proc_start_ticks(pid: int) -> int | None:
    """The process' start time (clock ticks since boot), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return int(fields[19])


@dataclass
class Exited:
    """How a container's main process ended."""

    exit_code: int  # 128 + signal for a signal
    signal: int = 0


@dataclass
class Process:
    """A running container: the main process (group leader) and its output readers."""

    proc: asyncio.subprocess.Process
    pid: int
    start_ticks: int
    pid_file: Path | None
    started_at: float = field(default_factory=time.time)
    exited: Exited | None = None
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait(self) -> Exited:
        """Wait for the main process; then kill what is left of its group and drain the output."""
        rc = await self.proc.wait()
        self.killpg(signal.SIGKILL)
        for t in self._readers:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(t), 2.0)
        for t in self._readers:
            t.cancel()
        if self.pid_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
        self.exited = Exited(128 - rc, -rc) if rc < 0 else Exited(rc)
        return self.exited

    def killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace_s: float) -> Exited:
        """SIGTERM to the group, SIGKILL after ``grace_s`` seconds (at once when 0)."""
        if self.proc.returncode is None:
            self.killpg(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), max(grace_s, 0.01))
            except TimeoutError:
                self.killpg(signal.SIGKILL)
        return await self.wait()


async def _pump(stream: asyncio.StreamReader | None, on_line: Callable[[str, str], None], name: str) -> None:
    if stream is None:
        return
    buf = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            while len(line) > MAX_LINE:
                on_line(name, line[:MAX_LINE].decode(errors="replace"))
                line = line[MAX_LINE:]
            on_line(name, line.decode(errors="replace"))
        while len(buf) > MAX_LINE:
            on_line(name, buf[:MAX_LINE].decode(errors="replace"))
            buf = buf[MAX_LINE:]
    if buf:
        on_line(name, buf.decode(errors="replace"))


async def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, on_line: Callable[[str, str], None],
                pid_file: Path | None) -> Process:
    """Start ``argv`` as a new session; ``on_line(stream, line)`` gets each stdout/stderr line.

    Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``) when it cannot be executed.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_child_setup, limit=MAX_LINE)
    ticks = proc_start_ticks(proc.pid) or 0
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks}))
    p = Process(proc, proc.pid, ticks, pid_file)
    loop = asyncio.get_running_loop()
    p._readers = [loop.create_task(_pump(proc.stdout, on_line, "stdout")),
                  loop.create_task(_pump(proc.stderr, on_line, "stderr"))]
    return p


def kill_leftovers(pods_dir: Path) -> int:
    """Kill the process groups recorded in pid files under ``pods_dir`` (a previous run's); remove the files."""
    killed = 0
    for pf in pods_dir.glob("*/containers/*.pid"):
        try:
            rec = json.loads(pf.read_text())
            pid, ticks = int(rec["pid"]), int(rec["start_ticks"])
        except (OSError, ValueError, KeyError):
            rec = None
        if rec is not None and proc_start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
        with contextlib.suppress(FileNotFoundError):
            pf.unlink()
    return killed


@dataclass
class GroupUsage:
    """Resource use of one process group: CPU seconds of its live processes, resident bytes."""

    cpu_s: float = 0.0
    rss: int = 0
    pids: dict[int, float] = field(default_factory=dict)  # pid -> cpu seconds


def sample_groups(pgids: set[int]) -> dict[int, GroupUsage]:
    """One pass over /proc: usage per process group of ``pgids``."""
    out: dict[int, GroupUsage] = {g: GroupUsage() for g in pgids}
    if not pgids:
        return out
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
        except OSError:
            continue
        f = raw[raw.rfind(b")") + 2:].split()
        pgrp = int(f[2])
        u = out.get(pgrp)
        if u is None:
            continue
        cpu = (int(f[11]) + int(f[12])) / _CLK_TCK
        u.cpu_s += cpu
        u.rss += int(f[21]) * _PAGE
        u.pids[int(entry.name)] = cpu
    return out
