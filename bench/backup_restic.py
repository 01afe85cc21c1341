"""pitwall's self-backup against plain ``restic backup`` of the same data: time and repository growth.

    .venv/bin/python bench/backup_restic.py [--size-mib 256] [--rounds 5]

A data directory with a mixed data set (half random bytes, a quarter text,
a quarter many small files under ``pods/``) and a DuckDB file is backed up
(1) by ``SelfBackup.run`` (the consistent copy, then restic) into one
repository and (2) by ``restic backup`` run directly on the directory into
another, in the same run; then 1% of the files change and both back up
again (``--rounds N``: N times, a different 1% each, who runs first
alternating, and the median). The issue's goal: pitwall within 1.1x
restic's time (its overhead is the copy) and the same repository growth.
"cleanup after" is the removal of the staging directory, which the run
leaves to a background thread once the snapshot is written (not in pitwall's
time). Each run also prints pitwall's steps and the CPU seconds of pitwall
itself, of its restic and of the plain restic: on a loaded machine wall
times scatter by tens of percent, CPU times hardly. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pitwall.backup import RepoLocks, Restic, SelfBackup
from pitwall.backup.stats import BackupStats
from pitwall.storage.duckdb import TelemetryDB

PASSWORD = "bench"


def _make(data: Path, size: int) -> list[Path]:
    """The data set; returns its files."""
    files: list[Path] = []
    big = data / "pods" / "big"
    big.mkdir(parents=True)
    for i in range(max(1, size // 2 // (8 << 20))):
        p = big / f"random-{i}.bin"
        p.write_bytes(os.urandom(8 << 20))
        files.append(p)
    text = (b"ts=2026-01-01T00:00:00Z level=info msg=\"request served\" status=200 path=/api/items\n" * 1000)
    for i in range(max(1, size // 4 // len(text))):
        p = data / "pods" / "logs" / f"app-{i}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text + str(i).encode())
        files.append(p)
    for i in range(max(1, size // 4 // 16384)):
        p = data / "pods" / "small" / f"{i % 64}" / f"f{i}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(16384))
        files.append(p)
    return files


def _repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _restic_direct(repo: Path, data: Path) -> tuple[float, float]:
    """Wall time and restic's CPU time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = PASSWORD
    t0, c0 = time.monotonic(), _children_cpu()
    subprocess.run(["restic", "-r", str(repo), "backup", ".", "--exclude", "lock", "-q"], cwd=data, env=env,
                   check=True)
    return time.monotonic() - t0, _children_cpu() - c0


async def _pitwall(sb: SelfBackup, repo: Path) -> tuple[float, float, dict[str, float], float, float]:
    """The run's time, that of the staging directory's removal after it (off the run's path), its steps',
    pitwall's own CPU time in it and restic's. CPU times hardly move with the machine's load, wall times do."""
    t0, p0, c0 = time.monotonic(), time.process_time(), _children_cpu()
    run = await sb.run(Restic(str(repo), PASSWORD))
    if run.phase != "Completed":
        raise SystemExit(f"self-backup failed: {run.error}")
    t1, p1, c1 = time.monotonic(), time.process_time(), _children_cpu()
    await sb.settled()
    return t1 - t0, time.monotonic() - t1, run.steps_s, p1 - p0, c1 - c0


Row = tuple[str, float, float, float, int, int]  # label, pitwall s, restic s, cleanup s, growths


def _change(files: list[Path], round_: int) -> None:
    """Rewrite 1% of the files (a different 1% each round)."""
    n = max(1, len(files) // 100)
    step = max(1, len(files) // n)
    for p in files[round_ % step:: step][:n]:
        p.write_bytes(os.urandom(p.stat().st_size))


def _both(root: Path, data: Path, sb: SelfBackup, label: str, pitwall_first: bool) -> Row:
    """One backup by each, in the given order; the row, after printing pitwall's steps and CPU times."""
    before_p, before_r = _repo_bytes(root / "repo-pitwall"), _repo_bytes(root / "repo-restic")
    if not pitwall_first:
        t_r, cpu_r = _restic_direct(root / "repo-restic", data)
    t_p, t_c, steps, cpu_own, cpu_pr = asyncio.run(_pitwall(sb, root / "repo-pitwall"))
    if pitwall_first:
        t_r, cpu_r = _restic_direct(root / "repo-restic", data)
    print(f"{label} ({'pitwall' if pitwall_first else 'restic'} first): pitwall's steps "
          + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
          + f"; CPU s: pitwall itself {cpu_own:.2f}, its restic {cpu_pr:.2f}, plain restic {cpu_r:.2f}")
    return (label, t_p, t_r, t_c, _repo_bytes(root / "repo-pitwall") - before_p,
            _repo_bytes(root / "repo-restic") - before_r)


def _print(rows: list[Row]) -> None:
    print(f"{'':24} {'pitwall s':>10} {'restic s':>10} {'ratio':>6} {'growth pitwall MiB':>19} "
          f"{'growth restic MiB':>18} {'cleanup after s':>16}")
    for label, t_p, t_r, t_c, g_p, g_r in rows:
        print(f"{label:24} {t_p:10.2f} {t_r:10.2f} {t_p / t_r:6.2f} {g_p / 2**20:19.1f} {g_r / 2**20:18.1f}"
              f" {t_c:16.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1,
                    help="1%% changes backed up (each a different 1%%; who runs first alternates; the median "
                         "of the rounds is printed too)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pitwall-bench-backup-"))
    try:
        data = root / "data"
        data.mkdir()
        db = TelemetryDB(data / "telemetry.duckdb")
        db.execute("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)")
        files = _make(data, args.size_mib << 20)
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        env = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
        for name in ("repo-pitwall", "repo-restic"):
            subprocess.run(["restic", "-r", str(root / name), "init", "-q"], env=env, check=True)
        sb = SelfBackup(data, db, locks=RepoLocks(), stats=BackupStats())
        print(f"data set: {size / 2**20:.0f} MiB in {len(files)} files")
        rows = [_both(root, data, sb, "first backup", False)]
        for i in range(args.rounds):
            _change(files, i)
            rows.append(_both(root, data, sb, "after a 1% change" + (f" #{i + 1}" if args.rounds > 1 else ""),
                              i % 2 == 1))
        if args.rounds > 1:
            med = [statistics.median(float(r[k]) for r in rows[1:]) for k in range(1, 6)]
            rows.append(("median of the changes", med[0], med[1], med[2], int(med[3]), int(med[4])))
        _print(rows)
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
