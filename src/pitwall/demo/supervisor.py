"""Child processes that always end: own process groups, ordered stop, no orphans.

Each child runs in a new session (so its own process group): a Ctrl-C in
the terminal reaches only the supervisor, which then stops the children in
the reverse order of their start, first politely (SIGTERM to the whole
group), then with SIGKILL after a grace period. On Linux each child also
asks the kernel for SIGTERM should the supervisor die without cleaning up
(``PR_SET_PDEATHSIG``), so even ``kill -9`` of the supervisor leaves no
orphan running for long.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "ChildFailed", "Supervisor"]

PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child exited or never became ready; the message ends with its log's tail."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    ready_url: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM me when my parent dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervisor:
    """Starts children, waits for them to be ready, and stops them all."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ, PYTHONUNBUFFERED="1"))
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], ready_url: str | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        child = Child(name, list(argv), log_path, proc, ready_url)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, timeout_s: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Poll ``child.ready_url`` until it answers 200; raise ChildFailed if the child dies first."""
        assert child.ready_url is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not stop():
            if not child.alive():
                raise ChildFailed(f"{child.name} exited with code {child.proc.returncode} while starting:\n"
                                  f"{child.log_tail()}")
            try:
                with urllib.request.urlopen(child.ready_url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        if not stop():
            raise ChildFailed(f"{child.name} not ready after {timeout_s:.0f}s:\n{child.log_tail()}")

    def exited(self) -> list[Child]:
        """Children that have ended on their own."""
        return [c for c in self.children if not c.alive()]

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every child, last started first; SIGKILL any group still there after ``grace_s``."""
        for child in reversed(self.children):
            self._stop(child, grace_s)
        self.children.clear()

    def _stop(self, child: Child, grace_s: float) -> None:
        _signal_group(child.pid, signal.SIGTERM)
        try:
            child.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            child.proc.wait(timeout=grace_s)
        # The leader is gone; anything it forked in its group goes too.
        _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
