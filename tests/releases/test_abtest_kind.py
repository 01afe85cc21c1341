"""``pitwall.dev/v1`` ABTest, a saved A/B experiment: the CRD and its admission on a real KubeAPI (SQLite), the
report of a saved experiment over ``/api/releases/v1/abtests/{namespace}/{name}`` and on the A/B page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from pitwall.kube import Invalid, KubeAPI, build_kube
from pitwall.metrics import TargetsSnapshot
from pitwall.releases import ReleasesConsole
from pitwall.releases.abtest_kind import API_VERSION, KIND, install_abtest_kind, validate_abtest
from pitwall.releases.api import releases_router
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.ui.releases_view import abtest_pairs, abtest_rows
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps
from tests.releases.test_abtest_api import _fake, _split

pytestmark = pytest.mark.timeout(60)

SPEC = {"numerator": "num", "denominator": "den", "control": "a", "mde": 0.5}
INSTANT = _fake(_split(a=(45.0, 500.0), b=(63.0, 510.0)))


def abtest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": "shop"}, "spec": spec}


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    install_abtest_kind(api)  # as build_releases_part does
    await api.start()
    try:
        await api.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        yield api
    finally:
        await api.stop()
        await store.stop()


def test_admission_reads_the_spec_as_the_endpoint_does() -> None:
    assert validate_abtest(abtest("x", SPEC), None) == []
    (cause,) = validate_abtest(abtest("x", {**SPEC, "window": "7d"}), None)
    assert (cause.field, cause.reason) == ("spec.window", "FieldValueInvalid")
    assert cause.message.startswith("no query uses $window")
    (cause,) = validate_abtest(abtest("x", {}), None)
    assert cause.field == "spec.numerator"


async def test_saved_experiments_over_the_api_and_the_page(kube: KubeAPI) -> None:
    c = kube.client
    with pytest.raises(Invalid) as bad:
        await c.create(abtest("bad", {**SPEC, "mde": 0}))
    assert "spec.mde: 0: the relative effect to detect must be non-zero" in str(bad.value)
    await c.create(abtest("checkout", SPEC))
    await c.create(abtest("flags", {"variants": [{"name": "off", "successes": "1", "trials": "10"},
                                                 {"name": "on", "successes": "2", "trials": "10"}]}))
    app = FastAPI()
    app.include_router(releases_router(INSTANT, c))
    deps = UIDeps(settings=UISettings(), metrics=cast(Any, SimpleNamespace(instant=INSTANT)),
                  targets=lambda: TargetsSnapshot([], [], {}), traces=None, logs=None, alerts=None,
                  dashboards=cast(Any, None), releases=ReleasesConsole(c))
    app.include_router(ui_router(deps))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        got = await http.get("/api/releases/v1/abtests/shop/checkout")
        missing = await http.get("/api/releases/v1/abtests/shop/nope")
        page = await http.get("/releases/abtest", params={"experiment": "shop/checkout"})
        lost = await http.get("/releases/abtest", params={"experiment": "shop/nope"})
    assert got.status_code == 200, got.text
    doc = got.json()
    assert doc["control"] == "a" and doc["comparisons"][0]["pValue"] == pytest.approx(0.08466, abs=5e-5)
    assert doc["sampleSize"]["perVariant"] == 773
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "ABTest shop/nope not found"
    assert page.status_code == 200, page.text
    assert 'name="numerator" value="num"' in page.text and 'data-testid="abtest-p">0.0847<' in page.text
    saved = page.text.split('data-testid="abtest-saved"')[1].split("</table>")[0]
    assert "experiment=shop%2Fcheckout" in saved and "off, on" in saved and "split by variant" in saved
    assert lost.status_code == 404 and "experiment: ABTest shop/nope not found" in lost.text


def test_saved_specs_fill_the_form() -> None:
    spec = {"variants": [{"name": "off", "successes": "s0", "trials": "t0"}], "window": "7d", "mde": 0.2}
    assert abtest_pairs(spec) == [("window", "7d"), ("mde", "0.2"), ("variant", "off"), ("successes", "s0"),
                                  ("trials", "t0")]
    rows = abtest_rows([abtest("b", SPEC), {**abtest("a", spec), "metadata": {"name": "a", "namespace": "n"}}])
    assert [(r["namespace"], r["name"], r["variants"], r["control"]) for r in rows] == [
        ("n", "a", "off", ""), ("shop", "b", "split by variant", "a")]


async def test_without_the_control_plane_saved_experiments_are_404s() -> None:
    app = FastAPI()
    app.include_router(releases_router(INSTANT, None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        r = await http.get("/api/releases/v1/abtests/shop/checkout")
    assert r.status_code == 404 and "served with the control plane" in r.text


ABTEST_YAML = """apiVersion: pitwall.dev/v1
kind: ABTest
metadata:
  name: checkout
spec:
  numerator: sum by (variant) (increase(orders_total[$window]))
  denominator: sum by (variant) (increase(visits_total[$window]))
  control: control
  window: {window}
"""


@pytest.mark.peer
def test_kubectl_applies_and_lists_abtests(tmp_path: Path) -> None:
    """The real kubectl: apply, get with the printer columns, and a bad spec refused with its field."""
    from tests.kube.conftest import KubeServer

    srv = KubeServer(tmp_path)
    install_abtest_kind(srv.kube)
    with srv:
        srv.kubectl("apply", "-f", "-", input=ABTEST_YAML.format(window="7d"))
        got = srv.kubectl("get", "abtests").stdout
        assert got.split()[:4] == ["NAME", "CONTROL", "WINDOW", "AGE"] and "checkout   control   7d" in got
        bad = srv.kubectl("apply", "-f", "-", input=ABTEST_YAML.format(window="100d"), check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip() == ('The ABTest "checkout" is invalid: spec.window: 100d must be above 0 and at '
                                  'most 12w6d')


async def test_a_token_of_other_tenants_sees_no_saved_experiment(kube: KubeAPI) -> None:
    from pitwall.core.tenancy import PRINCIPAL_KEY, Principal

    await kube.client.create(abtest("checkout", SPEC))
    inner = FastAPI()
    inner.include_router(releases_router(INSTANT, kube.client))
    deps = UIDeps(settings=UISettings(), metrics=cast(Any, SimpleNamespace(instant=INSTANT)),
                  targets=lambda: TargetsSnapshot([], [], {}), traces=None, logs=None, alerts=None,
                  dashboards=cast(Any, None), releases=ReleasesConsole(kube.client))
    inner.include_router(ui_router(deps))
    limited = Principal("team-a", frozenset({"read"}), frozenset({"team-a"}))

    async def app(scope: Any, receive: Any, send: Any) -> None:  # as BearerAuth leaves a tenant-limited token
        await inner({**scope, PRINCIPAL_KEY: limited}, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        api = await http.get("/api/releases/v1/abtests/shop/checkout")
        page = await http.get("/releases/abtest", params={"experiment": "shop/checkout"})
        plain = await http.get("/releases/abtest", params={"numerator": "num", "denominator": "den"})
    assert api.status_code == 403 and "serves the whole server" in api.text
    assert page.status_code == 404 and "experiment: ABTest shop/checkout not found" in page.text
    assert plain.status_code == 200 and "abtest-saved" not in plain.text and "0.0847" in plain.text


def test_a_saved_experiment_on_the_whole_server(tmp_path: Path) -> None:
    """The server's own wiring: ABTest served by its Kubernetes API, its report over HTTP and the CLI."""
    from typer.testing import CliRunner

    from pitwall.cli.main import app as cli
    from pitwall.config import load_settings
    from tests.conftest import LiveServer
    from tests.releases.test_abtest_cli import _push

    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    try:
        _push(srv.url)
        spec = {"numerator": "sum by (variant) (shop_orders)", "denominator": "sum by (variant) (shop_visits)",
                "control": "control", "mde": 0.5}
        r = httpx.post(srv.url + "/apis/pitwall.dev/v1/namespaces/default/abtests", json=abtest("checkout", spec)
                       | {"metadata": {"name": "checkout", "namespace": "default"}}, timeout=30)
        assert r.status_code == 201, r.text
        bad = httpx.post(srv.url + "/apis/pitwall.dev/v1/namespaces/default/abtests", timeout=30,
                         json=abtest("bad", {**spec, "window": "7d"}) | {"metadata": {"name": "bad"}})
        assert bad.status_code == 422 and "spec.window: no query uses $window" in bad.text
        out = CliRunner().invoke(cli, ["releases", "abtest", "--server", srv.url, "--experiment", "default/checkout"])
        assert out.exit_code == 0, out.output
        assert "new-checkout vs control: z-test p=0.0847" in out.output and "sample size: 773 trials" in out.output
        out = CliRunner().invoke(cli, ["releases", "abtest", "--server", srv.url, "--experiment", "default/nope"])
        assert out.exit_code == 1 and "ABTest default/nope not found" in out.output
        out = CliRunner().invoke(cli, ["releases", "abtest", "--server", srv.url, "--experiment", "nope"])
        assert out.exit_code == 2 and "NAMESPACE/NAME" in out.output
    finally:
        srv.stop()
