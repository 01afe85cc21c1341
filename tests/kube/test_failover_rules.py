"""Two `pitwall server`s on one etcd and one shared metrics engine (Debian's victoria-metrics): rule series are
written once, an alert's ``for`` timer survives a SIGKILL of the leader, and an alert posted to the follower
with Debian's amtool is notified once, by the leader.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.alerting.notify.helpers import Receiver, webhook_config
from tests.backends.vm import VictoriaPeer, need_victoria
from tests.conftest import pod_subnet_pair
from tests.kube.servers import TOKEN, Server, two_servers, until

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(300)]

LEASE_S = 3.0  # state.election_ttl of tests/kube/servers.py
HOLD_S = 40  # the alert's ``for``
PENDING_ON_LEADER_S = 25  # how long the first leader holds the alert pending before it is killed
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
RULES = {"groups": [{"name": "shared", "interval": "1s", "rules": [
    {"record": "pitwall_test:one", "expr": "vector(1)"},
    {"alert": "SlowBurn", "expr": "vector(1)", "for": f"{HOLD_S}s", "labels": {"severity": "page"}}]}]}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaPeer]:
    need_victoria()
    peer = VictoriaPeer(tmp_path / "vm")
    yield peer
    peer.stop()


def _servers(tmp_path: Path, vm: VictoriaPeer, receiver: Receiver, cidrs: tuple[str, str]) -> Any:
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(webhook_config(receiver.url + "/hook", group_wait="1s", group_interval="2s",
                                                repeat="1h")))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": []}))  # each server gets the rules by reload
    extra: dict[str, Any] = {
        "alertmanager_config": str(am), "rule_files": [str(tmp_path / "rules.yml")],
        "global": {"evaluation_interval": "1s"}, "rules": {"for_grace_period": "5s"},
        "backends": {"metrics": {"type": "prometheus-api", "write_url": vm.url + "/api/v1/write",
                                 "query_url": vm.url, "timeout": "5s"}}}
    return two_servers(tmp_path, cidrs, extra)


def _roles(pair: tuple[Server, Server]) -> tuple[Server, Server]:
    leaders = until("one leader", lambda: [s for s in pair if s.leading()], timeout=60)
    assert len(leaders) == 1, "exactly one server leads"
    return leaders[0], (pair[1] if leaders[0] is pair[0] else pair[0])


def _alert(s: Server, name: str) -> dict[str, Any] | None:
    for a in s.get("/api/v1/alerts")["data"]["alerts"]:
        if a["labels"].get("alertname") == name:
            return dict(a)
    return None


def _unix(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _timestamps(vm: VictoriaPeer, series: str) -> list[int]:
    """Every raw sample's timestamp of ``series`` in the engine (duplicates included)."""
    text = httpx.get(vm.url + "/api/v1/export", params={"match[]": series}, timeout=30).text
    out: list[int] = []
    for line in text.splitlines():
        if line.strip():
            out += httpx.Response(200, content=line).json()["timestamps"]
    return sorted(out)


def _sent(receiver: Receiver, alertname: str) -> list[Any]:
    return [b for b in receiver.bodies("/hook") if b["groupLabels"].get("alertname") == alertname]


def test_rules_write_once_and_for_state_survives_the_leaders_sigkill(tmp_path: Path, vm: VictoriaPeer,
                                                                     receiver: Receiver) -> None:
    with _servers(tmp_path, vm, receiver, pod_subnet_pair()) as pair:
        leader, follower = _roles(pair)
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(RULES))
        assert leader.req("POST", "/-/reload").status_code == 200
        first = until("the leader's pending alert", lambda: _alert(leader, "SlowBurn"), timeout=30)
        active_at = _unix(first["activeAt"])
        until("the leader's for state in the engine",
              lambda: vm.api("/api/v1/query", query='ALERTS_FOR_STATE{alertname="SlowBurn"}')["data"]["result"])
        # The follower loads the rules late, just before the kill: a timer of its own would start there.
        time.sleep(max(0.0, active_at + PENDING_ON_LEADER_S - 4 - time.time()))
        follower_loaded = time.time()
        assert follower.req("POST", "/-/reload").status_code == 200
        # It evaluates the rule for its own API (a new group starts its timer at its first evaluation, as in
        # Prometheus) but writes nothing while it follows.
        view = until("the follower's view of the alert", lambda: _alert(follower, "SlowBurn"), timeout=20)
        assert _unix(view["activeAt"]) >= follower_loaded - 1
        time.sleep(max(0.0, active_at + PENDING_ON_LEADER_S - time.time()))
        assert _alert(leader, "SlowBurn")["state"] == "pending"  # type: ignore[index]

        # Both evaluate every second; the engine has one sample per evaluation, the leader's.
        before = _timestamps(vm, "pitwall_test:one")
        assert len(before) >= 10 and len(set(before)) == len(before), "both servers wrote the recording series"
        killed = time.time()
        leader.stop(signal.SIGKILL)
        until("the follower to lead", follower.leading, timeout=LEASE_S + 12)
        took_over = time.time()
        fired = until("the alert to fire on the new leader",
                      lambda: (a := _alert(follower, "SlowBurn")) is not None and a["state"] == "firing" and a,
                      timeout=HOLD_S + 20)
        fired_at = time.time()
        # On taking over it restored the old leader's timer from ALERTS_FOR_STATE in the engine.
        assert _unix(fired["activeAt"]) < follower_loaded - 10, fired
        # Restored, the new leader fires after the rest of the hold plus the time without a leader — before a
        # timer of its own (from its rule load) could have run out.
        assert fired_at < follower_loaded + HOLD_S, "the new leader started the for timer again"
        until("one notification", lambda: _sent(receiver, "SlowBurn"), timeout=30)
        time.sleep(4)
        assert len(_sent(receiver, "SlowBurn")) == 1

        after = _timestamps(vm, "pitwall_test:one")
        assert len(set(after)) == len(after), "duplicate samples of the recording series"
        assert max(after) > took_over * 1000, "the new leader does not write the recording series"
        for_state = _timestamps(vm, 'ALERTS_FOR_STATE{alertname="SlowBurn"}')
        assert len(set(for_state)) == len(for_state)
        print(f"\nfor across failover: pending {killed - active_at:.1f} s on the leader, takeover "
              f"{took_over - killed:.1f} s after SIGKILL, fired {fired_at - took_over:.1f} s after the takeover "
              f"(hold {HOLD_S} s; {fired_at - follower_loaded:.1f} s after the follower loaded the rule); "
              f"{len(after)} recording samples, 0 duplicates")


def test_amtool_alert_to_the_follower_is_notified_once_by_the_leader(tmp_path: Path, vm: VictoriaPeer,
                                                                      receiver: Receiver) -> None:
    if not Path(AMTOOL).exists():
        pytest.skip("Debian's amtool (prometheus-alertmanager) is not installed")
    with _servers(tmp_path, vm, receiver, pod_subnet_pair()) as pair:
        leader, follower = _roles(pair)
        sent_at = time.monotonic()
        http_config = tmp_path / "amtool-http.yml"
        http_config.write_text(yaml.safe_dump({"authorization": {"type": "Bearer", "credentials": TOKEN}}))
        r = subprocess.run([AMTOOL, f"--alertmanager.url={follower.url}", f"--http.config.file={http_config}",
                            "alert", "add", "alertname=ViaFollower",
                            "service=checkout", "--annotation=summary=posted to the follower"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        (body,) = until("the leader's notification", lambda: _sent(receiver, "ViaFollower"), timeout=30)
        latency = time.monotonic() - sent_at
        assert body["alerts"][0]["labels"] == {"alertname": "ViaFollower", "service": "checkout"}
        assert body["alerts"][0]["annotations"] == {"summary": "posted to the follower"}
        time.sleep(3 * 2)  # three group intervals: nobody sends it again
        assert len(_sent(receiver, "ViaFollower")) == 1
        # Both servers' Alertmanager API list it (one alert space), the leader delivered it.
        for s in (leader, follower):
            names = [a["labels"]["alertname"] for a in s.get("/api/v2/alerts")]
            assert names == ["ViaFollower"], s.name
        print(f"\nalert posted to the follower with amtool: notified by the leader {latency:.1f} s later "
              f"(group_wait 1 s), once")
