"""``pitwall demo``: a live shop of five instrumented services feeding a pitwall server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pitwall.core.listen import split_listen

__all__ = ["demo"]


def demo(
    duration: Annotated[float, typer.Option("--duration", min=0, help="Stop after SECONDS (0 = until Ctrl-C).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same traffic and luck.")] = 1,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT of the pitwall server.")] = "127.0.0.1:9900",
    day: Annotated[float, typer.Option("--day", min=10, help="Seconds per simulated shop day.")] = 300,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Keep config, data and child logs here (default: a temporary dir, removed at exit).",
    )] = None,
) -> None:
    """Run pitwall with a demo shop: 5 services, a load generator, alerts. Data shows within a minute."""
    from pitwall.demo.runner import DemoOptions, run_demo

    try:
        host, _port = split_listen(listen)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise typer.BadParameter("the demo listens on loopback only (e.g. 127.0.0.1:9900)", param_hint="--listen")
    opts = DemoOptions(listen=listen, duration_s=duration, seed=seed, day_s=day, work_dir=work_dir)
    raise typer.Exit(run_demo(opts, echo=typer.echo))
