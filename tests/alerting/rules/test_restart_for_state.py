"""One server restarted (in-process, embedded store): a pending alert's ``for`` timer continues from
ALERTS_FOR_STATE instead of starting again, as Prometheus' ``--rules.alert.for-grace-period`` restore does."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from tests.conftest import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HOLD_S = 20


def _alert(url: str) -> dict[str, Any] | None:
    alerts = httpx.get(url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return dict(alerts[0]) if alerts else None


def _unix(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_restart_continues_the_for_timer(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "restart", "interval": "1s", "rules": [
        {"alert": "Pending", "expr": "vector(1)", "for": f"{HOLD_S}s"}]}]}))
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             kube={"enabled": False}, rule_files=[str(rules)],
                             rules={"for_grace_period": "2s", "for_outage_tolerance": "1h"})
    srv = LiveServer(settings)
    srv.start()
    try:
        first = _until("the pending alert", lambda: _alert(srv.url), 30)
        active_at = _unix(first["activeAt"])
        time.sleep(max(0.0, active_at + HOLD_S / 2 - time.time()))
        assert (_alert(srv.url) or {}).get("state") == "pending"
        stopped = time.time()
        srv.restart()
        restarted = time.time()
        # Restored after the group's second evaluation: pending since the old ActiveAt plus the downtime.
        restored = _until("the restored timer",
                          lambda: (a := _alert(srv.url)) is not None and _unix(a["activeAt"]) < restarted - 5 and a,
                          30)
        downtime = restarted - stopped
        assert abs(_unix(restored["activeAt"]) - (active_at + downtime)) < downtime + 3
        fired = _until("firing", lambda: (_alert(srv.url) or {}).get("state") == "firing", HOLD_S + 10)
        fired_at = time.time()
        assert fired and fired_at < restarted + HOLD_S, "the restart started the for timer again"
        print(f"\nrestart: pending {stopped - active_at:.1f} s, down {downtime:.1f} s, fired "
              f"{fired_at - restarted:.1f} s after the restart (hold {HOLD_S} s)")
    finally:
        srv.stop()
