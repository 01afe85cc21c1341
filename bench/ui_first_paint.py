"""First paint of every UI page, measured in Debian's chromium (Playwright), on a seeded server.

The target is a first contentful paint under 300 ms per page on the demo-sized
data set; this prints the median and worst of several cold loads per page and
the ratio to that target, beside Prometheus' own /graph and /targets pages
when Debian's prometheus is installed. It never fails on a slow figure: it
measures.

    .venv/bin/python bench/ui_first_paint.py [--runs 7] [--traces 400]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import free_port, wait_ready  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402
from tests.ui.conftest import ui_settings_kwargs  # noqa: E402
from tests.ui.seed import KNOWN_TRACE, seed  # noqa: E402

from pitwall.config import load_settings  # noqa: E402

TARGET_MS = 300.0
PAGES = [
    ("overview", "/"),
    ("metrics", "/graph?expr=sum+by+(instance)+(rate(http_requests_total[5m]))"),
    ("logs", "/logs?query=%7Bservice_name%3D%22checkout%22%7D"),
    ("traces", "/traces"),
    ("trace", f"/traces/{KNOWN_TRACE}"),
    ("service map", "/services"),
    ("service", "/services/checkout"),
    ("alerts", "/alerts"),
    ("dashboards", "/dashboards"),
    ("dashboard", "/dashboards/checkout"),
    ("targets", "/targets"),
]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FCP = """() => new Promise(resolve => {
  const got = performance.getEntriesByName('first-contentful-paint')[0];
  if (got) return resolve(got.startTime);
  new PerformanceObserver(l => resolve(l.getEntries()[0].startTime)).observe({type: 'paint', buffered: true});
})"""


def measure(browser: Any, url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        page = ctx.new_page()
        page.goto(url, wait_until="load")
        out.append(float(page.evaluate(FCP)))
        ctx.close()
    return out


def prometheus_pages(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    exe = shutil.which("prometheus")
    if exe is None:
        return None
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 15s}\n")
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'prom'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--traces", type=int, default=400)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="pitwall-ui-bench-"))
    kw: dict[str, Any] = ui_settings_kwargs(tmp / "files")
    kw["traces"] = {"spanmetrics": {"flush_interval": "2s"}}  # the tests' 200 ms would load the server
    srv = LiveServer(load_settings(data_dir=tmp / "data", **kw))
    srv.start()
    prom = None
    try:
        data = seed(srv.url, traces=args.traces)
        print(f"seeded {data.spans} spans, {len(data.trace_ids)} traces; {args.runs} cold loads per page")
        prom = prometheus_pages(tmp)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            print(f"{'page':<14}{'median ms':>10}{'worst ms':>10}{'/target':>9}")
            for name, path in PAGES:
                xs = measure(b, srv.url + path, args.runs)
                med = statistics.median(xs)
                print(f"{name:<14}{med:>10.0f}{max(xs):>10.0f}{med / TARGET_MS:>9.2f}")
            if prom is not None:
                for name, path in (("prom /graph", "/graph"), ("prom /targets", "/targets")):
                    xs = measure(b, prom[1] + path, args.runs)
                    print(f"{name:<14}{statistics.median(xs):>10.0f}{max(xs):>10.0f}"
                          f"{statistics.median(xs) / TARGET_MS:>9.2f}")
            b.close()
    finally:
        srv.stop()
        if prom is not None:
            prom[0].terminate()
            prom[0].wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
