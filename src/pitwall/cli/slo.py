"""``pitwall slo generate|validate``: Sloth's ``generate`` and ``validate`` on SLO spec files, offline.

``generate`` prints the Prometheus rule file (or, for a Kubernetes
``PrometheusServiceLevel``, the PrometheusRule) that Sloth would write;
``validate`` checks every spec below a path, as ``sloth validate`` does;
``status`` asks a server's error budget API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail
from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import PitwallError

if TYPE_CHECKING:
    from pitwall.slo.generate import GenerateOptions

app = typer.Typer(help="SLOs as Sloth generates them (Sloth prometheus/v1, PrometheusServiceLevel, OpenSLO).",
                  no_args_is_help=True)

Period = Annotated[str, typer.Option("--default-slo-period", help="Period of SLOs that do not set one.")]
WindowsPath = Annotated[str, typer.Option("--slo-period-windows-path",
                                          help="Directory of AlertWindows files replacing the 28d/30d catalog.")]


def _options(extra_labels: list[str], period: str, windows: str, strict: bool, *, disable_alerts: bool = False,
             disable_recordings: bool = False) -> tuple[GenerateOptions, int]:
    # the offline generator loads here, when a command runs: the CLI starts without its regex engine (RE2/Arrow)
    from pitwall.slo.generate import GenerateOptions
    from pitwall.slo.windows import WindowsCatalog

    labels = {}
    for kv in extra_labels:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"{kv!r}: want key=value", param_hint="--extra-labels")
        labels[k] = v
    try:
        period_ms = parse_duration_ms(period)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--default-slo-period") from None
    catalog = WindowsCatalog.from_dir(windows, strict=strict) if windows else WindowsCatalog(strict=strict)
    catalog.get(period_ms)  # an unsupported default period fails before any file is read (as Sloth)
    return GenerateOptions(extra_labels=labels, windows=catalog, disable_alerts=disable_alerts,
                           disable_recordings=disable_recordings), period_ms


@app.command("generate", help="Print the Prometheus rules generated from SLO spec files.")
def generate(
    files: Annotated[list[Path], typer.Argument(help="Spec files (several documents each allowed).")],
    extra_labels: Annotated[list[str], typer.Option("--extra-labels", "-l", help="key=value on every rule.")] = [],  # noqa: B006
    disable_alerts: Annotated[bool, typer.Option("--disable-alerts", help="No alerting rules.")] = False,
    disable_recordings: Annotated[bool, typer.Option("--disable-recordings", help="No recording rules.")] = False,
    period: Period = "30d",
    windows: WindowsPath = "",
    strict_periods: Annotated[bool, typer.Option(
        "--strict-periods", help="Refuse a period with no windows (Sloth) instead of scaling 30d's.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    try:
        opts, period_ms = _options(extra_labels, period, windows, strict_periods, disable_alerts=disable_alerts,
                                   disable_recordings=disable_recordings)
        notes: list[str] = []
        from pitwall.slo.files import generate_files

        text = generate_files(files, opts, period_ms, notes)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    except (PitwallError, ValueError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        raise typer.Exit(1) from None
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


@app.command("validate", help="Validate every SLO spec below a path (exit 1 on any problem).")
def validate(
    path: Annotated[Path, typer.Option("--input", "-i", help="A spec file or a directory searched recursively.")],
    include: Annotated[str, typer.Option("--fs-include", "-n", help="Only paths matching this regex.")] = "",
    exclude: Annotated[str, typer.Option("--fs-exclude", "-e", help="Skip paths matching this regex.")] = "",
    ignore_duplicates: Annotated[bool, typer.Option("--ignore-slo-duplicates",
                                                    help="Allow one SLO id in several files.")] = False,
    period: Period = "30d",
    windows: WindowsPath = "",
) -> None:
    try:
        from pitwall.slo.files import discover, validate_paths

        opts, period_ms = _options([], period, windows, False)
        files = discover(path, include, exclude)
    except (PitwallError, ValueError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        raise typer.Exit(1) from None
    if not files:
        print("error: 0 slo specs have been discovered", file=sys.stderr)
        raise typer.Exit(1)
    failed = False
    for v in validate_paths(files, opts, period_ms, ignore_duplicates=ignore_duplicates):
        for problem in v.errors:
            failed = True
            print(f"{v.file}: {problem}", file=sys.stderr)
    if failed:
        print("validation failed", file=sys.stderr)
        raise typer.Exit(1)
    print(f"Validation succeeded: {len(files)} files")


def _pct(x: object) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{100 * x:.2f}%"


def _num(x: object) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:.3g}"


@app.command("status", help="Error budgets from a server: every SLO, or one with its arithmetic.")
def status(
    name: Annotated[str | None, typer.Argument(help="An SLO's sloth_id (<service>-<slo>).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    path = "/api/slo/v1/slos" + (f"/{name}" if name else "")
    resp = call("pitwall", "GET", server, path, token=token, timeout=60)
    if resp.status_code >= 400:
        fail("pitwall", f"HTTP {resp.status_code}: {resp.text.strip()}")
    body = resp.json()
    if output == "json":
        print(json.dumps(body, indent=2))
        return
    slos = [body] if name else body["slos"]
    table = Table("SLO", "OBJECTIVE", "PERIOD", "BUDGET LEFT", "BURN NOW", "BURN PERIOD", "BREACHING")
    for s in slos:
        table.add_row(s["name"], _pct(s["objective"]), s["period"], _pct(s["budget_remaining"]),
                      _num(s["burn_rate_now"]), _num(s["burn_rate_period"]), "yes" if s["breaching"] else "no")
    console = Console(width=140)
    console.print(table)
    if name:
        for line in [*body["arithmetic"], *[f"note: {n}" for n in body.get("notes", [])]]:
            console.print(line, highlight=False)
