"""``pitwall rules check|test``: promtool's ``check rules`` and ``test rules``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(help="Validate and unit-test Prometheus rule files (like promtool).", no_args_is_help=True)

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


@app.command("test", help="Run promtool-format unit tests for rules.")
def test(files: Files) -> None:
    from pitwall.alerting.rules.unittest import run_test_files

    raise typer.Exit(run_test_files(files, sys.stdout, sys.stderr))
