"""``pitwall server``: the options here, the work in ``cli/serve.py`` (imported when the command runs, so
``pitwall --help`` and the other commands do not pay for the server's imports)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.", exists=False)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: ./pitwall-data).")]
ListenOpt = Annotated[str | None, typer.Option("--listen", help="HOST:PORT to serve on (default: 127.0.0.1:9900).")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback listen address without auth.")]
RetentionOpt = Annotated[str | None, typer.Option("--retention", help="How long samples are kept (default: 15d).")]

# Start-up makes ~200k objects that live as long as the process, and the collector's default thresholds walk
# them again and again meanwhile (5 full and ~50 middle collections: ~0.3 s of a ~2.5 s start, measured).
# Young collections every 10,000 allocations still free start-up's short-lived cycles (10 objects left
# against 2,834 with the collector off); ``serve._Server.startup`` puts the thresholds back, then freezes.
STARTUP_GC_THRESHOLD = (10_000, 1_000, 1_000_000)


def server(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    listen: ListenOpt = None,
    insecure: InsecureOpt = False,
    retention: RetentionOpt = None,
) -> None:
    threshold = gc.get_threshold()
    gc.set_threshold(*STARTUP_GC_THRESHOLD)  # before the server's imports: they are most of start-up
    from pitwall.cli.serve import run, settings_from

    run(settings_from(config, data_dir, listen, insecure, retention), gc_threshold=threshold)
