"""Idle RSS of ``pitwall server`` on an empty data directory, and where it goes.

Starts ``pitwall server`` with default settings on a fresh data directory
(OTLP/gRPC on a free port instead of 4317, so runs do not collide), waits for
``/-/ready``, sleeps ``--idle`` seconds and reads the process's ``VmRSS``,
``/proc/<pid>/smaps_rollup`` (anonymous vs file-backed), its thread count and
the largest file-backed mappings (the native libraries' text). Then restarts it
on the same data directory (a restart skips first-start work such as the state
database's migrations) and reads the same. ``--runs`` times each; prints one
JSON line per start and the medians.

Children run with ``PYTHONDONTWRITEBYTECODE`` unset, as an installed package
runs; a throwaway first start writes the bytecode.

    PYTHONPATH=src python bench/idle_rss.py --runs 3 --idle 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port


def _kib(line: str) -> float:
    return int(line.split()[1]) / 1024


def read_proc(pid: int, top: int) -> dict[str, object]:
    """RSS, its anonymous/file split, threads and the ``top`` largest file-backed mappings (MiB)."""
    out: dict[str, object] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mib"] = round(_kib(line), 1)
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty"):
            out[key.lower() + "_mib"] = round(_kib(line), 1)
    files: Counter[str] = Counter()
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            current = head[5] if len(head) > 5 and head[5].startswith("/") else ""
        elif line.startswith("Rss:") and current:
            files[Path(current).name] += int(head[1])
    out["files_mib"] = {name: round(kib / 1024, 1) for name, kib in files.most_common(top)}
    return out


def start_idle(data: Path, idle_s: float, top: int) -> dict[str, object]:
    """Start ``pitwall server`` on ``data``, wait for ready and ``idle_s`` seconds, read it, stop it."""
    port = free_port()
    env = dict(os.environ, PITWALL_LOG_LEVEL="warning", PITWALL_OTLP_GRPC__LISTEN=f"127.0.0.1:{free_port()}")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = open(data / "server.log", "ab")  # noqa: SIM115 - closed below
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}; see {data / 'server.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        ready = round(time.monotonic() - t, 2)
        time.sleep(idle_s)
        return {"ready_s": ready, **read_proc(proc.pid, top)}
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=30, help="seconds idle after ready before reading")
    ap.add_argument("--top", type=int, default=12, help="largest file-backed mappings to list")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pitwall-idle-rss-"))
    try:
        warm = root / "warm"
        warm.mkdir()
        start_idle(warm, 0, 0)  # writes the bytecode
        first: list[float] = []
        again: list[float] = []
        for i in range(args.runs):
            data = root / f"run{i}"
            data.mkdir()
            res = start_idle(data, args.idle, args.top)
            first.append(float(res["rss_mib"]))  # type: ignore[arg-type]
            print(json.dumps({"start": "first", **res}), flush=True)
            res = start_idle(data, args.idle, args.top)
            again.append(float(res["rss_mib"]))  # type: ignore[arg-type]
            print(json.dumps({"start": "restart", **res}), flush=True)
        print(json.dumps({"median_first_mib": statistics.median(first), "median_restart_mib": statistics.median(again),
                          "first": first, "restart": again}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
