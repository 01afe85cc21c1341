"""Two `pitwall server`s on one etcd, notifications state on one PostgreSQL: kill -9 the leader under load.

Both evaluate the same alert rule (``vector(1)``, firing at once) and hand the alert to their own notification
pipeline; only the election's leader sends, deduplicating through the notification log both keep in
``notifications.state_url``. A writer thread puts Consul KV keys (py-consul) through both servers throughout.
After the SIGKILL the survivor must lead within the lease (3 s) plus a margin, hold every acknowledged write,
and the webhook must have had the alert's group exactly once (repeat_interval 1h) — while a new alert sent to
the survivor afterwards is delivered, so its sender is live.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul
import pytest
import requests
import yaml

from tests.alerting.notify.helpers import Receiver, webhook_config
from tests.conftest import pod_subnet_pair
from tests.kube.servers import TOKEN, Server, two_servers, until
from tests.storage.revstore.conftest import start_postgres

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(300)]

LEASE_S = 3.0  # state.election_ttl of tests/kube/servers.py
TAKEOVER_MARGIN_S = 12.0  # a loaded 2-core machine: the watch, the campaign, the /metrics poll
GROUP_INTERVAL_S = 2.0


@dataclass
class Writer:
    """Puts unique Consul KV keys through both servers in turn; remembers which were acknowledged."""

    servers: tuple[Server, Server]
    acked: dict[str, str] = field(default_factory=dict)  # key -> value
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        clients = [_client(s) for s in self.servers]
        i = 0
        while not self.stop.is_set():
            key, value = f"failover/{i:06d}", f"v{i}"
            try:
                if clients[i % 2].kv.put(key, value):
                    self.acked[key] = value
                else:
                    self.refused += 1
            except (requests.RequestException, consul.ConsulException):
                self.refused += 1  # the killed server (or one caught mid-kill): not acknowledged
            i += 1


def _client(s: Server) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=s.port, token=TOKEN, connections_timeout=10)
    c.http.session.headers["X-Consul-Token"] = TOKEN
    return c


@pytest.fixture
def pair(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Server, Server]]:
    pg = start_postgres()
    try:
        state_url = pg.create_database().replace("postgresql://", "postgresql+psycopg://", 1)
        am = tmp_path / "alertmanager.yml"
        am.write_text(yaml.safe_dump(webhook_config(receiver.url + "/hook", group_wait="1s",
                                                    group_interval=f"{GROUP_INTERVAL_S:g}s", repeat="1h")))
        (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": []}))  # the rule comes once both run
        extra: dict[str, Any] = {"alertmanager_config": str(am), "rule_files": [str(tmp_path / "rules.yml")],
                                 "notifications": {"state_url": state_url}}
        with two_servers(tmp_path, pod_subnet_pair(), extra) as servers:
            yield servers
    finally:
        pg.stop()


def _start_firing(servers: tuple[Server, Server], rules: Path) -> None:
    """Add the always-firing rule and reload both servers, so both begin with nothing sent yet."""
    rules.write_text(yaml.safe_dump({"groups": [{"name": "failover", "interval": "1s", "rules": [
        {"alert": "AlwaysFiring", "expr": "vector(1)", "for": "0s", "labels": {"severity": "page"}}]}]}))
    for s in servers:
        r = s.req("POST", "/-/reload")
        assert r.status_code == 200, r.text


def _sent(receiver: Receiver, alertname: str) -> list[Any]:
    return [b for b in receiver.bodies("/hook") if b["groupLabels"].get("alertname") == alertname]


def test_kill_leader_under_load(pair: tuple[Server, Server], receiver: Receiver, tmp_path: Path) -> None:
    a, b = pair
    _start_firing(pair, tmp_path / "rules.yml")
    leaders = until("one leader", lambda: [s for s in pair if s.leading()])
    assert len(leaders) == 1, "exactly one server leads"
    leader, survivor = leaders[0], (b if leaders[0] is a else a)
    # Both evaluate the rule and group the alert; the leader alone sends it.
    until("the alert's first notification", lambda: _sent(receiver, "AlwaysFiring"), timeout=60)
    time.sleep(2 * GROUP_INTERVAL_S)
    assert len(_sent(receiver, "AlwaysFiring")) == 1, "both servers sent the alert"

    writer = Writer(pair)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        until("writes through both servers", lambda: len(writer.acked) >= 50, timeout=60)
        killed_at = time.monotonic()
        leader.stop(signal.SIGKILL)
        until("the survivor to lead", survivor.leading, timeout=LEASE_S + TAKEOVER_MARGIN_S)
        takeover_s = time.monotonic() - killed_at
        acked_at_takeover = len(writer.acked)
        until("writes after the takeover", lambda: len(writer.acked) >= acked_at_takeover + 50, timeout=60)
    finally:
        writer.stop.set()
        thread.join(timeout=30)

    # Every acknowledged write, whichever server took it, is on the survivor.
    _, items = _client(survivor).kv.get("failover/", recurse=True)
    stored = {x["Key"]: x["Value"].decode() for x in items or []}
    lost = {k for k, v in writer.acked.items() if stored.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:5]}"

    # The survivor's sender is live (a new alert is delivered) ...
    r = survivor.req("POST", "/api/v2/alerts", [{"labels": {"alertname": "AfterFailover"}}])
    assert r.status_code == 200, r.text
    until("the survivor's notification", lambda: _sent(receiver, "AfterFailover"), timeout=30)
    # ... and, several group intervals on, the firing alert was still notified once across both servers.
    time.sleep(4 * GROUP_INTERVAL_S)
    assert len(_sent(receiver, "AlwaysFiring")) == 1, "duplicate notification across the failover"
    assert len(_sent(receiver, "AfterFailover")) == 1
    print(f"\nfailover: takeover {takeover_s:.1f} s after SIGKILL (lease {LEASE_S:g} s); "
          f"{len(writer.acked)} writes acknowledged, 0 lost, {writer.refused} refused; "
          f"AlwaysFiring notified {len(_sent(receiver, 'AlwaysFiring'))}x")
