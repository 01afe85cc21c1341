"""`pitwall import metrics`: samples/s and client peak RSS for a 1M-sample OpenMetrics backfill.

Writes a file of 1,000 series x 1,000 samples (15 s apart, ending an hour
ago), starts a pitwall server, runs the real CLI in a subprocess and prints
samples/s (wall clock of the command) and the command's peak RSS. Run by hand
(not part of tests): `python bench/metrics_import.py [--series N] [--points N]`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Server


def write_file(path: Path, series: int, points: int) -> int:
    """Family-grouped OpenMetrics, each series in time order; returns the sample count."""
    start = int(time.time()) - 3600 - points * 15
    with path.open("w") as f:
        f.write("# TYPE bench_requests counter\n")
        for s in range(series):
            lbl = f'{{instance="host-{s % 50}:9100",job="bench",shard="{s}"}}'
            f.writelines(f"bench_requests_total{lbl} {i * 3} {start + i * 15}.5\n" for i in range(points))
        f.write("# EOF\n")
    return series * points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitwall-bench-import-"))
    src = work / "history.om"
    n = write_file(src, args.series, args.points)
    print(f"file: {n} samples, {args.series} series, {src.stat().st_size / 2**20:.1f} MiB")
    srv = Server("pitwall", work)
    try:
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "import", "metrics", str(src),
                              "--server", srv.url, "--batch", str(args.batch), "--no-progress"],
                             capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if out.returncode != 0:
            raise SystemExit(f"import failed: {out.stderr}")
        print(out.stdout.strip())
        print(f"import: {n / wall:,.0f} samples/s ({wall:.1f} s wall), client peak RSS {peak:.0f} MiB")
        _, server_peak = srv.rss_mib()
        print(f"server peak RSS {server_peak:.0f} MiB")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
