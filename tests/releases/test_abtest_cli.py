"""`pitwall releases abtest`: an A/B report of a live server's metrics, computed by its /api/releases/v1/abtest."""

from __future__ import annotations

import json
import time

import cramjam
import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app
from pitwall.metrics.ingest import prompb
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(60)

# The worked example of docs/releases-judge.md: 45/500 against 63/510 (R: prop.test(c(45, 63), c(500, 510),
# correct = FALSE) gives p-value 0.08466).
COUNTS = {"control": (45.0, 500.0), "new-checkout": (63.0, 510.0)}


def _push(url: str, extra: dict[str, tuple[float, float]] | None = None) -> None:
    w = prompb.WriteRequest()
    now = int(time.time() * 1000) - 1000
    for variant, (orders, visits) in {**COUNTS, **(extra or {})}.items():
        for name, value in (("shop_orders", orders), ("shop_visits", visits)):
            ts = w.timeseries.add()
            for k, v in (("__name__", name), ("variant", variant), ("job", "shop")):
                lb = ts.labels.add()
                lb.name, lb.value = k, v
            s = ts.samples.add()
            s.timestamp, s.value = now, value
    r = httpx.post(url + "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(w.SerializeToString())))
    assert r.status_code == 204


def _run(url: str, *args: str) -> tuple[int, str]:
    out = CliRunner().invoke(app, ["releases", "abtest", "--server", url, "--numerator", "sum by (variant) (shop_orders)",
                                   "--denominator", "sum by (variant) (shop_visits)", *args])
    return out.exit_code, out.output


def test_report_from_the_servers_metrics(live_server: LiveServer) -> None:
    _push(live_server.url)
    code, text = _run(live_server.url, "--control", "control", "-o", "json")
    assert code == 0, text
    report = json.loads(text)
    assert report["control"] == "control"
    rates = {v["name"]: v["rate"] for v in report["variants"]}
    assert rates == {"control": 45 / 500, "new-checkout": 63 / 510}
    (c,) = report["comparisons"]
    assert (c["treatment"], c["test"], c["significant"]) == ("new-checkout", "z", False)
    assert c["pValue"] == pytest.approx(0.08466, abs=5e-5)
    code, text = _run(live_server.url)  # the text form, control = first by name
    assert code == 0, text
    assert "new-checkout vs control: z-test p=0.0847" in text and "not significant" in text


def test_bad_queries_are_named(live_server: LiveServer) -> None:
    _push(live_server.url)
    out = CliRunner().invoke(app, ["releases", "abtest", "--server", live_server.url, "--by", "job",
                                   "--numerator", "shop_orders", "--denominator", "shop_visits"])
    assert out.exit_code == 1 and "two series for job='shop'" in out.output
    code, text = _run(live_server.url, "--by", "job")  # sum by (variant) drops job
    assert code == 1 and "a series has no 'job' label" in text
    out = CliRunner().invoke(app, ["releases", "abtest", "--server", live_server.url, "--numerator", "sum(",
                                   "--denominator", "shop_visits"])
    assert out.exit_code == 1 and "numerator:" in out.output and "parse error" in out.output
    _push(live_server.url, {"broken": (9.0, 3.0)})  # more successes than trials
    code, text = _run(live_server.url)
    assert code == 1 and "9 successes out of only 3 trials" in text


def test_per_variant_queries_and_the_sample_size(live_server: LiveServer) -> None:
    _push(live_server.url)
    args = [a for v in COUNTS for a in ("--variant", v, "--successes", f'sum(shop_orders{{variant="{v}"}})',
                                         "--trials", f'sum(shop_visits{{variant="{v}"}})')]
    out = CliRunner().invoke(app, ["releases", "abtest", "--server", live_server.url, *args, "--mde", "0.5"])
    assert out.exit_code == 0, out.output
    assert "new-checkout vs control: z-test p=0.0847" in out.output
    assert "sample size: 773 trials per variant detect a +50% change (alpha 0.05, power 0.8)" in out.output
    out = CliRunner().invoke(app, ["releases", "abtest", "--server", live_server.url, *args[:6], "--variant", "x"])
    assert out.exit_code == 2 and "give each once per variant" in out.output
