"""A git repository per test and a runner over a SQLite revstore under the test's directory."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.report import Reporter
from pitwall.pipelines.runner import PipelineRunner, latest_jobs
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.storage.revstore.sqlite import SqliteRevStore

FINAL = {"success", "failed", "canceled", "skipped", "manual"}


def make_repo(root: Path, files: dict[str, str], branch: str = "main") -> Path:
    """A git repository with ``files`` committed on ``branch``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", branch], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial"], check=True)
    return root


class Sink:
    """Collects what the runner reports (log lines, samples, change events)."""

    def __init__(self) -> None:
        self.lines: list[tuple[dict[str, str], str]] = []
        self.samples: list[tuple[str, dict[str, str], float]] = []
        self.changes: list[Any] = []

    async def push(self, tenant: str, streams: Any) -> None:
        for s in streams:
            for e in s.entries:
                self.lines.append((dict(s.labels), e.line))

    async def append(self, tenant: str, batch: Any) -> None:
        for i, v in zip(batch.series_idx, batch.values, strict=True):
            lbl = dict(batch.series[int(i)])
            self.samples.append((lbl.pop("__name__"), lbl, float(v)))

    async def record(self, ev: Any) -> Any:
        self.changes.append(ev)
        return ev


@pytest.fixture
async def runner_env(tmp_path: Path) -> AsyncIterator[tuple[PipelineRunner, Sink, Callable[..., PipelineRunner]]]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    sink = Sink()
    made: list[PipelineRunner] = []

    def new_runner(**settings: Any) -> PipelineRunner:
        r = PipelineRunner(store, tmp_path / "pipelines", PipelinesSettings(**settings),
                           Reporter(sink, sink, sink))  # type: ignore[arg-type]
        made.append(r)
        return r

    runner = new_runner()
    await runner.start()
    try:
        yield runner, sink, new_runner
    finally:
        for r in made:
            await r.stop()
        await store.stop()


async def wait_done(runner: PipelineRunner, pid: int, timeout: float = 60, until: set[str] | None = None
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Poll until the pipeline reaches a final status (or ``manual``); its current jobs by name."""
    deadline = time.monotonic() + timeout
    want = until or FINAL
    while True:
        p = await runner.store.pipeline(pid)
        assert p is not None
        driver = runner._drivers.get(pid)
        if p["status"] in want and (driver is None or driver.done()):
            jobs = latest_jobs(await runner.store.jobs(pid))
            return p, {j["name"]: j for j in jobs}
        if time.monotonic() > deadline:
            raise AssertionError(f"pipeline {pid} still {p['status']}")
        await asyncio.sleep(0.05)
