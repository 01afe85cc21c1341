"""``pitwall rules check|test|list``: promtool's ``check rules`` and ``test rules``, and a server's rules live."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail
from pitwall.cli._output import OutputOpt, ago, emit

app = typer.Typer(help="Rules: check and unit-test rule files (like promtool), list a server's rules.",
                  no_args_is_help=True)

Files = Annotated[list[str], typer.Argument(help="Rule files (check) or unit test files (test).")]


def check_files(files: list[str]) -> int:
    """promtool's ``check rules`` output; returns the exit code."""
    from pitwall.alerting.rules.manager import promql_check
    from pitwall.alerting.rules.rulefmt import parse_rule_file

    failed = False
    for f in files:
        print(f"Checking {f}")
        groups, errs = parse_rule_file(f, promql_check)
        if errs:
            print("  FAILED:", file=sys.stderr)
            for e in errs:
                print(e, file=sys.stderr)
            print()
            failed = True
            continue
        n = sum(len(g.rules) for g in groups)
        print(f"  SUCCESS: {n} rules found")
        print()
    return 1 if failed else 0


@app.command("check", help="Check rule files for syntax and validity.")
def check(files: Files) -> None:
    raise typer.Exit(check_files(files))


@app.command("list", help="Rules loaded by a server with their live state (as Prometheus' /rules page).")
def list_(
    type_: Annotated[str, typer.Option("--type", help="alert, record or any.")] = "any",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    output: OutputOpt = "table",
) -> None:
    params = {"type": type_} if type_ in ("alert", "record") else None
    r = call("pitwall", "GET", server, "/api/v1/rules", token=token, tenant=tenant, timeout=30, params=params)
    if r.status_code >= 400:
        fail("pitwall", f"/api/v1/rules: HTTP {r.status_code}: {r.text.strip()[:300]}")
    groups = r.json().get("data", {}).get("groups", [])
    rows = [{"group": g.get("name"), "rule": rule.get("name"), "type": rule.get("type"),
             "state": rule.get("state") or ("ok" if rule.get("health") == "ok" else ""),
             "health": rule.get("health"), "active": len(rule.get("alerts") or []) if rule.get("type") == "alerting"
             else None, "last": ago(rule.get("lastEvaluation")), "expr": rule.get("query"), "file": g.get("file"),
             "error": rule.get("lastError")} for g in groups for rule in g.get("rules", [])]
    emit(rows, [("GROUP", "group"), ("RULE", "rule"), ("TYPE", "type"), ("STATE", "state"), ("HEALTH", "health"),
                ("ALERTS", "active"), ("LAST EVAL", "last"), ("ERROR", "error")], output,
         wide=[("EXPR", "expr"), ("FILE", "file")], raw=groups, empty="no rules loaded")


@app.command("test", help="Run promtool-format unit tests for rules.")
def test(files: Files) -> None:
    from pitwall.alerting.rules.unittest import run_test_files

    raise typer.Exit(run_test_files(files, sys.stdout, sys.stderr))
