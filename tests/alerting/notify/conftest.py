"""Fixtures: a pitwall app with an Alertmanager config and a local webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings

SPEC = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "alertmanager" / "api" / "v2" / \
    "openapi.yaml"


AppFactory = Callable[[dict[str, Any]], Any]


@pytest.fixture
def am_app(tmp_path: Path) -> Callable[..., Any]:
    """``async with am_app(config_dict) as client``: the app with that Alertmanager config, lifespan entered."""

    @asynccontextmanager
    async def make(cfg: dict[str, Any], **notifications: Any) -> AsyncIterator[httpx.AsyncClient]:
        from pitwall.server import create_app

        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        # Through pitwall.yaml (relative path), so /-/reload re-reads it as in production.
        main = tmp_path / "pitwall.yaml"
        main.write_text(yaml.safe_dump({"alertmanager_config": path.name, "storage": {"fsync": False},
                                        "notifications": notifications}))
        s = load_settings(main, data_dir=tmp_path / "data", listen="127.0.0.1:0")
        app = create_app(s)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                c.app = app  # type: ignore[attr-defined]
                yield c

    return make


@pytest.fixture(scope="session")
def spec_definitions() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip("Alertmanager OpenAPI spec not available")
    doc = yaml.safe_load(SPEC.read_text())
    return dict(doc["definitions"])


def validate(defs: dict[str, Any], definition: str, instance: Any) -> None:
    """Validate ``instance`` against the spec's ``definitions[definition]`` (swagger 2.0 = JSON Schema draft 4)."""
    import jsonschema

    schema = {"definitions": defs, "$ref": f"#/definitions/{definition}"}
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)
