"""The demo's shipped configuration renders into files pitwall and the real peers accept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.config import load_settings
from pitwall.demo import config as demo_config
from pitwall.demo import shop
from pitwall.demo.services import SERVICES
from pitwall.metrics.scrape.kubernetes import pod_groups
from pitwall.metrics.scrape.targets import populate_labels
from pitwall.metrics.wiring import scrape_configs_of
from pitwall.server import create_app

pytestmark = pytest.mark.timeout(60)

PITWALL = "127.0.0.1:20000"
WEBHOOK = "http://127.0.0.1:19999/alerts"


@pytest.fixture
def rendered(tmp_path: Path) -> demo_config.RenderedConfig:
    return demo_config.render(tmp_path / "config", PITWALL, WEBHOOK)


def test_every_placeholder_is_filled(rendered: demo_config.RenderedConfig) -> None:
    for f in (rendered.pitwall_file, rendered.rules_file, rendered.alertmanager_file):
        assert "${" not in f.read_text(), f.name
    am = yaml.safe_load(rendered.alertmanager_file.read_text())
    assert am["receivers"][0]["webhook_configs"][0]["url"] == WEBHOOK


def _pod(deployment: dict[str, Any], ip: str) -> dict[str, Any]:
    """A running pod of ``deployment`` as pitwall's node reports it."""
    tpl = deployment["spec"]["template"]
    md = {**tpl["metadata"], "name": deployment["metadata"]["name"] + "-abc12", "namespace": "shop", "uid": ip}
    return {"metadata": md, "spec": tpl["spec"], "status": {"phase": "Running", "podIP": ip}}


def test_the_shops_pods_are_scraped_under_job_and_service_name(rendered: demo_config.RenderedConfig,
                                                               tmp_path: Path) -> None:
    """The pods of manifests/shop.yaml, discovered as Prometheus' pod role does and relabeled by the
    demo's job, get the labels the rules and dashboards use: job and (services only) service_name."""
    settings = load_settings(rendered.pitwall_file, data_dir=tmp_path / "data")
    jobs = {c.job_name: c for c in scrape_configs_of(settings)}
    assert set(jobs) == {"shop", "pitwall"}
    assert jobs["pitwall"].static_configs[0].targets == [PITWALL]
    deployments = [o for o in shop.manifests() if o["kind"] == "Deployment"]
    pods = [_pod(d, f"127.42.0.{i + 2}") for i, d in enumerate(deployments)]
    seen = {}
    for targets, labels in pod_groups(pods):
        for t in targets:
            target, _ = populate_labels({**labels, "__address__": t}, jobs["shop"])
            if target is not None:
                seen[target.labels["job"]] = target.labels
    assert set(seen) == {*SERVICES, "loadgen"}
    for name, labels in seen.items():
        assert labels.get("service_name") == (name if name in SERVICES else None), labels
        assert labels["namespace"] == "shop" and labels["pod"] == f"{name}-abc12"
        assert labels["__address__"].endswith(":8080")
    assert jobs["shop"].scrape_interval == 5000
    assert [sd.namespaces.names for sd in jobs["shop"].kubernetes_sd_configs] == [["shop"]]


def test_only_unknown_settings_are_skipped(rendered: demo_config.RenderedConfig) -> None:
    shipped = yaml.safe_load(demo_config.shipped_text(demo_config.PITWALL_FILE))
    kept = yaml.safe_load(rendered.pitwall_file.read_text())
    assert set(kept) | set(rendered.skipped) == set(shipped)
    assert set(kept) <= demo_config.known_settings()
    if "rule_files" in kept:
        assert kept["rule_files"] == [str(rendered.rules_file)]
        assert kept["alertmanager_config"] == str(rendered.alertmanager_file)


def test_the_server_builds_from_the_rendered_config(rendered: demo_config.RenderedConfig, tmp_path: Path) -> None:
    """create_app parses every section it knows (scrape configs, and rule files and Alertmanager
    config once the alerting pillar reads them); a bad file would raise ConfigError here."""
    settings = load_settings(rendered.pitwall_file, data_dir=tmp_path / "data", storage={"fsync": False})
    app = create_app(settings)
    app.state.components.db.close()


def test_the_pillars_the_demo_needs_are_all_configured(rendered: demo_config.RenderedConfig) -> None:
    """Acceptance: pitwall knows every setting the demo ships (fails until alerting's settings land)."""
    assert rendered.skipped == []


def _peer(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (make peers installs it)")
    return path


@pytest.mark.peer
def test_promtool_accepts_the_rules(rendered: demo_config.RenderedConfig) -> None:
    out = subprocess.run([_peer("promtool"), "check", "rules", str(rendered.rules_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


@pytest.mark.peer
def test_amtool_accepts_the_alertmanager_config(rendered: demo_config.RenderedConfig) -> None:
    out = subprocess.run([_peer("amtool"), "check-config", str(rendered.alertmanager_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 receivers" in out.stdout and "1 inhibit rules" in out.stdout
