"""The ``pitwall`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from pitwall.cli import alerts as alerts_cmd
from pitwall.cli import config as config_cmd
from pitwall.cli import demo as demo_cmd
from pitwall.cli import kubeconfig as kubeconfig_cmd
from pitwall.cli import logs as logs_cmd
from pitwall.cli import query as query_cmd
from pitwall.cli import rules as rules_cmd
from pitwall.cli import server as server_cmd
from pitwall.cli import traces as traces_cmd

app = typer.Typer(help="pitwall: production support for microservices in one process.", no_args_is_help=True,
                  add_completion=False)
app.command("server", help="Run the pitwall server.")(server_cmd.server)
app.command("demo", help="Run pitwall with a live demo shop: 5 services, load, alerts.")(demo_cmd.demo)
app.command("query", help="Run a PromQL query against a pitwall (or Prometheus) server.")(query_cmd.query)
app.add_typer(logs_cmd.app, name="logs")
app.add_typer(traces_cmd.app, name="traces")
app.add_typer(rules_cmd.app, name="rules")
app.command("alerts", help="List alerts (Alertmanager API v2).")(alerts_cmd.alerts)
app.add_typer(alerts_cmd.silence_app, name="silence")
app.add_typer(config_cmd.app, name="config")
app.command("kubeconfig", help="Print (or merge into ~/.kube/config) a kubectl context for this server.")(
    kubeconfig_cmd.kubeconfig)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
