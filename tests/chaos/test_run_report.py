"""The resilience report of Chaos Toolkit runs: the target and window read from a journal, the report computed
by the experiments' code over the run's window (real PromQL engine, the Istio series of
``test_resilience``), ``POST /api/chaos/v1/report`` and its bounds, and the journal entry without a target."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pitwall.chaos import ResilienceReporter
from pitwall.chaos.api import MAX_RUN_REPORT_BYTES, chaos_router
from pitwall.chaos.ctk import after_experiment_control
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.runreport import NoTarget, journal_target, render, report_request, run_window
from pitwall.metrics.memory import MemoryQuerier
from tests.chaos.test_resilience import APPLY, HEALED, RECOVER, Budgets, T, _querier, _range, network_chaos

pytestmark = pytest.mark.timeout(60)


def _at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _fault(name: str, spec: dict[str, Any], start: float, end: float, *, namespace: str | None = "shop",
           status: str = "succeeded", func: str = "start_fault") -> dict[str, Any]:
    args: dict[str, Any] = {"kind": "NetworkChaos", "name": name, "spec": spec}
    if namespace is not None:
        args["namespace"] = namespace
    return {"activity": {"type": "action", "name": name,
                         "provider": {"type": "python", "module": "pitwall.chaos.ctk", "func": func,
                                      "arguments": args}},
            "status": status, "start": _at(start), "end": _at(end), "output": None}


def _journal(runs: list[dict[str, Any]], rollbacks: list[dict[str, Any]] | None = None,
             extensions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    exp: dict[str, Any] = {"title": "t", "description": "d", "method": [r["activity"] for r in runs]}
    if extensions is not None:
        exp["extensions"] = extensions
    return {"experiment": exp, "start": _at(APPLY - 30), "end": _at(RECOVER + 20), "status": "completed",
            "deviated": False, "run": runs, "rollbacks": rollbacks or []}


WEB = {"selector": {"labelSelectors": {"app": "web"}}, "mode": "all", "action": "delay"}


def test_target_from_the_extension_or_the_one_target_of_the_faults() -> None:
    faults = [_fault("a", WEB, APPLY, APPLY + 1), _fault("b", WEB, APPLY + 5, APPLY + 6)]
    assert journal_target(_journal(faults)) == {"namespace": "shop", "app": "web"}
    # the extension wins over the faults; ${name} from the configuration
    ext = [{"name": "other"}, {"name": "pitwall", "target": {"namespace": "${ns}", "app": "api"}}]
    assert journal_target(_journal(faults, extensions=ext), {"ns": "shop"}) == {"namespace": "shop", "app": "api"}
    # a Schedule embeds the selector one level down; the namespace defaults as start_fault's does
    sched = {"schedule": "@every 1m", "type": "NetworkChaos",
             "networkChaos": {"selector": {"namespaces": ["other"], "labelSelectors": {"app.kubernetes.io/name": "db"}}}}
    assert journal_target(_journal([_fault("s", sched, APPLY, APPLY + 1)])) == {"namespace": "other", "app": "db"}
    whole = _fault("n", {"selector": {"namespaces": ["ns1"]}}, APPLY, APPLY + 1, namespace=None)
    assert journal_target(_journal([whole])) == {"namespace": "ns1", "app": ""}


def test_no_target_or_several_is_no_report_with_the_reason() -> None:
    with pytest.raises(NoTarget, match="started no fault"):
        journal_target(_journal([]))
    failed = _fault("a", WEB, APPLY, APPLY + 1, status="failed")  # a fault that was never created
    with pytest.raises(NoTarget, match="started no fault"):
        journal_target(_journal([failed]))
    two = [_fault("a", WEB, APPLY, APPLY + 1), _fault("b", {"selector": {"labelSelectors": {"app": "api"}}},
                                                        APPLY, APPLY + 1)]
    with pytest.raises(NoTarget, match=r"2 targets \(shop/api, shop/web\)"):
        journal_target(_journal(two))
    with pytest.raises(NoTarget, match="must be an object"):
        journal_target(_journal([], extensions=[{"name": "pitwall", "target": "shop/web"}]))


def test_the_window_from_the_first_fault_to_the_last_revert() -> None:
    method = [{"activity": {"type": "probe", "name": "p", "provider": {"type": "python", "module": "m", "func": "f"}},
               "status": "succeeded", "start": _at(APPLY - 10), "end": _at(APPLY - 9)},
              _fault("a", WEB, APPLY, APPLY + 1),
              _fault("stop", {}, APPLY + 100, APPLY + 101, func="stop_fault")]
    rollback = _fault("undo", {}, RECOVER - 1, RECOVER, func="stop_fault")
    start, end, reverted = run_window(_journal(method, [rollback]), datetime.now(UTC))
    assert (start.timestamp(), reverted.timestamp(), end.timestamp()) == (APPLY, RECOVER, RECOVER + 20)
    # no fault: from the first method activity; no rollbacks: the method's last end
    start, end, reverted = run_window(_journal(method[:1]), datetime.now(UTC))
    assert (start.timestamp(), reverted.timestamp()) == (APPLY - 10, APPLY - 9)
    # no end yet (a control called early): now; nothing ran: the run's start
    j = _journal([])
    del j["end"]
    now = datetime.fromtimestamp(RECOVER + 50, UTC)
    start, end, reverted = run_window(j, now)
    assert (start.timestamp(), end, reverted) == (APPLY - 30, now, now)
    body = report_request(_journal(method, [rollback]), now)
    assert body == {"target": {"namespace": "shop", "app": "web"}, "start": _at(APPLY), "end": _at(RECOVER + 20),
                    "reverted_at": _at(RECOVER)}


async def test_a_runs_report_is_the_experiments_report_over_its_window() -> None:
    budgets = Budgets()
    reporter = ResilienceReporter(_range(_querier()), budgets)
    start, end, reverted = (datetime.fromtimestamp(t, UTC) for t in (APPLY, RECOVER + 20, RECOVER))
    report = await reporter.report_run({"namespace": "shop", "app": "web"}, start, end, T + 3600, reverted)
    assert report["target"] == "shop/web" and report["end"] == _at(RECOVER) and report["run_end"] == _at(RECOVER + 20)
    assert report["signals"]["errors"]["before"] == 0 and report["signals"]["errors"]["during"] > 35
    assert 100 <= report["recovery_s"] <= 130 and report["complete"] is True
    assert budgets.calls == [("web", APPLY * 1000, RECOVER * 1000)]
    # the same numbers as the Chaos Mesh object with that window (one code path)
    mesh = await reporter.report(network_chaos(), T + 3600)
    assert mesh["signals"] == report["signals"] and mesh["recovery_s"] == report["recovery_s"]
    # a label selector, a Chaos Mesh selector
    by_labels = await reporter.report_run({"namespace": "shop", "labelSelectors": {"app": "web"}}, start, end,
                                          T + 3600, reverted)
    by_sel = await reporter.report_run({"namespaces": ["shop"], "labelSelectors": {"app": "web"}}, start, end,
                                       T + 3600, reverted)
    assert by_labels["recovery_s"] == by_sel["recovery_s"] == report["recovery_s"]
    text = render(report)
    assert "shop/web" in text and "recovered" in text and "25.00% of its error budget" in text


async def test_pending_until_recovered_or_the_margin_after_is_observed() -> None:
    reporter = ResilienceReporter(_range(_querier()))
    start, end = datetime.fromtimestamp(APPLY, UTC), datetime.fromtimestamp(RECOVER, UTC)
    # 30 s after the revert the target still fails (it heals at HEALED): not final, says how much was seen
    early = await reporter.report_run({"namespace": "shop", "app": "web"}, start, end, RECOVER + 30)
    assert early["recovery_s"] is None and early["complete"] is False
    assert early["recovery_note"] == "not recovered yet: 30 s of the 150 s after the revert observed"
    assert "not recovered yet" in render(early) and "SLO budget: not read" in render(early)
    assert "no SLO whose service" in render({**early, "slo": []})
    # once recovered, final before the margin is over
    later = await reporter.report_run({"namespace": "shop", "app": "web"}, start, end, HEALED + 90)
    assert later["recovery_s"] is not None and later["complete"] is True
    # reverted at APPLY + 100 and still failing when the 120 s margin after it is observed: final, not back
    reverted = start + timedelta(seconds=100)
    never = await reporter.report_run({"namespace": "shop", "app": "web"}, start, reverted, APPLY + 220)
    assert never["margin_s"] == 120 and never["complete"] is True and never["recovery_s"] is None
    assert never["recovery_note"] == "not back within the baseline's bounds in the data"
    assert (await reporter.report_run({"namespace": "shop", "app": "web"}, start, reverted,
                                      APPLY + 219))["complete"] is False
    # no signals before the window: nothing later can find a recovery, so final at once (the control stops waiting)
    blind = await ResilienceReporter(_range(MemoryQuerier())).report_run({"namespace": "shop", "app": "web"}, start,
                                                                         end, RECOVER + 1)
    assert blind["complete"] is True and blind["recovery_note"] == "no signals before the window to compare with"


class _NoKube:
    """The report route reads no object: a client that fails if it is asked for one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"KubeClient.{name} called")


async def test_the_report_route_and_its_bounds() -> None:
    reporter = ResilienceReporter(_range(_querier()), Budgets())
    app = FastAPI()
    app.include_router(chaos_router(_NoKube(), ChaosReport(), reporter))  # type: ignore[arg-type]
    body = {"target": {"namespace": "shop", "app": "web"}, "start": _at(APPLY), "end": _at(RECOVER + 20),
            "reverted_at": _at(RECOVER)}

    def bad(**kw: Any) -> dict[str, Any]:
        return {**copy.deepcopy(body), **kw}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.post("/api/chaos/v1/report", json=body)
        answers = {why: await c.post("/api/chaos/v1/report", json=b) for why, b in {
            "no namespace": bad(target={"app": "web"}),
            "no target": bad(target=None),
            "naive time": bad(start="2023-11-14T22:23:20"),
            "not a time": bad(end="soon"),
            "end before start": bad(end=_at(APPLY - 1), reverted_at=None),
            "a year": bad(end=_at(APPLY + 366 * 86400)),
            "reverted outside": bad(reverted_at=_at(RECOVER + 60)),
            "huge labels": bad(target={"namespace": "shop", "labelSelectors": {f"k{i}": "v" for i in range(100)}}),
        }.items()}
        big = await c.post("/api/chaos/v1/report", content=b"{" + b" " * MAX_RUN_REPORT_BYTES + b"}")
        not_json = await c.post("/api/chaos/v1/report", content=b"[1,")
    assert ok.status_code == 200, ok.text
    assert ok.json()["target"] == "shop/web" and ok.json()["slo"] == [{"name": "web-availability", "consumed": 0.25}]
    for why, r in answers.items():
        assert r.status_code == 400, (why, r.status_code, r.text)
    assert "namespace" in answers["no namespace"].text and "RFC 3339" in answers["naive time"].text
    assert big.status_code == 413 and not_json.status_code == 400


def test_the_control_without_a_target_leaves_the_reason_and_the_experiment_as_written() -> None:
    journal = _journal([])
    journal["experiment"]["extensions"] = [{"name": "pitwall"}]
    experiment = journal["experiment"]
    after_experiment_control(context=experiment, state=journal, configuration={"pitwall_url": "http://127.0.0.1:9"})
    entry = journal["experiment"]["extensions"][0]
    assert entry["report"] is None and "started no fault" in entry["report_note"]
    assert experiment["extensions"] == [{"name": "pitwall"}]  # the caller's experiment object is unchanged
    # a server that cannot be reached: the reason, never an exception (a report does not fail the run)
    j2 = _journal([_fault("a", WEB, APPLY, APPLY + 1)])
    after_experiment_control(context=None, state=j2, configuration={"pitwall_url": "http://127.0.0.1:9"},
                             recovery_wait_s=0)
    entry2 = j2["experiment"]["extensions"][-1]
    assert entry2["name"] == "pitwall" and entry2["report"] is None and "cannot reach pitwall" in entry2["report_note"]



def test_pitwall_chaos_run_calls_the_same_control() -> None:
    """The runner of ``pitwall chaos run`` plays the declared control as Chaos Toolkit does (its arguments too)."""
    from pitwall.chaos.experiment import run_experiment

    exp = {"title": "t", "description": "d", "configuration": {"pitwall_url": "http://127.0.0.1:9"},
           "extensions": [{"name": "pitwall", "target": {"namespace": "shop", "app": "web"}}],
           "controls": [{"name": "pitwall", "provider": {"type": "python", "module": "pitwall.chaos.ctk",
                                                         "arguments": {"recovery_wait_s": 0}}}],
           "method": [{"type": "probe", "name": "v", "provider": {"type": "python", "module": "tests.chaos.ctk_helpers",
                                                                  "func": "value", "arguments": {"v": 1}}}]}
    journal = run_experiment(exp)
    entry = journal["experiment"]["extensions"][0]
    assert entry["target"] == {"namespace": "shop", "app": "web"}
    assert entry["report"] is None and "cannot reach pitwall at http://127.0.0.1:9" in entry["report_note"]
