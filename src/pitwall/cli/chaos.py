"""``pitwall chaos run FILE`` (a Chaos Toolkit experiment, journal as Chaos Toolkit writes it) and
``pitwall chaos halt`` (pause every fault on the server)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail, headers

app = typer.Typer(help="Chaos engineering: run Chaos Toolkit experiments, halt every fault.", no_args_is_help=True)


def _vars(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail("pitwall chaos", f"--var {item!r}: expected KEY=VALUE", 2)
        out[k] = v
    return out


def _report(server: str, token: str | None, journal: dict[str, Any], file: Path) -> None:
    """Tell the server about the run (a change event); a server that cannot be reached is only a warning."""
    body = {"title": journal["experiment"].get("title", ""), "status": journal["status"],
            "deviated": journal["deviated"], "file": str(file), "start": journal.get("start"),
            "end": journal.get("end"), "rollbacks": [r["activity"].get("name") for r in journal.get("rollbacks") or []]}
    try:
        httpx.post(server.rstrip("/") + "/api/chaos/v1/runs", json=body, headers=headers(token), timeout=5)
    except httpx.HTTPError:
        typer.echo(f"pitwall chaos: warning: could not report the run to {server}", err=True)


def _resilience(journal: dict[str, Any], server: str, token: str | None, extra: dict[str, Any],
                wait_s: float) -> None:
    """The run's resilience report, as the ``pitwall.chaos.ctk`` control writes it (the control itself when
    the experiment declares it; else the same call here), printed; nothing for a run that names no pitwall
    target and started no pitwall fault."""
    from pitwall.chaos.ctk import attach_report
    from pitwall.chaos.runreport import extension_entry, fault_runs, render

    exp = journal.get("experiment") or {}
    entry = extension_entry(exp)
    if entry is None and not fault_runs(journal):
        return
    if entry is None or "report" not in entry:
        plain = {k: v for k, v in (exp.get("configuration") or {}).items() if not isinstance(v, dict)}
        cfg = {**plain, **extra}
        cfg["pitwall_url"] = cfg["pitwall_url"] if isinstance(cfg.get("pitwall_url"), str) else server
        cfg["pitwall_token"] = cfg.get("pitwall_token") or token
        entry = attach_report(journal, cfg, None, wait_s)
    report = entry.get("report")
    typer.echo(render(report) if report else f"Resilience report: none: {entry.get('report_note')}")


@app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="Experiment file (JSON or YAML).")],
    journal_path: Annotated[Path, typer.Option("--journal-path", help="Where to write the journal.")] =
        Path("./journal.json"),
    rollback_strategy: Annotated[str | None, typer.Option(
        "--rollback-strategy", help="default (always play them), always, never, deviated.")] = None,
    hypothesis_strategy: Annotated[str | None, typer.Option(
        "--hypothesis-strategy",
        help="default, before-method-only, after-method-only, during-method-only, continuously, skip.")] = None,
    hypothesis_frequency: Annotated[float, typer.Option("--hypothesis-frequency")] = 1.0,
    fail_fast: Annotated[bool, typer.Option("--fail-fast")] = False,
    var: Annotated[list[str] | None, typer.Option("--var", help="KEY=VALUE overriding a configuration entry.")] =
        None,
    var_file: Annotated[Path | None, typer.Option("--var-file", help="JSON/YAML with configuration and secrets "
                                                  "entries (as Chaos Toolkit's).")] = None,
    report: Annotated[bool | None, typer.Option(
        "--report/--no-report", help="Record the run as a change event on the server (default: when PITWALL_URL "
                                     "is set).")] = None,
    recovery_wait: Annotated[float, typer.Option(
        "--recovery-wait", help="Seconds to wait after the run for its resilience report to be final (the target "
                                "recovered, or the margin after the revert observed); 0 reports at once.")] = 180.0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Run a Chaos Toolkit experiment; exit 0 when it completed without deviating. A run that drives pitwall
    (a ``pitwall`` extension, or faults started through ``pitwall.chaos.ctk``) ends with its resilience report,
    in the journal and printed."""
    # here: the experiment runner imports YAML and the RE2/Arrow regex engine; the CLI starts without them
    from pitwall.chaos.experiment import ExperimentError, load_experiment, run_experiment

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s", stream=sys.stderr)
    try:
        exp = load_experiment(file)
        extra = load_experiment(var_file) if var_file is not None else None
        journal = run_experiment(exp, rollback_strategy=rollback_strategy, hypothesis_strategy=hypothesis_strategy,
                                 hypothesis_frequency=hypothesis_frequency, fail_fast=fail_fast,
                                 extra_vars=_vars(var or []), var_file=extra)
    except ExperimentError as e:
        fail("pitwall chaos", f"invalid experiment: {e}", 1)
    _resilience(journal, server, token, _vars(var or []), recovery_wait)
    journal_path.write_text(json.dumps(journal, indent=2, ensure_ascii=False, default=str))
    if report or (report is None and os.environ.get("PITWALL_URL")):
        _report(server, token, journal, file)
    if journal["status"] != "completed" or journal["deviated"]:
        raise typer.Exit(1)


@app.command("halt")
def halt(server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None) -> None:
    """Pause every chaos experiment and Schedule on the server: every fault is reverted."""
    resp = call("pitwall", "POST", server, "/api/chaos/v1/halt", token=token, timeout=30)
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {resp.text.strip()}")
    paused = resp.json().get("paused") or []
    typer.echo(f"halted: {len(paused)} experiment(s) paused")
    for p in paused:
        typer.echo(f"  {p}")
