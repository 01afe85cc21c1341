"""The ``pitwall`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from pitwall.cli import query as query_cmd
from pitwall.cli import server as server_cmd

app = typer.Typer(help="pitwall: production support for microservices in one process.", no_args_is_help=True,
                  add_completion=False)
app.command("server", help="Run the pitwall server.")(server_cmd.server)
app.command("demo", help="Run the server with demo settings (the demo system comes later).")(server_cmd.demo)
app.command("query", help="Run a PromQL query against a pitwall (or Prometheus) server.")(query_cmd.query)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
