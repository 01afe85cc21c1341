"""The UI's routes in process, for the page tests that need no live server: a `UIDeps` with no telemetry
backends but the consoles a test gives, and an httpx client on its router."""

from __future__ import annotations

from typing import Any, cast

import httpx
from fastapi import FastAPI

from pitwall.metrics import TargetsSnapshot
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps


def ui_deps(**consoles: Any) -> UIDeps:
    """Default settings, no metrics, logs, traces, alerts, dashboards or targets; ``consoles`` as given
    (``chaos=...``, ``releases=...``, ``changes=...``)."""
    return UIDeps(settings=UISettings(), metrics=cast(Any, None), targets=lambda: TargetsSnapshot([], [], {}),
                  traces=None, logs=None, alerts=None, dashboards=cast(Any, None), **consoles)


def ui_client(deps: UIDeps) -> httpx.AsyncClient:
    """An httpx client of the UI's router over ``deps``, without a network."""
    app = FastAPI()
    app.include_router(ui_router(deps))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
