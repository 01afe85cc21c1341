"""Remote-write ingest: pitwall vs Debian's Prometheus on ../shared/bench's workload.

Prints samples/s, server CPU-seconds, RSS and bytes on disk per sample, each
with the ratio pitwall/prometheus. Run with `make bench` (not part of tests).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from common import Server, ratio, run_shared


def one(kind: str, spr: int, work: Path, env: dict[str, str]) -> dict[str, float]:
    srv = Server(kind, work)
    try:
        cpu0 = srv.cpu_seconds()
        res = run_shared("prom_remote_write.py", "--url", srv.url + "/api/v1/write",
                         "--samples-per-series-per-req", str(spr), env=env)
        if not res["ok"]:
            raise RuntimeError(f"{kind}: push failed: {res['errors']}")
        cpu = srv.cpu_seconds() - cpu0
        rss, peak = srv.rss_mib()
        time.sleep(1)
    finally:
        srv.stop()
    disk = srv.disk_bytes()
    return {"samples_per_s": res["samples_per_s"], "samples_per_cpu_s": res["samples"] / cpu,
            "rss_mib": rss, "peak_rss_mib": peak, "bytes_per_sample": disk / res["samples"]}


def main() -> None:
    t0 = str(int(time.time()) // 60 * 60 - 3600)
    env = {"BENCH_T0": t0}
    work = Path(tempfile.mkdtemp(prefix="pitwall-bench-"))
    print(f"workload: ../shared/bench/prom_datagen.py (10k series x 120 samples), BENCH_T0={t0}, work={work}")
    for spr in (1, 10):
        p = one("pitwall", spr, work, env)
        q = one("prometheus", spr, work, env)
        print(f"\n== remote write, {spr} sample(s)/series/request ==")
        print(f"{'metric':24s} {'pitwall':>12s} {'prometheus':>12s} {'ratio':>8s}")
        for k in ("samples_per_s", "samples_per_cpu_s", "rss_mib", "peak_rss_mib", "bytes_per_sample"):
            print(f"{k:24s} {p[k]:12.1f} {q[k]:12.1f} {ratio(p[k], q[k]):>8s}")
    if os.environ.get("KEEP") != "1":
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
