"""Browser tests of the pipelines and backups pages: Debian's chromium driven by Playwright against a live
pitwall holding real data (a pipeline run by the runner with a deployment, a Velero Backup made by the backup
controller with kubectl, a restore drill of it, a self-backup with restic). Each page loads without a console
error or a failed request and is screenshotted in both themes into ``test-artifacts/ui/``; a pipeline run
from the "Run pipeline" form lands on its page, whose job log tails the running job live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.backup.test_velero import _backup, _done, velero_cluster
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo
from tests.ui.browser import NEEDS_CHROMIUM, Browser

from pitwall.config import load_settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    NEEDS_CHROMIUM,
]

pytest.importorskip("playwright.sync_api")

CI = """
stages: [build, test, deploy]
build:
  stage: build
  script:
    - echo "starting the build"
    - sleep 3
    - echo "building $GREETING"
unit:
  stage: test
  needs: [build]
  script: [echo unit ok]
lint:
  stage: test
  allow_failure: true
  script: [echo "style problems", exit 1]
deploy:
  stage: deploy
  script: [echo deploying, test -z "$FAIL_DEPLOY"]
  environment: {name: production}
"""


@dataclass
class World:
    srv: LiveServer
    project: int
    pipeline: int
    backup: str
    drill: str


def _wait(what: str, fn: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("uipipe")
    srv = LiveServer(load_settings(data_dir=root / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    try:
        repo = make_repo(root / "shop", {".gitlab-ci.yml": CI})
        runs = []
        for extra in ([{"key": "FAIL_DEPLOY", "value": "1"}], []):  # a failed deployment, then its restore
            run = httpx.post(srv.url + "/api/pipelines/v1/runs", json={"repo": str(repo), "variables": [
                {"key": "GREETING", "value": "from-the-fixture"}, *extra]}, timeout=60).json()

            def finished(pid: int = run["id"]) -> dict[str, Any] | None:
                p = httpx.get(f"{srv.url}/api/pipelines/v1/pipelines/{pid}", timeout=30).json()
                return p if p["status"] in ("success", "failed") else None
            runs.append(_wait("the pipeline", finished))
        assert [p["status"] for p in runs] == ["failed", "success"], runs
        run = runs[-1]

        c = velero_cluster(srv, root)
        c.kubectl("create", "namespace", "shop")
        c.kubectl("-n", "shop", "create", "configmap", "settings", "--from-literal=mode=fast")
        c.apply(_backup("shop-1", includedNamespaces=["shop"], ttl="2h0m0s"))
        b = c.wait("backup", "shop-1", _done)
        assert b["status"]["phase"] == "Completed", b["status"]
        c.apply({"apiVersion": "pitwall.dev/v1", "kind": "RestoreDrill",
                 "metadata": {"name": "shop-drill", "namespace": "velero"},
                 "spec": {"schedule": "0 3 * * *", "source": {"backupName": "shop-1"}}})
        c.wait("restoredrill", "shop-drill", lambda d: (d.get("status") or {}).get("lastResult") in ("pass", "fail"),
               timeout=120)
        r = httpx.post(srv.url + "/api/backup/v1/self", json={"repository": str(root / "self-repo"),
                                                               "password": "self-password"}, timeout=120)
        assert r.status_code == 200, r.text
        # the DORA figures and the drill's gauges reach the metric store (the backup figures every 30s), at
        # least 30s ago: a chart's last step ends at most one step (< 20s for the pages' charts) before now
        for expr in ('last_over_time(pitwall_dora_time_to_restore_seconds{project="shop"}[15m])',
                     'pitwall_restore_drill_duration_seconds{drill="velero/shop-drill"}'):
            _wait(expr, lambda e=expr: httpx.get(srv.url + "/ui/api/chart", params={
                "expr": e, "from": "now-1h", "to": "now-30s"}, timeout=30).json().get("series"), timeout=120)
        yield World(srv, int(run["project_id"]), int(run["id"]), "shop-1", "shop-drill")
    finally:
        srv.stop()


def _pages(w: World) -> list[tuple[str, str, str]]:
    """(screenshot name, path, text the page must show)."""
    return [("pipelines", "/pipelines", f"#{w.pipeline}"),
            ("pipeline", f"/pipelines/{w.project}/{w.pipeline}", "style problems"),  # the failed job opens
            ("pipelines-dora", "/pipelines/dora", "50.0%"),  # one of the two deployments failed
            ("backups", "/backups", w.backup),
            ("backup", f"/backups/velero/{w.backup}", "1 configmaps"),  # listed from its restic snapshot
            ("restoredrill", f"/backups/velero/restoredrills/{w.drill}", "RTO")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_load_clean_in_both_themes(chromium: Any, world: World, scheme: str) -> None:
    web = Browser(chromium, world.srv.url, scheme)
    try:
        for name, path, text in _pages(world):
            page = web.goto(path)
            assert page.locator("nav a[aria-current=page]").count() == 1, path
            charts = page.locator(".pw-chart")
            page.wait_for_function("[...document.querySelectorAll('.pw-chart')].every(e => e.dataset.rendered)")
            if name in ("pipelines-dora", "restoredrill"):  # every series is drawn, none is empty
                counts = [charts.nth(i).get_attribute("data-series-count") for i in range(charts.count())]
                assert counts and set(counts) == {"1"}, (name, counts)
            if page.locator("[data-testid=resources-pending]").count():  # restic ls after the page
                page.wait_for_selector("[data-testid=resources]")
            if page.locator("[data-testid=job-log]").count():  # the log fragment loads after the page
                page.wait_for_selector("[data-testid=job-log] pre")
            page.wait_for_function("t => document.body.innerText.includes(t)", arg=text)
            web.shot(f"{name}-{scheme}")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()


def test_graph_shows_stages_needs_and_gitlab_statuses(chromium: Any, world: World) -> None:
    web = Browser(chromium, world.srv.url, "light")
    try:
        page = web.goto(f"/pipelines/{world.project}/{world.pipeline}")
        heads = page.locator(".pgraph-head").all_inner_texts()
        assert [h.split()[0].lower() for h in heads] == ["build", "test", "deploy"], heads
        assert page.locator('.pgraph-edges path[data-need="build"][data-job="unit"]').count() == 1
        statuses = dict(zip(page.locator("table.jobs td.mono a").all_inner_texts(),
                            page.locator("[data-testid=job-status]").all_inner_texts(), strict=True))
        assert statuses == {"build": "passed", "lint": "failed", "unit": "passed", "deploy": "passed"}, statuses
        page.locator(".pgraph-job", has_text="lint").focus()  # keyboard: jobs are links
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('[data-testid=job-log] pre')?.innerText"
                               ".includes('style problems')")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()


def test_run_pipeline_from_the_form_tails_its_log(chromium: Any, world: World) -> None:
    web = Browser(chromium, world.srv.url, "light")
    try:
        page = web.goto("/pipelines")
        form = page.locator("[data-testid=run-form]")
        form.locator("input[name=ref]").fill("main")
        form.locator("input[name=var_key]").first.fill("GREETING")
        form.locator("input[name=var_value]").first.fill("from-the-ui")
        with page.expect_navigation(wait_until="domcontentloaded"):
            form.locator("[data-testid=run-pipeline]").click()
        assert f"/pipelines/{world.project}/" in page.url
        log = page.locator("[data-testid=job-log] pre")
        log.wait_for()
        # the build job sleeps between its lines: the page shows the first one and then, polling, the last
        page.wait_for_function("document.querySelector('[data-testid=job-log] pre')?.innerText"
                               ".includes('starting the build')", timeout=60_000)
        page.wait_for_function("document.querySelector('[data-testid=job-log] pre')?.innerText"
                               ".includes('building from-the-ui')", timeout=60_000)
        page.wait_for_function("document.querySelector('[data-testid=status]') && [...document.querySelectorAll("
                               "'[data-testid=job-status]')].every(e => ['passed', 'failed'].includes(e.innerText))",
                               timeout=90_000)
        page.wait_for_function("document.querySelector('[data-testid=log-job-status]')?.innerText === 'passed'")
        web.shot("pipeline-run-from-ui")
        assert web.errors == [], web.errors
    finally:
        web.ctx.close()
