"""The podman executor's cost: the same trivial job (``script: ['true']``) run by the shell executor and
under ``podman run`` in a local busybox image (built here from the host's static busybox, no registry),
running -> finished per job (clone, script or container start/stop, clean-up).

    .venv/bin/python bench/pipelines_podman.py [--jobs 10] [--podman podman --runtime runc]

Needs podman and busybox (``make peers``). The runner over a SQLite revstore in one process, concurrency 1.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pitwall.pipelines.report import Reporter
from pitwall.pipelines.runner import PipelineRunner, latest_jobs
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.storage.revstore.sqlite import SqliteRevStore

TAG = "localhost/pitwall-bench-busybox:latest"
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _image(ctx: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox is not installed")
    (ctx / "root" / "bin").mkdir(parents=True)
    shutil.copy(busybox, ctx / "root" / "bin" / "busybox")
    for applet in ("sh", "true"):
        (ctx / "root" / "bin" / applet).symlink_to("busybox")
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY root/ /\nENV PATH=/bin\n")
    subprocess.run(["podman", "build", "-q", "-t", TAG, str(ctx)], check=True, capture_output=True)


def _repo(root: Path, jobs: int, image: bool) -> Path:
    root.mkdir()
    img = f"  image: {TAG}\n" if image else ""
    (root / ".gitlab-ci.yml").write_text("".join(f"j{i}:\n{img}  script: ['true']\n" for i in range(jobs)))
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    return root


async def _run(runner: PipelineRunner, repo: Path) -> list[float]:
    p = await runner.create(str(repo), None, [])
    while (await runner.store.pipeline(p["id"]) or {})["status"] not in ("success", "failed"):
        await asyncio.sleep(0.01)
    jobs = latest_jobs(await runner.store.jobs(p["id"]))
    if any(j["status"] != "success" for j in jobs):
        raise SystemExit(runner.trace(jobs[0]["id"]).decode())
    return [j["finished_at"] - j["started_at"] for j in jobs]


async def main(jobs: int, podman: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _image(tmp / "image")
        store = SqliteRevStore(tmp / "state.db", compact_interval_s=None)
        await store.start()
        settings = PipelinesSettings(concurrency=1, podman=podman, podman_run_args=LIMITS)
        runner = PipelineRunner(store, tmp / "p", settings, Reporter(None, None, None))
        await runner.start()
        try:
            for name, image in (("shell", False), ("podman", True)):
                t0 = time.monotonic()
                took = await _run(runner, _repo(tmp / name, jobs, image))
                print(f"{name:>6}: {jobs} jobs in {time.monotonic() - t0:.1f} s; running -> finished p50 "
                      f"{statistics.median(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms")
        finally:
            await runner.stop()
            await store.stop()
            subprocess.run(["podman", "rmi", "-f", TAG], capture_output=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--podman", nargs="+", default=["podman", "--runtime", "runc"])
    a = ap.parse_args()
    asyncio.run(main(a.jobs, a.podman))
