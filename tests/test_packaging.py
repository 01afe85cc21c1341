"""A plain wheel install is a complete pitwall: the UI works with no Node, no network, no repo beside it.

Builds the wheel, installs it (no dependencies: they come from the test
venv through a .pth line, so nothing of the repo's source tree is on the
path) into a fresh virtualenv, starts `pitwall server` from it in an empty
directory and loads every UI page in Debian's chromium: no console error,
no failed request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port, wait_ready

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600),
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]
sync_api = pytest.importorskip("playwright.sync_api")

PAGES = ["/", "/graph?expr=up", "/logs", "/traces", "/services", "/alerts", "/dashboards", "/dashboards/new",
         "/targets", "/workloads", "/incidents", "/slos", "/releases", "/pipelines", "/pipelines/dora", "/chaos",
         "/backups", "/status"]


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=400)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the built wheel of pitwall in it; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", REPO)
    wheels = list((base / "dist").glob("pitwall-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheels[0])
    site = Path(_run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .strip())
    # The dependencies from the test venv, appended after the fresh venv's own site-packages (the test venv's
    # editable pitwall is a .pth there, which a plain path entry does not run).
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_wheel_install_is_complete(installed: Path, tmp_path: Path) -> None:
    where = _run(installed / "python", "-c", "import pitwall, pitwall.ui; print(pitwall.__file__)", cwd=tmp_path)
    assert where.startswith(str(installed.parent)), where
    assert "pitwall " in _run(installed / "pitwall", "--version", cwd=tmp_path)
    vendor = Path(where.strip()).parent / "ui" / "static" / "vendor"
    assert {"htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css", "htmx.LICENSE", "uPlot.LICENSE"} <= {
        p.name for p in vendor.iterdir()}
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PITWALL_", "PYTHONPATH"))}
    env["PITWALL_OTLP_GRPC__LISTEN"] = "127.0.0.1:0"  # not the machine-wide 4317
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([str(installed / "pitwall"), "server", "--data-dir", str(tmp_path / "data"),
                                 "--listen", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, timeout=60, proc=proc)
        problems = _load_pages(base)
        assert problems == [], problems
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _load_pages(base: str) -> list[str]:
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            ctx = browser.new_context()
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))

            def bad_status(r: Any) -> None:
                if r.status >= 400:
                    problems.append(f"{r.status}: {r.url}")

            page.on("response", bad_status)
            for path in PAGES:
                resp = page.goto(base + path, wait_until="networkidle")
                assert resp is not None and resp.status == 200, path
                assert page.evaluate("typeof htmx") == "object", f"{path}: htmx did not load"
                assert page.evaluate("typeof uPlot") == "function", f"{path}: uPlot did not load"
        finally:
            browser.close()
    return problems

