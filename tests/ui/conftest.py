"""Fixtures of the UI tests: a live server with rules, dashboards and a seeded data set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import LiveServer
from tests.ui.browser import Browser, launch_chromium
from tests.ui.seed import Seeded, seed, write_fixture_files

from pitwall.config import load_settings


def ui_settings_kwargs(folder: Path) -> dict[str, object]:
    rules, dash = write_fixture_files(folder)
    return {
        "listen": "127.0.0.1:0",
        "storage": {"fsync": False},
        "rule_files": [str(rules)],
        "traces": {"spanmetrics": {"flush_interval": "200ms"}},
        "ui": {"dashboards_dir": str(dash)},
    }


class SeededServer:
    def __init__(self, server: LiveServer, data: Seeded) -> None:
        self.server = server
        self.url = server.url
        self.data = data


@pytest.fixture(scope="module")
def seeded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededServer]:
    """One live server per test module, seeded once through the real ingest APIs."""
    base = tmp_path_factory.mktemp("ui")
    s = load_settings(data_dir=base / "data", **ui_settings_kwargs(base / "files"))
    srv = LiveServer(s)
    srv.start()
    try:
        yield SeededServer(srv, seed(srv.url))
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless chromium per test module (the browser tests are skipped without it or Playwright)."""
    with launch_chromium() as b:
        yield b


@pytest.fixture
def web(chromium: Any, seeded_server: SeededServer) -> Iterator[Browser]:
    """A light-themed page on the seeded server that records console and page errors (not failed requests,
    which these tests have never watched)."""
    b = Browser(chromium, seeded_server.url, height=860, timeout_ms=15_000, watch_requests=False, full_page=False)
    yield b
    b.ctx.close()
