"""``/api/releases/v1/abtest``: A/B reports of a live server's metrics over HTTP (the numbers R gives for the
same counts), its inputs checked field by field, and the report's logic over a fake query function."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from pitwall.config import load_settings
from pitwall.core.auth import required_scope
from pitwall.core.labels import Labels
from pitwall.metrics import QueryResult
from pitwall.releases import sample_size_per_variant
from pitwall.releases.abtest_query import run_abtest
from pitwall.releases.abtest_spec import ABTestInputError, parse_spec, spec_from_pairs
from tests.conftest import LiveServer
from tests.releases.test_abtest_cli import _push

pytestmark = pytest.mark.timeout(60)

URL = "/api/releases/v1/abtest"
SPLIT = {"numerator": "sum by (variant) (shop_orders)", "denominator": "sum by (variant) (shop_visits)"}
# R: prop.test(c(45, 63), c(500, 510), correct = FALSE)$p.value = 0.08466 (docs/releases-judge.md's example)
R_P = 0.08466


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server for the module (telemetry only: A/B reports need no control plane), seeded once."""
    s = load_settings(data_dir=tmp_path_factory.mktemp("abtest") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False}, kube={"enabled": False})
    srv = LiveServer(s)
    srv.start()
    try:
        _push(srv.url)
        yield srv
    finally:
        srv.stop()


def _per_variant(window: bool = False) -> list[dict[str, str]]:
    rng = "[$window]" if window else ""
    q = "sum(max_over_time({m}{{variant={v!r}}}{r}))" if window else "sum({m}{{variant={v!r}}})"
    return [{"name": v, "successes": q.format(m="shop_orders", v=v, r=rng).replace("'", '"'),
             "trials": q.format(m="shop_visits", v=v, r=rng).replace("'", '"')} for v in ("control", "new-checkout")]


def _check_r_example(doc: dict[str, Any], treatment: str = "new-checkout") -> None:
    assert [(v["name"], v["successes"], v["trials"]) for v in doc["variants"]] == [
        ("control", 45, 500), (treatment, 63, 510)]
    assert [v["rate"] for v in doc["variants"]] == [45 / 500, 63 / 510]
    (c,) = doc["comparisons"]
    assert (c["control"], c["treatment"], c["test"], c["significant"]) == ("control", treatment, "z", False)
    assert c["pValue"] == pytest.approx(R_P, abs=5e-5)
    # R: prop.test(45, 500, correct = FALSE)$conf.int = 0.06794255 0.11830941
    assert doc["variants"][0]["interval"] == pytest.approx([0.06794255, 0.11830941], abs=1e-7)
    assert doc["sampleSize"]["perVariant"] == sample_size_per_variant(0.09, 0.1) == 16583
    assert doc["verdict"]["outcome"] == "keep-running" and "16583 trials per variant" in doc["verdict"]["text"]
    assert any("p = 2 (1 − Φ(|z|)) = 0.0847" in line for line in doc["arithmetic"])


def test_report_over_http_get_json_and_form(seeded: LiveServer) -> None:
    with httpx.Client(base_url=seeded.url, timeout=30) as http:
        got = http.get(URL, params=SPLIT)
        assert got.status_code == 200, got.text
        _check_r_example(got.json())
        assert got.json()["queries"] == [{"field": "numerator", "query": SPLIT["numerator"]},
                                         {"field": "denominator", "query": SPLIT["denominator"]}]
        body = {"variants": _per_variant(window=True), "window": "10m", "control": "control"}
        posted = http.post(URL, json=body)
        assert posted.status_code == 200, posted.text
        _check_r_example(posted.json())
        assert posted.json()["window"] == "10m" and "[10m]" in posted.json()["queries"][0]["query"]
        form = [(k, r[c]) for r in _per_variant() for k, c in
                (("variant", "name"), ("successes", "successes"), ("trials", "trials"))]
        by_form = http.post(URL, data={"mde": "0.5"}, params=form)  # the rows in the URL, mde in the body
        assert by_form.status_code == 200, by_form.text
        assert by_form.json()["sampleSize"]["perVariant"] == sample_size_per_variant(0.09, 0.5)
        other = http.get(URL, params=SPLIT, headers={"X-Scope-OrgID": "other"})  # another tenant's metrics: none
    assert other.status_code == 400
    assert other.json()["error"]["message"] == "denominator: an experiment needs at least two variants"


@pytest.mark.parametrize(("body", "message"), [
    ({"denominator": SPLIT["denominator"]}, "numerator: required"),
    ({**SPLIT, "variants": _per_variant()}, "variants: give either numerator and denominator or variants"),
    ({**SPLIT, "numerator": "sum(" * 1100}, "numerator: query of 4400 characters, more than the limit of 4096"),
    ({**SPLIT, "numerator": "sum("}, "numerator: "),
    ({**SPLIT, "by": "no-label"}, "by: 'no-label' is not a label name"),
    ({**SPLIT, "confidence": 1.5}, "confidence: 1.5 must be between 0 and 1"),
    ({**SPLIT, "confidence": 0.9, "alpha": 0.05}, "alpha: 0.05 disagrees with confidence 0.9"),
    ({**SPLIT, "power": "high"}, "power: 'high' is not a number"),
    ({**SPLIT, "mde": 0}, "mde: 0: the relative effect to detect must be non-zero"),
    ({**SPLIT, "window": "7d"}, "window: no query uses $window"),
    ({"numerator": "sum by (variant) (increase(shop_orders[$window]))", "denominator": SPLIT["denominator"]},
     "window: required: numerator uses $window"),
    ({**SPLIT, "window": "100d"}, "window: 100d must be above 0 and at most 12w6d"),
    ({**SPLIT, "window": "soon"}, 'window: not a valid duration string: "soon"'),
    ({**SPLIT, "time": "yesterday"}, 'time: cannot parse "yesterday" to a valid timestamp'),
    ({**SPLIT, "control": "nobody"}, "control: 'nobody' is not among the variants ['control', 'new-checkout']"),
    ({**SPLIT, "numerator2": "x"}, "numerator2: unknown field"),
    ({"variants": [{"name": f"v{i}", "successes": "1", "trials": "2"} for i in range(11)]},
     "variants: 11 variants, more than the limit of 10"),
    ({"variants": [{"name": "a", "successes": "1"}, {"name": "b", "successes": "1", "trials": "2"}]},
     "variants[0].trials: required"),
    ({"variants": [{"name": "a", "successes": "sum(shop_orders)", "trials": "shop_visits"},
                   {"name": "b", "successes": "1", "trials": "2"}]},
     "variants[0].trials: the query gives 2 series, not one (aggregate with sum(...))"),
    ({"variants": "a,b"}, "variants: must be a list"),
    ({**SPLIT, "by": "job"}, "numerator: a series has no 'job' label"),
])
def test_bad_input_is_a_400_naming_the_field(seeded: LiveServer, body: dict[str, Any], message: str) -> None:
    r = httpx.post(seeded.url + URL, json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["kind"], err["status"]) == ("bad_data", 400)
    assert err["message"].startswith(message), err["message"]


def test_bad_bodies(seeded: LiveServer) -> None:
    r = httpx.post(seeded.url + URL, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("body: invalid JSON")
    r = httpx.post(seeded.url + URL, json=[1])
    assert r.status_code == 400 and r.json()["error"]["message"] == "body: must be a JSON object"
    r = httpx.post(seeded.url + URL, content=b"x" * (300 << 10), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_the_post_only_reads() -> None:
    assert required_scope("POST", URL) == "read" and required_scope("POST", "/api/releases/v1/other") == "write"


# ---- the report's logic over a fake query function -------------------------------------------------------

def _fake(answers: dict[str, list[tuple[Labels, float]] | float]) -> Any:
    """An InstantQuery answering each expression from ``answers``: a vector, or a scalar."""
    def instant(expr: str, at_ms: int, tenant: str = "default") -> QueryResult:
        a = answers[expr]
        if isinstance(a, float):
            return QueryResult("scalar", [()], [np.array([at_ms])], [np.array([a])])
        return QueryResult("vector", [lb for lb, _ in a], [np.array([at_ms]) for _ in a], [np.array([v]) for _, v in a])
    return instant


def _split(**counts: tuple[float, float]) -> dict[str, list[tuple[Labels, float]] | float]:
    return {"num": [((("variant", k),), s) for k, (s, _) in counts.items()],
            "den": [((("variant", k),), n) for k, (_, n) in counts.items()]}


async def test_significant_treatments_win_or_lose_with_bonferroni() -> None:
    spec = parse_spec({"numerator": "num", "denominator": "den", "control": "a"})
    res = await run_abtest(_fake(_split(a=(1000.0, 10000.0), b=(1200.0, 10000.0), c=(800.0, 10000.0),
                                        d=(1010.0, 10000.0))), spec, "t")
    verdicts = {v.treatment: v.outcome for v in res.verdicts}
    assert verdicts == {"b": "better", "c": "worse", "d": "keep-running"}
    assert res.to_dict()["verdict"]["outcome"] == "better"
    assert res.sample_size is not None and res.sample_size.alpha == pytest.approx(0.05 / 3)
    assert res.sample_size.per_variant == sample_size_per_variant(0.1, 0.1, alpha=0.05 / 3)
    assert any("p × 3 = " in line and "(Bonferroni over 3 treatments)" in line for line in res.arithmetic)


async def test_enough_trials_without_a_difference_and_fisher() -> None:
    res = await run_abtest(_fake(_split(a=(10_000.0, 100_000.0), b=(10_010.0, 100_000.0))),
                           parse_spec({"numerator": "num", "denominator": "den", "mde": "0.1"}))
    assert [v.outcome for v in res.verdicts] == ["no-difference"]
    small = await run_abtest(_fake(_split(a=(1.0, 20.0), b=(6.0, 20.0))),
                             parse_spec({"numerator": "num", "denominator": "den"}))
    assert small.report.comparisons[0].test == "fisher"
    assert any("Fisher's exact test" in line and "[[6, 14], [1, 19]]" in line for line in small.arithmetic)


async def test_per_variant_queries_count_no_series_as_zero() -> None:
    spec = spec_from_pairs([("variant", "a"), ("successes", "s_a"), ("trials", "t_a"),
                            ("variant", "b"), ("successes", "s_b"), ("trials", "t_b"),
                            ("variant", ""), ("successes", ""), ("trials", "")])  # an empty form row
    res = await run_abtest(_fake({"s_a": 5.0, "t_a": 50.0, "s_b": [], "t_b": 40.0}), spec)
    assert [(v.name, v.successes, v.trials) for v in res.report.variants] == [("a", 5, 50), ("b", 0, 40)]
    assert res.to_dict()["notes"] == ["variants[1].successes: no series, counted as 0"]
    with pytest.raises(ABTestInputError, match=r"^variants\[0\]: variant 'a': 9 successes out of only 3 trials"):
        await run_abtest(_fake({"s_a": 9.0, "t_a": 3.0, "s_b": 1.0, "t_b": 2.0}), spec)
