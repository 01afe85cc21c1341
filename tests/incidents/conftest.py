"""Shared fixtures: a pitwall with two people, a weekly schedule, a two-level escalation policy and a service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import Settings, load_settings
from pitwall.incidents.settings import IncidentsSettings
from pitwall.incidents.store import IncidentStore
from pitwall.incidents.wiring import apply_settings
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer, free_port

ROUTING_KEY = "R0UT1NGKEY0000000000000000000001"  # 32 letters and digits, as PagerDuty's integration keys
OTHER_KEY = "R0UT1NGKEY0000000000000000000002"
TOKEN = "pd-test-token-0123456789abcdef"


def incidents_config() -> dict[str, Any]:
    """Alice and Bob rotate weekly on "Primary" (handoff Monday 09:00 Berlin); Carol is the level-2 manager."""
    return {
        "users": [
            {"id": "PALICE1", "name": "Alice", "email": "alice@example.com",
             "contact_methods": [{"type": "webhook", "address": "http://127.0.0.1:9/alice"}]},
            {"id": "PBOB001", "name": "Bob", "email": "bob@example.com"},
            {"id": "PCAROL1", "name": "Carol", "email": "carol@example.com"},
        ],
        "schedules": [{
            "id": "PSCHED1", "name": "Primary", "time_zone": "Europe/Berlin",
            "schedule_layers": [{"start": "2026-01-05T09:00:00+01:00",
                                 "rotation_virtual_start": "2026-01-05T09:00:00+01:00",
                                 "rotation_turn_length_seconds": 604800, "users": ["alice@example.com", "Bob"]}],
        }],
        "escalation_policies": [{
            "id": "PPOLICY", "name": "Web on-call", "num_loops": 1,
            "escalation_rules": [
                {"escalation_delay_in_minutes": 10, "targets": [{"type": "schedule_reference", "id": "Primary"}]},
                {"escalation_delay_in_minutes": 5, "targets": [{"type": "user_reference", "id": "PCAROL1"}]},
            ],
        }],
        "services": [
            {"id": "PWEB001", "name": "web", "escalation_policy": "Web on-call", "integration_keys": [ROUTING_KEY]},
            {"id": "PAPI001", "name": "api", "escalation_policy": "PPOLICY", "integration_keys": [OTHER_KEY],
             "urgency": "low"},
        ],
        "events_per_minute": 1000,
    }


def bob_always_on_call(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with Bob alone on "Primary": a test that pages Alice by assigning her then gets exactly the
    pages it makes, whatever week it runs in (in Alice's weeks the trigger itself pages her too)."""
    cfg["schedules"][0]["schedule_layers"][0]["users"] = ["Bob"]
    return cfg


def pd_settings(tmp_path: Path, *, kube: bool = False, tokens: bool = False, **extra: Any) -> Settings:
    auth = {"auth_tokens": [{"token": TOKEN, "scopes": ["read", "write"], "name": "oncall-bot"}]} if tokens else {}
    return load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                         kube={"enabled": kube}, incidents={**incidents_config(), **extra}, **auth)


def webhook_settings() -> IncidentsSettings:
    """``incidents_config`` with every user reachable through one webhook (never called: pagers are fakes)."""
    cfg = incidents_config()
    for u in cfg["users"]:
        u["contact_methods"] = [{"type": "webhook", "address": f"http://hooks/{u['name'].lower()}"}]
    return IncidentsSettings.model_validate(cfg)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRevStore]:
    """A state store holding ``webhook_settings``' objects, for tests driving ``IncidentService`` directly."""
    s = SqliteRevStore(tmp_path / "revstore.db", compact_interval_s=None)
    await s.start()
    await apply_settings(IncidentStore(s), webhook_settings())
    yield s
    await s.stop()


@pytest.fixture
async def pd(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of a pitwall configured with ``incidents_config`` (telemetry-only control plane)."""
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def pd_live(tmp_path: Path) -> Iterator[LiveServer]:
    """A live pitwall (uvicorn in a thread) with ``incidents_config`` and a read/write token."""
    srv = LiveServer(pd_settings(tmp_path, tokens=True))
    srv.start()
    yield srv
    srv.stop()


class SmtpSink:
    """A local SMTP server (aiosmtpd) keeping the messages it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message as MessageHandler

        owner = self
        self.messages: list[Message] = []

        class Handler(MessageHandler):  # type: ignore[misc]
            def handle_message(self, message: Message) -> None:
                owner.messages.append(message)

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    s = SmtpSink()
    s.controller.start()
    yield s
    s.controller.stop()
