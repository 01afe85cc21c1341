"""The ``incidents:`` settings: the documented example loads, bad references name the key, reload applies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from tests.incidents.conftest import OTHER_KEY, incidents_config

pytestmark = pytest.mark.timeout(30)
DOC = Path(__file__).resolve().parents[2] / "docs" / "incidents.md"


def _doc_config() -> dict[str, Any]:
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and "incidents" in doc:
            return dict(doc["incidents"])
    raise AssertionError("docs/incidents.md has no incidents: example")


def test_documented_example_loads(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, incidents=_doc_config())
    inc = s.incidents
    assert inc.tick_interval == 1000 and inc.events_per_minute == 120
    (sched,) = inc.schedules
    assert sched.schedule_layers[0].users == [inc.users[0].id, inc.users[1].id]  # email and name resolved
    (pol,) = inc.escalation_policies
    assert pol.escalation_rules[0].targets[0].id == "PSCHED1"  # the schedule's name resolved to its id
    assert inc.services[0].escalation_policy == "PPOLICY"
    assert inc.users[0].notification_rules == {"low": ["PALICEM"]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["schedules"][0]["schedule_layers"][0]["users"].append("Mallory"),
     "incidents: schedules[Primary].Layer 1: unknown user 'Mallory'"),
    (lambda c: c["escalation_policies"][0]["escalation_rules"][0]["targets"].append(
        {"type": "schedule_reference", "id": "Nope"}), "unknown schedule 'Nope'"),
    (lambda c: c["services"][1].update(integration_keys=c["services"][0]["integration_keys"]),
     "integration key R0UT1N... is also web's"),
    (lambda c: c["services"][0].update(escalation_policy="Nobody"), "unknown escalation policy 'Nobody'"),
    (lambda c: c["services"][0].update(integration_keys=["not-a-key"]), "must be 32 letters or digits"),
    (lambda c: c["schedules"][0].update(time_zone="Europe/Atlantis"), "unknown time zone 'Europe/Atlantis'"),
    (lambda c: c["schedules"][0]["schedule_layers"][0].update(
        restrictions=[{"type": "weekly_restriction", "start_time_of_day": "09:00", "duration_seconds": 60}]),
     "a weekly restriction needs start_day_of_week"),
])
def test_bad_settings_name_the_problem(tmp_path: Path, change: Any, message: str) -> None:
    cfg = incidents_config()
    change(cfg)
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path, incidents=cfg)
    assert message in err.value.message


async def test_reload_applies_new_objects(pd: httpx.AsyncClient, tmp_path: Path) -> None:
    cfg = incidents_config()
    cfg["services"].append({"id": "PNEW001", "name": "search", "escalation_policy": "PPOLICY",
                            "integration_keys": ["SEARCH00000000000000000000000001"]})
    cfg["services"][1]["integration_keys"] = [OTHER_KEY]
    cfg["events_per_minute"] = 7
    part = pd.app.state.components.incidents  # type: ignore[attr-defined]
    await part.reload(load_settings(data_dir=tmp_path, incidents=cfg))
    assert part.limiter.per_minute == 7
    names = [s["name"] for s in (await pd.get("/pagerduty/services")).json()["services"]]
    assert names == ["api", "search", "web"]
    r = await pd.post("/v2/enqueue", json={"routing_key": "SEARCH00000000000000000000000001",
                                           "event_action": "trigger",
                                           "payload": {"summary": "s", "source": "h", "severity": "info"}})
    assert r.status_code == 202
