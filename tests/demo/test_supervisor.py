"""The supervisor ends every child, its children, and children of a supervisor that died."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pitwall.demo.supervisor import ChildFailed, Supervisor


def gone(pid: int, within_s: float = 15.0) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _read_pid(log: Path, within_s: float = 15.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return int(text.split()[0])
        time.sleep(0.05)
    raise TimeoutError(f"no pid in {log}")


def test_stop_all_ends_children_and_grandchildren(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    script = "import subprocess, sys, time\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid, flush=True)\ntime.sleep(60)"
    child = sup.start("parent", [sys.executable, "-c", script])
    grandchild = _read_pid(child.log_path)
    assert os.getpgid(grandchild) == child.pid  # same group, its own session
    assert os.getsid(child.pid) == child.pid
    sup.stop_all(grace_s=5)
    assert child.proc.returncode is not None
    assert gone(grandchild)
    assert sup.children == []


def test_a_child_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"
    child = sup.start("stubborn", [sys.executable, "-c", script])
    _wait_for_text(child.log_path, "ready")
    sup.stop_all(grace_s=0.5)
    assert child.proc.returncode == -9


def test_wait_ready_reports_a_child_that_died(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    child = sup.start("broken", [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
                      ready_url="http://127.0.0.1:9/healthz")
    with pytest.raises(ChildFailed, match=r"broken exited with code 3 while starting:\nbad config"):
        sup.wait_ready(child, timeout_s=30)
    assert sup.exited() == [child]
    sup.stop_all()


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """A supervisor that dies without cleanup (kill -9) leaves no child running (Linux PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from pitwall.demo.supervisor import Supervisor
        c = Supervisor(Path({str(tmp_path / 'logs')!r})).start("orphan", [sys.executable, "-c", "import time; time.sleep(60)"])
        print(c.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert gone(int(out.stdout.split()[0]))


def _wait_for_text(path: Path, text: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{text!r} not in {path}")
