"""The browser assets shipped in the package are the releases package.json pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import REPO

VENDOR = REPO / "src" / "pitwall" / "ui" / "static" / "vendor"
NODE = REPO / "node_modules"
SHIPPED = {  # shipped file -> (npm package, file in it)
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
    "uPlot.iife.min.js": ("uplot", "dist/uPlot.iife.min.js"),
    "uPlot.min.css": ("uplot", "dist/uPlot.min.css"),
    "htmx.LICENSE": ("htmx.org", "LICENSE"),
    "uPlot.LICENSE": ("uplot", "LICENSE"),
}


def test_every_asset_is_shipped_with_its_licence() -> None:
    for name in SHIPPED:
        assert (VENDOR / name).stat().st_size > 0, name
    pins = json.loads((REPO / "package.json").read_text())["dependencies"]
    provenance = (VENDOR / "PROVENANCE.md").read_text()
    for package, version in pins.items():
        assert package in provenance and version in provenance, f"PROVENANCE.md does not name {package} {version}"


@pytest.mark.skipif(not NODE.exists(), reason="node_modules absent: `make assets` (npm ci) installs the pins")
def test_shipped_files_equal_the_pinned_releases() -> None:
    pins = json.loads((REPO / "package.json").read_text())["dependencies"]
    for name, (package, path) in SHIPPED.items():
        installed = json.loads((NODE / package / "package.json").read_text())["version"]
        assert installed == pins[package], f"node_modules has {package} {installed}, package.json pins {pins[package]}"
        assert (VENDOR / name).read_bytes() == (NODE / package / path).read_bytes(), \
            f"{name} differs from {package} {installed} {path}: run `make assets`"


def test_templates_load_only_shipped_assets() -> None:
    base = (REPO / "src" / "pitwall" / "ui" / "templates" / "base.html").read_text()
    for ref in ("/ui/static/vendor/htmx.min.js", "/ui/static/vendor/uPlot.iife.min.js",
                "/ui/static/vendor/uPlot.min.css"):
        assert ref in base
        assert (VENDOR / Path(ref).name).exists()


def test_a_missing_asset_is_logged_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from pitwall.ui import wiring

    assert wiring.missing_assets() == []
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "htmx.min.js").write_text("x")
    monkeypatch.setattr(wiring, "STATIC", tmp_path)
    with caplog.at_level("WARNING", logger="pitwall.ui.wiring"):
        assert wiring.missing_assets() == ["uPlot.iife.min.js", "uPlot.min.css"]
    assert "the asset uPlot.min.css is missing" in caplog.text
