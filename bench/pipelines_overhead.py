"""Runner overhead: a pipeline of N trivial jobs (``script: ['true']``) from create to success, and per job
from pending to finished (clone of the repository at the commit, the script, clean-up).

    .venv/bin/python bench/pipelines_overhead.py [--jobs 20] [--concurrency 2] [--rounds 3]

The runner over a SQLite revstore in one process, no HTTP, no log or metric store. GitLab Runner's shell
executor does the same work per job (fetch, script, clean-up); gitlab-ci-local takes about 2 s for the
8-job pipeline of tests/pipelines/test_differential.py on the same machine. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pitwall.pipelines.report import Reporter
from pitwall.pipelines.runner import PipelineRunner, latest_jobs
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.storage.revstore.sqlite import SqliteRevStore


def _repo(root: Path, jobs: int) -> Path:
    root.mkdir()
    ci = "stages: [a, b]\n" + "".join(f"j{i}:\n  stage: {'ab'[i % 2]}\n  script: ['true']\n" for i in range(jobs))
    (root / ".gitlab-ci.yml").write_text(ci)
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    return root


async def main(jobs: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        repo = _repo(tmp / "repo", jobs)
        store = SqliteRevStore(tmp / "state.db", compact_interval_s=None)
        await store.start()
        runner = PipelineRunner(store, tmp / "p", PipelinesSettings(concurrency=concurrency), Reporter(None, None, None))
        await runner.start()
        totals, per_job = [], []
        for _ in range(rounds):
            t0 = time.monotonic()
            p = await runner.create(str(repo), None, [])
            while (await runner.store.pipeline(p["id"]) or {})["status"] not in ("success", "failed"):
                await asyncio.sleep(0.01)
            totals.append(time.monotonic() - t0)
            for j in latest_jobs(await runner.store.jobs(p["id"])):
                per_job.append(j["finished_at"] - j["started_at"])
        await runner.stop()
        await store.stop()
    print(f"{jobs} jobs, concurrency {concurrency}, {rounds} rounds")
    print(f"pipeline create -> success: p50 {statistics.median(totals):.2f} s, max {max(totals):.2f} s")
    print(f"job running -> finished: p50 {statistics.median(per_job) * 1000:.0f} ms, "
          f"max {max(per_job) * 1000:.0f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.jobs, a.concurrency, a.rounds))
