"""DORA's four keys over recorded deployments and incidents, with a fixed clock."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.pipelines.dora import Incident, commit_time, dora_figures, parse_window

pytestmark = pytest.mark.timeout(10)

DAY = 86400.0
H = 3600.0
END = 1_700_000_000.0


def dep(i: int, status: str, finished: float, *, env: str = "production", commits: list[float] | None = None,
        project_id: int = 1, commit_ts: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": i, "project_id": project_id, "environment": env, "project": "shop",
                         "status": status, "finished_at": finished, "commit_timestamp": commit_ts}
    if commits is not None:
        d["commit_times"] = commits
    return d


def figures(deps: list[dict[str, Any]], incidents: list[Incident] | None = None, **kw: Any) -> dict[str, Any]:
    return dora_figures(deps, incidents or [], environment=kw.pop("environment", "production"),
                        project_id=kw.pop("project_id", None), end=kw.pop("end", END),
                        window_s=kw.pop("window_s", 7 * DAY))


def test_frequency_and_lead_time_over_each_commit() -> None:
    t0 = END - 3 * DAY
    deps = [dep(1, "success", t0, commits=[t0 - 2 * H]),
            dep(2, "success", t0 + DAY, commits=[t0 + DAY - 1 * H, t0 + DAY - 3 * H, t0 + DAY - 5 * H]),
            dep(3, "success", END - 8 * DAY, commits=[END - 9 * DAY]),  # before the window
            dep(4, "success", t0 + 2 * DAY, env="staging", commits=[t0]),  # another environment
            dep(5, "running", t0)]  # not finished: no change yet
    deps[4]["finished_at"] = None
    f = figures(deps)
    assert (f["deployments"], f["changes"], f["failed_changes"]) == (2, 2, 0)
    assert f["deployment_frequency_per_day"] == pytest.approx(2 / 7, abs=1e-4)
    assert f["lead_time_seconds"] == 2.5 * H  # median of 2h, 1h, 3h, 5h
    assert f["change_failure_rate"] == 0.0 and f["time_to_restore_seconds"] is None


def test_head_commit_time_when_commits_were_not_recorded() -> None:
    assert commit_time("2023-11-14T20:13:20+00:00") == pytest.approx(1_699_992_800.0)
    assert commit_time("not a time") is None and commit_time(None) is None
    f = figures([dep(1, "success", 1_699_992_800.0 + 600, commit_ts="2023-11-14T20:13:20+00:00")])
    assert f["lead_time_seconds"] == 600


def test_failed_deployments_and_time_to_restore() -> None:
    t = END - 2 * DAY
    deps = [dep(1, "success", t, commits=[t]),
            dep(2, "failed", t + H),  # a canary rolled back
            dep(3, "failed", t + 2 * H),
            dep(4, "success", t + 5 * H, commits=[t + 4 * H]),  # restores both failures
            dep(5, "failed", END - 60)]  # not restored yet
    f = figures(deps)
    assert (f["changes"], f["failed_changes"], f["restored"]) == (5, 3, 2)
    assert f["change_failure_rate"] == 0.6
    assert f["time_to_restore_seconds"] == pytest.approx(3.5 * H)  # median of 4h and 3h


def test_incidents_join_on_the_service() -> None:
    t = END - 2 * DAY
    deps = [dep(1, "success", t, commits=[t]), dep(2, "success", t + 10 * H, commits=[t + 9 * H]),
            dep(3, "success", t + 20 * H, commits=[t + 19 * H])]
    incidents = [
        Incident(frozenset({"production"}), t + H, t + 3 * H),  # after deployment 1: it failed; resolved in 2h
        Incident(frozenset({"production"}), t + 2 * H, None),  # the same change: counted once
        Incident(frozenset({"other-service"}), t + 11 * H, t + 12 * H),  # not this service
        Incident(frozenset({"shop"}), t + 21 * H, None),  # the project's name; open: restored by no deploy yet
        Incident(frozenset({"production"}), t - H, t),  # before the window's changes
    ]
    f = figures(deps, incidents)
    assert (f["changes"], f["failed_changes"], f["restored"]) == (3, 2, 1)
    assert f["change_failure_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert f["time_to_restore_seconds"] == 2 * H
    # an unresolved incident ends at the next successful deployment
    later = [*deps, dep(4, "success", t + 23 * H, commits=[t + 22 * H])]
    f = figures(later, incidents)
    assert f["restored"] == 2 and f["time_to_restore_seconds"] == 2 * H  # 2h each


def test_project_filter_and_window() -> None:
    deps = [dep(1, "success", END - H, commits=[END - 2 * H]), dep(2, "failed", END - H, project_id=2)]
    assert figures(deps, project_id=1)["changes"] == 1 and figures(deps)["changes"] == 2
    assert figures([])["change_failure_rate"] is None and figures([])["deployment_frequency_per_day"] == 0
    assert parse_window("30d") == 30 * DAY and parse_window("12h") == 12 * H
    for bad in ("0d", "2 years", "soon"):
        with pytest.raises(ValueError):
            parse_window(bad)
