"""Shared bench plumbing: start pitwall and Debian's prometheus side by side, or pitwall alone with a config."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from pitwall.cli._progress import ProgressLine, bar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = REPO.parent / "shared" / "bench"


def progress(items: Sequence[T], label: str) -> Iterator[T]:
    """``items`` one by one, drawing ``[###---]  40% label  4/10, 12 s`` on stderr as it goes: on a terminal,
    or anywhere with ``BENCH_PROGRESS=1`` (``0`` hides it); cleared at the end, so the figures print clean."""
    flag = os.environ.get("BENCH_PROGRESS")
    line = ProgressLine(None if flag is None else flag == "1")
    t0 = time.monotonic()
    try:
        for i, item in enumerate(items):
            line.show(bar(i / len(items), label, f"{i}/{len(items)}, {time.monotonic() - t0:.0f} s"))
            yield item
    finally:
        line.done()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class Server:
    """A server process with its data dir, for one bench run."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.dir = workdir / kind
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
        if kind == "prometheus":
            (self.dir / "prometheus.yml").write_text("global: {}\n")
            cmd = ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
                   f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                   "--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=100y",
                   "--query.max-samples=50000000"]
        else:
            cmd = [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(self.dir / "data"),
                   "--listen", f"127.0.0.1:{self.port}", "--retention", "100y"]
        env = dict(os.environ, PITWALL_LOG_LEVEL="warning")
        env.setdefault("PITWALL_OTLP_GRPC__LISTEN", "127.0.0.1:0")  # not the shared 4317 unless asked
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        wait_ready(self.url, self.proc)

    def rss_mib(self) -> tuple[float, float]:
        """(current, peak) resident memory in MiB."""
        cur = peak = 0.0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
        return cur, peak

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.dir / "data").rglob("*") if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_shared(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one of ../shared/bench's scripts with --json and return its result."""
    out = subprocess.run(
        [sys.executable, str(SHARED_BENCH / script), *args, "--json"],
        capture_output=True, text=True, check=False, env=dict(os.environ, **(env or {})), timeout=3600,
    )
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{script} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


@contextmanager
def pitwall_with_config(config: dict[str, Any], port: int | None = None) -> Iterator[str]:
    """`pitwall server` with ``config`` as its config file and a temporary data dir (output discarded), on
    ``port`` (default: a free one): its URL once ready; terminated on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "pitwall.yaml"
        cfg.write_text(yaml.safe_dump(config))
        port = port or free_port()
        proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--config", str(cfg),
                                 "--data-dir", str(Path(tmp) / "data"), "--listen", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


INCIDENTS_KEY = "BENCHKEY000000000000000000000001"


def incidents_config() -> dict[str, Any]:
    """The ``incidents`` settings of the incident benches: one service (integration key ``INCIDENTS_KEY``), a
    weekly schedule of two users and a two-level escalation policy; no Events API rate limit to speak of."""
    return {
        "events_per_minute": 10_000_000,
        "users": [{"name": "Alice", "email": "alice@example.com"}, {"name": "Bob", "email": "bob@example.com"}],
        "schedules": [{"name": "Primary", "time_zone": "Europe/Berlin", "schedule_layers": [{
            "start": "2026-01-05T09:00:00+01:00", "rotation_virtual_start": "2026-01-05T09:00:00+01:00",
            "rotation_turn_length_seconds": 604800, "users": ["Alice", "Bob"]}]}],
        "escalation_policies": [{"name": "P", "escalation_rules": [
            {"escalation_delay_in_minutes": 30, "targets": [{"type": "schedule_reference", "id": "Primary"}]},
            {"escalation_delay_in_minutes": 30, "targets": [{"type": "user_reference", "id": "Bob"}]}]}],
        "services": [{"name": "web", "escalation_policy": "P", "integration_keys": [INCIDENTS_KEY]}],
    }
