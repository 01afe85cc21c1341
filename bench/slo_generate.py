"""SLO rule generation: specs -> Prometheus rules (``pitwall slo generate``), SLOs per second.

Sloth itself is a Go binary that no registry here ships, so this prints pitwall's figure alone:
N SLOs in one prometheus/v1 spec, generated (validation with PromQL parsing included) and rendered.
Run: ``PYTHONPATH=src python bench/slo_generate.py [N]``.
"""

from __future__ import annotations

import sys
import time

from pitwall.slo.generate import GenerateOptions, generate_group
from pitwall.slo.render import render_rule_file
from pitwall.slo.spec import load_documents


def spec(n: int) -> str:
    slos = "".join(f"""
  - name: slo-{i}
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{{job="svc",route="/r{i}",code=~"5.."}}[{{{{.window}}}}]))
        total_query: sum(rate(http_requests_total{{job="svc",route="/r{i}"}}[{{{{.window}}}}]))
    alerting:
      name: Burn{i}
      page_alert: {{labels: {{severity: page}}}}
      ticket_alert: {{labels: {{severity: ticket}}}}""" for i in range(n))
    return f"version: prometheus/v1\nservice: svc\nslos:{slos}\n"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    text = spec(n)
    t0 = time.perf_counter()
    [group] = load_documents([("bench.yaml", text)])
    t1 = time.perf_counter()
    results = generate_group(group, GenerateOptions())
    t2 = time.perf_counter()
    out = render_rule_file([(group, results)], "bench")
    t3 = time.perf_counter()
    rules = sum(len(g.rules) for r in results for g in r.rules.groups())
    print(f"{n} SLOs -> {rules} rules, {len(out) / 1e6:.1f} MB of YAML")
    print(f"parse {1e3 * (t1 - t0):.0f} ms, generate+validate {1e3 * (t2 - t1):.0f} ms, render {1e3 * (t3 - t2):.0f} ms;"
          f" {n / (t3 - t0):.0f} SLOs/s end to end")


if __name__ == "__main__":
    main()
