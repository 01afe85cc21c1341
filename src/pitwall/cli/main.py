"""The ``pitwall`` command: one typer app, one module per command group."""

from __future__ import annotations

from typing import Any

import typer

from pitwall import __version__
from pitwall.cli import alerts as alerts_cmd
from pitwall.cli import backup as backup_cmd
from pitwall.cli import chaos as chaos_cmd
from pitwall.cli import config as config_cmd
from pitwall.cli import demo as demo_cmd
from pitwall.cli import importer as import_cmd
from pitwall.cli import incidents as incidents_cmd
from pitwall.cli import inventory as inventory_cmd
from pitwall.cli import kubeconfig as kubeconfig_cmd
from pitwall.cli import logs as logs_cmd
from pitwall.cli import pipelines as pipelines_cmd
from pitwall.cli import query as query_cmd
from pitwall.cli import releases as releases_cmd
from pitwall.cli import rules as rules_cmd
from pitwall.cli import server as server_cmd
from pitwall.cli import slo as slo_cmd
from pitwall.cli import status as status_cmd
from pitwall.cli import traces as traces_cmd

app = typer.Typer(help="pitwall: production support for microservices in one process.", no_args_is_help=True,
                  add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pitwall {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print pitwall's version and exit.",
                                       callback=_version, is_eager=True)) -> None:
    """pitwall: production support for microservices in one process."""


app.command("server", help="Run the pitwall server.")(server_cmd.server)
app.command("demo", help="Run pitwall with a live demo shop: 5 services, load, alerts.")(demo_cmd.demo)
app.command("status", help="What a server runs and what is failing (exit 1 when it is not ready).")(
    status_cmd.status)
app.command("targets", help="Scrape targets: health, last scrape, error.")(inventory_cmd.targets)
app.command("services", help="Services: Kubernetes Services with ready endpoints, and services seen in traces.")(
    inventory_cmd.services)
app.command("query", help="Run a PromQL query against a pitwall (or Prometheus) server.")(query_cmd.query)
app.add_typer(logs_cmd.app, name="logs")
app.add_typer(traces_cmd.app, name="traces")
app.add_typer(rules_cmd.app, name="rules")
app.add_typer(slo_cmd.app, name="slo")
app.command("alerts", help="List alerts (Alertmanager API v2).")(alerts_cmd.alerts)
app.add_typer(alerts_cmd.silence_app, name="silence")
app.add_typer(chaos_cmd.app, name="chaos")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(backup_cmd.restore_app, name="restore")
app.add_typer(import_cmd.app, name="import")
app.add_typer(pipelines_cmd.app, name="pipelines")
app.add_typer(releases_cmd.app, name="releases")
app.command("oncall", help="Who is on call (PagerDuty-compatible schedules and escalation policies).")(
    incidents_cmd.oncall)
app.add_typer(incidents_cmd.incident_app, name="incident")
app.add_typer(config_cmd.app, name="config")
app.command("kubeconfig", help="Print (or merge into ~/.kube/config) a kubectl context for this server.")(
    kubeconfig_cmd.kubeconfig)


def _hide_flag_types(cmd: Any) -> None:
    """Flags take no value: show ``--range``, not ``--range <bool>``, in every command's help (duck-typed:
    typer builds its commands on its own copy of click)."""
    for p in cmd.params:
        if getattr(p, "is_flag", False):
            p.metavar = ""
    help_option = cmd.get_help_option

    def quiet_help_option(ctx: Any) -> Any:
        opt = help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = quiet_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _hide_flag_types(sub)


def main() -> None:
    cmd = typer.main.get_command(app)
    _hide_flag_types(cmd)
    cmd()


if __name__ == "__main__":
    main()
