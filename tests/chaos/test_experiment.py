"""``pitwall chaos run`` against the real ``chaos run`` (chaostoolkit) on Chaos Toolkit's own fixtures, and the
runner's semantics: tolerances, configuration/secrets, pauses, background activities, controls, rollbacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitwall.chaos.experiment import ExperimentError, Run, run_experiment, validate_experiment
from pitwall.chaos.tolerance import jsonpath, within_tolerance
from tests.chaos.conftest import CTK_FIXTURES, SHARED

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
CHAOS = BIN / "chaos"
PITWALL = BIN / "pitwall"
LIB_FIXTURE = SHARED / "conformance" / "wave2" / "chaostoolkit-lib" / "tests" / "fixtures" / "env_vars_issue252.json"

# README of ../shared/conformance/wave2: what each fixture must do (exit code, journal status, deviated)
EXPECTED = {
    "check-file-exists.json": (0, "completed", False),
    "check-file-exists-fail.json": (1, "failed", False),
    "check-file-exists-deviated.json": (1, "completed", True),
    "invalid-plan.json": (1, None, None),
    "well-formed-experiment.json": (1, None, None),
    "override-rollbacks-runtime-strategy.json": (0, "completed", False),
    "override-hypothesis-runtime-strategy.json": (0, "completed", False),
}


def _workdir(tmp: Path) -> Path:
    """The layout the fixtures expect in their working directory (tests/conftest.py, a failing module...)."""
    fx = tmp / "tests" / "fixtures"
    fx.mkdir(parents=True)
    for d in (tmp / "tests", fx):
        (d / "__init__.py").write_text("")
    (tmp / "tests" / "conftest.py").write_text("# present\n")
    (fx / "force_failure.py").write_text("def kaboom():\n    raise RuntimeError('kaboom')\n")
    (fx / "dummy.txt").write_text("x")
    return tmp


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _shape(journal: dict[str, Any]) -> dict[str, Any]:
    """What must agree between the two runners: statuses, steady states, the activities run and their results."""
    def runs(rs: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
        return [(r["activity"]["name"], r["status"], r.get("tolerance_met")) for r in rs]

    ss = journal["steady_states"]
    return {"status": journal["status"], "deviated": journal["deviated"],
            "before": None if ss["before"] is None else (ss["before"]["steady_state_met"], runs(ss["before"]["probes"])),
            "after": None if ss["after"] is None else (ss["after"]["steady_state_met"], runs(ss["after"]["probes"])),
            "run": runs(journal["run"]), "rollbacks": runs(journal["rollbacks"]),
            "keys": sorted(journal)}


@pytest.mark.skipif(not CTK_FIXTURES.is_dir(), reason="../shared is absent")
@pytest.mark.skipif(not CHAOS.exists(), reason="chaostoolkit is not installed")
@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_same_outcome_as_chaostoolkit(tmp_path: Path, fixture: str) -> None:
    results = {}
    for tool, cmd in (("ctk", [str(CHAOS), "run"]), ("pitwall", [str(PITWALL), "chaos", "run"])):
        wd = _workdir(tmp_path / tool)
        shutil.copy(CTK_FIXTURES / fixture, wd / fixture)
        proc = _run([*cmd, fixture, "--journal-path", str(wd / "journal.json")], wd)
        journal = json.loads((wd / "journal.json").read_text()) if (wd / "journal.json").exists() else None
        results[tool] = (proc.returncode, journal)
    code, status, deviated = EXPECTED[fixture]
    for tool, (rc, journal) in results.items():
        assert rc == code, (tool, rc)
        if status is None:
            assert journal is None, tool
        else:
            assert journal is not None and journal["status"] == status and journal["deviated"] is deviated, tool
    if status is not None:
        assert _shape(results["pitwall"][1]) == _shape(results["ctk"][1])


@pytest.mark.skipif(not CTK_FIXTURES.is_dir(), reason="../shared is absent")
def test_cli_flag_overrides_the_rollback_strategy_written_in_the_experiment(tmp_path: Path) -> None:
    wd = _workdir(tmp_path)
    name = "override-rollbacks-runtime-strategy.json"
    shutil.copy(CTK_FIXTURES / name, wd / name)
    assert _run([str(PITWALL), "chaos", "run", name], wd).returncode == 0
    assert json.loads((wd / "journal.json").read_text())["rollbacks"] == []  # "never", as written
    assert _run([str(PITWALL), "chaos", "run", name, "--rollback-strategy", "always"], wd).returncode == 0
    rolled = json.loads((wd / "journal.json").read_text())["rollbacks"]
    assert [r["activity"]["name"] for r in rolled] == ["pretend-to-delete-file"]


@pytest.mark.skipif(not LIB_FIXTURE.is_file(), reason="../shared is absent")
def test_var_file_with_env_and_dynamic_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", os.getcwd())
    run = Run({"title": "t", "description": "d", "method": []}, var_file=json.loads(LIB_FIXTURE.read_text()))
    assert run.config["some_config_1"] == os.getcwd()
    assert run.config["some_config_2"] is True


def _exp(**kw: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", "method": [], **kw}


def _py(name: str, func: str, kind: str = "action", **args: Any) -> dict[str, Any]:
    return {"type": kind, "name": name, "provider": {"type": "python", "module": "tests.chaos.ctk_helpers",
                                                     "func": func, "arguments": args}}


def test_rollbacks_run_when_the_run_failed_and_the_journal_says_so(tmp_path: Path) -> None:
    marker = tmp_path / "rolled"
    exp = _exp(**{"steady-state-hypothesis": {"title": "h", "probes": [
        {**_py("always-false", "value", "probe", v=False), "tolerance": True}]}},
        rollbacks=[_py("undo", "touch", path=str(marker))])
    journal = run_experiment(exp)
    assert journal["status"] == "failed" and journal["run"] == []
    assert [r["activity"]["name"] for r in journal["rollbacks"]] == ["undo"] and marker.exists()


def test_interrupted_by_a_control_still_rolls_back(tmp_path: Path) -> None:
    marker = tmp_path / "rolled"
    exp = _exp(method=[_py("first", "value", v=1), _py("stop-here", "value", v=2), _py("never", "value", v=3)],
               rollbacks=[_py("undo", "touch", path=str(marker))],
               controls=[{"name": "guard", "provider": {"type": "python", "module": "tests.chaos.ctk_helpers",
                                                        "arguments": {"stop_at": "stop-here"}}}])
    journal = run_experiment(exp)
    assert journal["status"] == "interrupted"
    assert [r["activity"]["name"] for r in journal["run"]] == ["first"]
    assert marker.exists() and journal["rollbacks"][0]["status"] == "succeeded"


def test_configuration_secrets_substitution_pauses_and_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTK_TEST_TOKEN", "s3cret")
    exp = _exp(configuration={"who": "world", "n": {"type": "env", "key": "CTK_TEST_N", "default": 3}},
               secrets={"api": {"token": {"type": "env", "key": "CTK_TEST_TOKEN"}}},
               method=[{**_py("slow", "sleep_then", s=0.3, v="bg"), "background": True},
                       {**_py("greet", "value", v="hello ${who}"), "pauses": {"after": 0.05}},
                       _py("typed", "value", v="${n}"),
                       {**_py("secret", "value", v="${token}")}])
    journal = run_experiment(exp)
    out = {r["activity"]["name"]: r["output"] for r in journal["run"]}
    assert out == {"slow": "bg", "greet": "hello world", "typed": 3, "secret": "s3cret"}
    assert journal["status"] == "completed"
    # The background activity's run was waited for (its output is in), whatever its place in the journal: as in
    # Chaos Toolkit, a background run is recorded when its thread starts it, which may be after the next activity.
    (slow,) = [r for r in journal["run"] if r["activity"]["name"] == "slow"]
    assert slow["status"] == "succeeded" and slow["duration"] >= 0.3


def test_failed_action_is_recorded_and_the_run_goes_on() -> None:
    exp = _exp(method=[_py("boom", "boom"), _py("after", "value", v=1)])
    journal = run_experiment(exp)
    assert [r["status"] for r in journal["run"]] == ["failed", "succeeded"]
    assert "RuntimeError: boom" in "".join(journal["run"][0]["exception"])
    assert journal["status"] == "completed"


def test_tolerances() -> None:
    def probe(t: dict[str, Any], v: Any) -> Any:
        return v > t["provider"]["arguments"]["min"]

    assert within_tolerance(0, {"status": 0, "stdout": ""}, probe)
    assert not within_tolerance(0, {"status": 2}, probe)
    assert within_tolerance([200, 204], {"status": 204}, probe)
    assert within_tolerance([1, 5], 3, probe) and not within_tolerance([1, 5], 6, probe)
    assert within_tolerance([1, 2, 3], 3, probe)
    assert within_tolerance({"type": "regex", "pattern": "^ok", "target": "body"}, {"body": "ok!"}, probe)
    assert within_tolerance({"type": "jsonpath", "path": "$.items[*].ready", "expect": [True, True]},
                            '{"items": [{"ready": true}, {"ready": true}]}', probe)
    assert within_tolerance({"type": "jsonpath", "path": "$..name", "count": 2}, {"a": {"name": 1}, "b": [{"name": 2}]},
                            probe)
    assert within_tolerance({"type": "range", "range": [0.1, 0.5], "target": "v"}, {"v": "0.3"}, probe)
    assert within_tolerance({"type": "probe", "provider": {"arguments": {"min": 2}}}, 3, probe)
    assert not within_tolerance({"type": "probe", "provider": {"arguments": {"min": 2}}}, 1, probe)
    assert jsonpath("$.a[1]", {"a": [1, 2]}) == [2]


@pytest.mark.parametrize(("exp", "message"), [
    ({"title": "A plan without method is not a plan"}, "experiment requires a description"),
    ({"title": "t", "description": "d"}, "an experiment requires a method"),
    (_exp(method=[{"type": "action", "name": "x", "provider": {"type": "python", "module": "no.such.mod",
                                                               "func": "f"}}]), "could not find Python module"),
    (_exp(**{"steady-state-hypothesis": {"title": "h", "probes": [_py("p", "value", "probe", v=1)]}}),
     "must have a tolerance"),
    (_exp(**{"steady-state-hypothesis": {"title": "h", "probes": [
        {**_py("p", "value", "probe", v=1), "tolerance": {"type": "regex", "pattern": "(a"}}]}}), "tolerance.pattern"),
    (_exp(method=[{"ref": "nowhere"}]), "referenced activity 'nowhere' could not be found"),
    (_exp(runtime={"rollbacks": {"strategy": "sometimes"}}), "runtime.rollbacks.strategy"),
])
def test_invalid_experiments_are_refused_with_the_reason(exp: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError) as e:
        validate_experiment(exp)
    assert message in str(e.value)


def test_continuous_hypothesis_fail_fast(tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    exp = _exp(**{"steady-state-hypothesis": {"title": "h", "probes": [
        {"type": "probe", "name": "not-broken", "tolerance": False,
         "provider": {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": str(flag)}}}]}},
        method=[_py("break", "touch", path=str(flag)), _py("wait", "sleep_then", s=1.0, v=None)],
        runtime={"hypothesis": {"strategy": "continuously", "frequency": 0.2, "fail_fast": True}})
    journal = run_experiment(exp)
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    during = journal["steady_states"]["during"]
    assert during and during[-1]["steady_state_met"] is False
    assert journal["status"] == "failed"


def test_aborted_run_still_rolls_back(tmp_path: Path) -> None:
    marker = tmp_path / "rolled"
    exp = _exp(configuration={"wait": "soon"},
               method=[{**_py("odd-pause", "value", v=1), "pauses": {"before": "${wait}"}}],
               rollbacks=[_py("undo", "touch", path=str(marker))])
    journal = run_experiment(exp)
    assert journal["status"] == "aborted"
    assert marker.exists() and [r["status"] for r in journal["rollbacks"]] == ["succeeded"]


def test_sigterm_interrupts_the_cli_run_and_rolls_back(tmp_path: Path) -> None:
    import signal
    import time

    marker = tmp_path / "rolled"
    exp = _exp(method=[{"type": "action", "name": "long", "provider": {"type": "process", "path": "sleep",
                                                                       "arguments": ["30"]}}],
               rollbacks=[{"type": "action", "name": "undo", "provider": {"type": "process", "path": "touch",
                                                                          "arguments": [str(marker)]}}])
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    proc = subprocess.Popen([str(PITWALL), "chaos", "run", "exp.json"], cwd=tmp_path, stderr=subprocess.PIPE,
                            env={**os.environ, "PITWALL_URL": ""})
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the method runs
        if b"Action: long" in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(30) == 1
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    assert marker.exists() and [r["activity"]["name"] for r in journal["rollbacks"]] == ["undo"]
