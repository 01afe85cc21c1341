"""Server time of the pipelines pages: one pipeline of N jobs over S stages (each job ``needs`` one of the
previous stage), then the median and worst time of the pipelines list, the pipeline page (graph, jobs table)
and a job's log fragment (from the job's log file), each requested R times in process over ASGI.

    .venv/bin/python bench/ui_pipelines_pages.py [--jobs 40] [--stages 5] [--rounds 20]

The runner over a SQLite revstore, no log or metric store, no browser (``bench/ui_first_paint.py`` measures
paint). Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import httpx
from fastapi import FastAPI

from pitwall.metrics import TargetsSnapshot
from pitwall.pipelines import PipelineRunner, PipelinesSettings
from pitwall.pipelines.report import Reporter
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.ui.pipelines_view import RunnerPipelines
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps


def _repo(root: Path, jobs: int, stages: int) -> Path:
    root.mkdir()
    names = [f"s{i}" for i in range(stages)]
    ci = f"stages: [{', '.join(names)}]\n"
    for i in range(jobs):
        st = i % stages
        needs = f"  needs: [j{i - 1}]\n" if st > 0 else ""
        ci += f"j{i}:\n  stage: {names[st]}\n{needs}  script: [seq 1 200]\n"
    (root / ".gitlab-ci.yml").write_text(ci)
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    return root


async def _time(c: httpx.AsyncClient, path: str, rounds: int) -> tuple[float, float]:
    ms = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = await c.get(path)
        ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return statistics.median(ms), max(ms)


async def main(jobs: int, stages: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = SqliteRevStore(root / "state.db", compact_interval_s=None)
        await store.start()
        runner = PipelineRunner(store, root / "pipelines", PipelinesSettings(concurrency=4), Reporter(None, None, None))
        await runner.start()
        try:
            p = await runner.create(str(_repo(root / "repo", jobs, stages)), "main", [])
            while (await runner.store.pipeline(p["id"]) or {}).get("status") not in ("success", "failed"):
                await asyncio.sleep(0.1)
            deps = UIDeps(settings=UISettings(), metrics=cast(Any, None), targets=lambda: TargetsSnapshot([], [], {}),
                          traces=None, logs=None, alerts=None, dashboards=cast(Any, None),
                          pipelines=RunnerPipelines(runner))
            app = FastAPI()
            app.include_router(ui_router(deps))
            job = (await runner.store.jobs(p["id"]))[-1]
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
                print(f"{jobs} jobs in {stages} stages, {rounds} requests each (median / worst ms):")
                for label, path in (("pipelines list", "/pipelines"),
                                    ("pipeline page", f"/pipelines/{p['project_id']}/{p['id']}"),
                                    ("job log (file)", f"/ui/fragment/pipelines/jobs/{job['id']}/log"),
                                    ("DORA page", "/pipelines/dora")):
                    med, worst = await _time(c, path, rounds)
                    print(f"  {label:16} {med:7.1f} {worst:7.1f}")
        finally:
            await runner.stop()
            await store.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--stages", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    asyncio.run(main(a.jobs, a.stages, a.rounds))
