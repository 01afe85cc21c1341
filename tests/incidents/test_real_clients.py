"""The real PagerDuty clients against a live pitwall: pdpyras and the official ``pagerduty`` package.

pdpyras' ``EventsAPISession``/``ChangeEventsAPISession`` and the ``pagerduty``
package's ``EventsApiV2Client`` send trigger, acknowledge, resolve and change
events; pdpyras' ``APISession`` (base URL ``http://HOST:PORT/pagerduty``, a
pitwall token as ``Token token=...``) lists, acknowledges and resolves
incidents, pages with ``iter_all`` and reads on-calls. The ``pagerduty``
package insists on https, so it runs against pitwall serving TLS.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pagerduty
import pytest
import uvicorn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pdpyras announces its deprecation on import (still in use)
    import pdpyras

from tests.conftest import LiveServer, free_port, wait_ready
from tests.incidents.conftest import OTHER_KEY, ROUTING_KEY, TOKEN, pd_settings

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


BEARER = {"Authorization": f"Bearer {TOKEN}"}  # with auth_tokens set, events need a write token too


def _events(url: str, key: str = ROUTING_KEY) -> pdpyras.EventsAPISession:
    s = pdpyras.EventsAPISession(key)
    s.url = url  # pdpyras' sessions take their base URL from ``url``
    s.headers.update(BEARER)
    return s


def _api(url: str, user: str = "alice@example.com") -> pdpyras.APISession:
    api = pdpyras.APISession(TOKEN, default_from=user)
    api.url = url + "/pagerduty"
    return api


def test_pdpyras_events_and_rest(pd_live: LiveServer) -> None:
    events = _events(pd_live.url)
    key = events.trigger("disk full on db1", "db1", severity="critical", custom_details={"free": 0},
                         links=[{"href": "http://grafana/d/db", "text": "dashboard"}])
    assert len(key) == 32
    assert events.trigger("disk full on db1", "db1", dedup_key=key) == key  # deduplicated
    assert events.acknowledge(key) == key
    api = _api(pd_live.url)
    (inc,) = api.rget("incidents", params={"statuses[]": ["acknowledged"]})
    assert (inc["status"], inc["incident_key"], inc["service"]["summary"]) == ("acknowledged", key, "web")
    assert inc["acknowledgements"][0]["acknowledger"]["id"] == "PWEB001"  # acknowledged by the integration
    assert events.resolve(key) == key
    assert api.rget(inc["self"])["status"] == "resolved"
    # A bad event is the client's PDClientError carrying PagerDuty's 400 body.
    with pytest.raises(pdpyras.PDClientError) as err:
        _events(pd_live.url, "0" * 32).trigger("x", "y")
    assert err.value.response is not None and err.value.response.status_code == 400
    assert err.value.response.json()["errors"] == ["Invalid routing key"]

    changes = pdpyras.ChangeEventsAPISession(ROUTING_KEY)
    changes.url = pd_live.url
    changes.headers.update(BEARER)
    changes.submit("deploy web v42", source="ci", custom_details={"sha": "abc"},
                   links=[{"href": "https://ci/42", "text": "pipeline"}])
    (ce,) = api.rget("change_events")
    assert (ce["summary"], ce["source"], ce["services"][0]["id"]) == ("deploy web v42", "ci", "PWEB001")


def test_pdpyras_lists_pages_acknowledges_resolves(pd_live: LiveServer) -> None:
    events = _events(pd_live.url)
    keys = [events.trigger(f"alert {i}", "host", dedup_key=f"k{i}", severity="warning") for i in range(7)]
    _events(pd_live.url, OTHER_KEY).trigger("api slow", "api1", dedup_key="api")
    api = _api(pd_live.url)
    everything = list(api.iter_all("incidents", page_size=3, total=True))
    assert [i["incident_number"] for i in everything] == list(range(1, 9))
    web = list(api.iter_all("incidents", params={"service_ids[]": ["PWEB001"], "urgencies[]": ["high"]},
                            page_size=2))
    assert [i["incident_key"] for i in web] == keys
    # Acknowledge two with one PUT, as pdpyras' rput on the collection sends it.
    acked = api.rput("incidents", json=[{"id": i["id"], "type": "incident_reference", "status": "acknowledged"}
                                        for i in web[:2]])
    assert [i["status"] for i in acked] == ["acknowledged", "acknowledged"]
    resolved = api.rput(web[2]["self"], json={"type": "incident_reference", "status": "resolved"})
    assert resolved["status"] == "resolved"
    counts = {s: len(list(api.iter_all("incidents", params={"statuses[]": [s]})))
              for s in ("triggered", "acknowledged", "resolved")}
    assert counts == {"triggered": 5, "acknowledged": 2, "resolved": 1}
    # Notes and log entries through the client.
    note = api.rpost(f"incidents/{web[0]['id']}/notes", json={"content": "looking into it"})
    assert note["content"] == "looking into it" and note["user"]["id"] == "PALICE1"
    log = list(api.iter_all(f"incidents/{web[0]['id']}/log_entries"))
    assert [e["type"] for e in log][:2] == ["annotate_log_entry", "acknowledge_log_entry"]
    assert log[-1]["type"] == "trigger_log_entry"
    # The From header is required to change an incident.
    anon = pdpyras.APISession(TOKEN)
    anon.url = pd_live.url + "/pagerduty"
    r = anon.put(f"incidents/{web[3]['id']}", json={"incident": {"type": "incident_reference",
                                                                  "status": "acknowledged"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == 2001


def test_pdpyras_reads_oncalls_and_schedules(pd_live: LiveServer) -> None:
    api = _api(pd_live.url)
    # In the week of 2026-01-05 Alice is on call on "Primary" (level 1); Carol is level 2 always.
    oncalls = api.rget("oncalls", params={"since": "2026-01-07T12:00:00Z", "until": "2026-01-07T12:00:01Z"})
    got = sorted((o["escalation_level"], o["user"]["summary"], o["start"], o["end"]) for o in oncalls)
    assert got == [(1, "Alice", "2026-01-05T08:00:00Z", "2026-01-12T08:00:00Z"), (2, "Carol", None, None)]
    users = api.rget("schedules/PSCHED1/users", params={"since": "2026-01-05T00:00:00Z",
                                                        "until": "2026-01-20T00:00:00Z"})
    assert [u["name"] for u in users] == ["Alice", "Bob"]
    (created,) = api.rpost("schedules/PSCHED1/overrides", json=[{
        "start": "2026-01-07T00:00:00+01:00", "end": "2026-01-08T00:00:00+01:00",
        "user": {"id": "PCAROL1", "type": "user_reference"}}])
    assert created["status"] == 201 and created["override"]["user"]["id"] == "PCAROL1"
    sched = api.rget("schedules/PSCHED1", params={"since": "2026-01-06T23:00:00Z", "until": "2026-01-08T00:00:00Z"})
    entries = [(e["user"]["summary"], e["start"], e["end"]) for e in sched["final_schedule"]
               ["rendered_schedule_entries"]]
    assert entries == [("Carol", "2026-01-07T00:00:00+01:00", "2026-01-08T00:00:00+01:00"),
                       ("Alice", "2026-01-08T00:00:00+01:00", "2026-01-08T01:00:00+01:00")]
    assert api.find("escalation_policies", "Web on-call")["num_loops"] == 1
    assert [s["name"] for s in api.iter_all("services")] == ["api", "web"]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """pitwall with the incidents config serving https on a free port (uvicorn in a thread)."""
    from pitwall.server import create_app

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True, timeout=60)
    port = free_port()
    app = create_app(pd_settings(tmp_path, tokens=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           ssl_certfile=str(cert), ssl_keyfile=str(key)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{port}"
    wait_ready(url, verify=False)
    yield url, ssl.create_default_context(cafile=str(cert))
    server.should_exit = True
    thread.join(timeout=30)


def test_official_pagerduty_client_over_tls(tls_server: tuple[str, ssl.SSLContext]) -> None:
    url, ctx = tls_server
    with (pagerduty.EventsApiV2Client(ROUTING_KEY, base_url=url, verify=ctx, headers=BEARER) as events,
          pagerduty.RestApiV2Client(TOKEN, default_from="bob@example.com", base_url=url + "/pagerduty",
                                    verify=ctx) as rest,
          pagerduty.EventsApiV2Client("0" * 32, base_url=url, verify=ctx, headers=BEARER) as unknown):
        key = events.trigger("cpu hot on web1", "web1", dedup_key="cpu-web1", severity="error",
                             custom_details={"load": 9})
        assert key == "cpu-web1"
        assert events.acknowledge(key) == key
        events.send_change_event(payload={"summary": "config change: raise limits", "source": "ops",
                                          "timestamp": "2026-12-05T10:00:00Z"})
        (inc,) = rest.list_all("incidents", params={"statuses[]": ["acknowledged"]})
        assert inc["incident_key"] == "cpu-web1"
        assert events.resolve(key) == key
        assert rest.rget(f"incidents/{inc['id']}")["status"] == "resolved"
        assert [c["summary"] for c in rest.list_all("change_events")] == ["config change: raise limits"]
        with pytest.raises(pagerduty.Error):
            unknown.trigger("x", "y")
