"""``pitwall server``: the options here, the work in ``cli/serve.py`` (imported when the command runs, so
``pitwall --help`` and the other commands do not pay for the server's imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.", exists=False)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: ./pitwall-data).")]
ListenOpt = Annotated[str | None, typer.Option("--listen", help="HOST:PORT to serve on (default: 127.0.0.1:9900).")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback listen address without auth.")]
RetentionOpt = Annotated[str | None, typer.Option("--retention", help="How long samples are kept (default: 15d).")]


def server(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    listen: ListenOpt = None,
    insecure: InsecureOpt = False,
    retention: RetentionOpt = None,
) -> None:
    from pitwall.cli.serve import run, settings_from

    run(settings_from(config, data_dir, listen, insecure, retention))
