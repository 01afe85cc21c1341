"""The browser side of the UI's end-to-end tests: Debian's chromium, driven by Playwright.

`tests/ui/conftest.py` launches one chromium per test module (the ``chromium`` fixture); a `Browser` is one
context on it that records every console error and page error (and, where asked, failed or refused requests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "ui"
# the flags keep a headless chromium in a sandboxed CI quiet: no GPU, no calls home, no first-run pages
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Debian chromium under Playwright, closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Browser:
    """One browser context in a colour scheme, collecting what went wrong in `errors`.

    ``watch_requests`` also records failed requests and responses of status 400 and above; ``full_page``
    screenshots the whole page rather than the viewport.
    """

    def __init__(self, browser: Any, base: str, scheme: str = "light", *, height: int = 900,
                 timeout_ms: int = 20_000, watch_requests: bool = True, full_page: bool = True) -> None:
        self.browser = browser
        self.base, self.scheme, self.full_page = base, scheme, full_page
        self.errors: list[str] = []
        self.ctx = browser.new_context(viewport={"width": 1280, "height": height}, color_scheme=scheme)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(timeout_ms)
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text} {m.location}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        if watch_requests:
            self.page.on("requestfailed", lambda q: self.errors.append(f"request failed: {q.url}"))
            self.page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400
                         else None)

    def goto(self, path: str, theme: str = "", *, charts: bool = False) -> Any:
        """Open ``path`` (in ``theme`` if given, as the theme toggle stores it) and assert it answered 200;
        with ``charts``, also wait until every chart on it has drawn."""
        if theme:
            self.page.add_init_script(f'localStorage.setItem("pw-theme", "{theme}")')
        resp = self.page.goto(self.base + path, wait_until="networkidle")
        assert resp is not None and resp.status == 200, f"{path}: {resp.status if resp else 'no response'}"
        n = self.page.locator(".pw-chart").count() if charts else 0
        if n:
            self.page.wait_for_function(f"document.querySelectorAll('.pw-chart[data-rendered]').length === {n}")
        return self.page

    def shot(self, name: str) -> None:
        """Screenshot the page into ``test-artifacts/ui/<name>.png``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=self.full_page)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
