"""What the chaos shim costs a pod's process: ns per call of ``time.time()`` and of a small file's
open+read+close, without the shim, with it and no fault, with a TimeChaos offset, and with an IOChaos
rule that matches another directory (every file call then resolves its path).

    .venv/bin/python bench/chaos_shim.py [--calls 200000] [--files 20000] [--repeat 3]

Each case is a fresh Python process (the shim is preloaded at start); the best of ``--repeat`` runs is
shown, as Python's ``timeit`` does. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pitwall.chaos.shimfaults import glob_escape, time_line
from pitwall.node.chaosshim import write_control
from pitwall.node.podconfig import chaos_shim_library, preload_env

CHILD = """
import json, sys, time
calls, files, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter_ns()
for _ in range(calls):
    time.time()
t1 = time.perf_counter_ns()
for _ in range(files):
    with open(path) as f:
        f.read()
t2 = time.perf_counter_ns()
print(json.dumps({"time_ns": (t1 - t0) / calls, "file_ns": (t2 - t1) / files}))
"""


def run(env: dict[str, str], calls: int, files: int, path: Path, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, str(calls), str(files), str(path)], env=env,
                             capture_output=True, text=True, check=True).stdout
        for k, v in json.loads(out).items():
            best[k] = min(best.get(k, v), v)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not chaos_shim_library():
        sys.exit("pitwall.node._chaosshim is not built")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        target, control = d / "f.txt", d / "control"
        target.write_text("x" * 100)
        base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PITWALL_CHAOS_FILE")}
        shim = {**base, **preload_env("", str(control))}
        other = glob_escape(str(d / "elsewhere"))
        cases = [("no shim", base, None), ("shim, no fault", shim, {}),
                 ("shim, TimeChaos -10m", shim, {"t": [time_line({"timeOffset": "-10m"})]}),
                 ("shim, IOChaos elsewhere", shim, {"io": [f"io f 0 5 100 0 {other}/**"]})]
        print(f"{'case':<26}{'time.time() ns':>16}{'open+read+close ns':>20}")
        for name, env, faults in cases:
            if faults is None:
                control.unlink(missing_ok=True)
            else:
                write_control(control, faults)
            r = run(env, a.calls, a.files, target, a.repeat)
            print(f"{name:<26}{r['time_ns']:>16.0f}{r['file_ns']:>20.0f}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
