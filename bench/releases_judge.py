"""How long the Kayenta judge takes for one canary analysis (p50/max per judgement).

    .venv/bin/python bench/releases_judge.py [--metrics 10] [--points 60 600 6000] [--rounds 5]

Each judgement compares ``--metrics`` metrics of ``points`` samples per side
(lognormal latencies, the canary 5% slower), without ties at 40 points (the
exact Wilcoxon tables) and through the normal approximation beyond 50. Kayenta
runs its judge once per analysis interval; its own target is not published.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pitwall.releases.judge import JudgeConfig, MetricInput, judge


def _metrics(n_metrics: int, points: int, rng: np.random.Generator) -> list[MetricInput]:
    out = []
    for i in range(n_metrics):
        base = rng.lognormal(np.log(100), 0.3, points)
        canary = rng.lognormal(np.log(105), 0.3, points)
        out.append(MetricInput(f"m{i}", canary=canary.tolist(), baseline=base.tolist(),
                               outlier_strategy="remove"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", type=int, default=10)
    ap.add_argument("--points", type=int, nargs="+", default=[40, 600, 6000])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    for points in args.points:
        times = []
        for _ in range(args.rounds):
            metrics = _metrics(args.metrics, points, rng)
            start = time.perf_counter()
            judge(metrics, JudgeConfig())
            times.append(time.perf_counter() - start)
        print(f"{args.metrics} metrics x {points} points/side: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
