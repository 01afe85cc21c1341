"""``pitwall import metrics``: backfill history from a timestamped exposition file into a running server.

promtool's ``tsdb create-blocks-from openmetrics`` writes blocks offline;
this sends the same input over Prometheus remote write 1.0 instead, so the
server needs no restart and no copied directories. The work is in
``cli/_backfill.py``, imported when the command runs (it needs numpy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, fail, headers
from pitwall.cli._progress import ProgressLine, bar, human_bytes

if TYPE_CHECKING:
    from pitwall.cli._backfill import Reader, Stats

PROG = "pitwall import metrics"

app = typer.Typer(help="Import history into a pitwall server (backfill).", no_args_is_help=True)


@app.command("metrics")
def metrics(
    file: Annotated[str, typer.Argument(help="OpenMetrics (ends '# EOF', timestamps in seconds) or Prometheus text "
                                             "(timestamps in ms); '-' is stdin; '.gz' is decompressed.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=1_000_000,
                                       help="Samples per remote-write request.")] = 10_000,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="A progress bar on stderr (default: when stderr is a terminal).",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Parse and report; send nothing.")] = False,
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="K=V", help="Set on every series (repeatable; replaces a label of that name).")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="auto|openmetrics|text", help="auto: OpenMetrics when the input ends with "
                                                      "'# EOF', else text; stdin: OpenMetrics.")] = "auto",
) -> None:
    """Send every sample of FILE (each must carry a timestamp) to the server's /api/v1/write."""
    from pitwall.cli import _backfill as bf

    if fmt not in ("auto", "openmetrics", "text"):
        fail(PROG, f"--format must be auto, openmetrics or text, not {fmt!r}", 2)
    try:
        extra = bf.parse_labels(label or [])
        kind: bf.Format = bf.detect_format(file) if fmt == "auto" else fmt  # type: ignore[assignment]
        reader = bf.Reader(file)
    except bf.BackfillError as e:
        fail(PROG, str(e), 2)
    except OSError as e:
        fail(PROG, f"cannot read {file}: {e.strerror or e}", 2)
    line = ProgressLine(progress)
    started = time.monotonic()
    imp = bf.Importer(kind, url=server, headers=headers(token, tenant), batch=batch, extra=extra, dry_run=dry_run,
                      on_progress=_drawer(line, reader, started, dry_run))
    try:
        imp.run(reader)
    except bf.BackfillError as e:
        line.done()
        hint = ""
        if fmt == "auto" and kind == "text" and "invalid timestamp" in str(e):
            hint = " (read as Prometheus text, timestamps in ms, as the input does not end with '# EOF')"
        fail(PROG, str(e) + hint)
    except OSError as e:
        line.done()
        fail(PROG, f"cannot read {file}: {e}")
    finally:
        reader.close()
    line.done()
    typer.echo(summary(imp.stats, time.monotonic() - started, dry_run))
    if imp.stats.refused:
        typer.echo(f"{PROG}: {imp.stats.refused} samples refused; first: {imp.stats.first_refusal}", err=True)
        raise typer.Exit(1)


def _drawer(line: ProgressLine, reader: Reader, started: float, dry_run: bool) -> Callable[[Stats], None]:
    last = [0.0]

    def draw(stats: Stats) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2:
            return
        last[0] = now
        done = reader.bytes_read
        fraction = done / reader.size if reader.size else None
        size = f"/{human_bytes(reader.size)}" if reader.size is not None else ""
        rate = stats.samples_read / max(now - started, 1e-9)
        sent = "checked" if dry_run else "sent"
        line.show(bar(fraction, f"{human_bytes(done)}{size}",
                      f"{stats.samples_read:,} samples of {len(stats.series):,} series read, "
                      f"{stats.samples_sent:,} {sent}, {rate:,.0f} samples/s"))

    return draw


def _rfc3339(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(stats: Stats, seconds: float, dry_run: bool) -> str:
    """The one result line on stdout."""
    verb = "parsed (dry run, nothing sent)" if dry_run else "imported"
    return (f"{verb}: {len(stats.series)} series, {stats.samples_sent} samples, "
            f"{_rfc3339(stats.min_ts)} .. {_rfc3339(stats.max_ts)}, {stats.refused} refused, {seconds:.1f}s")
