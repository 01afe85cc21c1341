"""One way to print what a listing command found: aligned columns, ``-o wide``, JSON or YAML.

Columns are kubectl-style plain text, never truncated, so they read the same
in a terminal and through a pipe (full ids, no ``…``); numbers are rounded
for reading, JSON and YAML keep them exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

__all__ = ["Column", "OutputOpt", "ago", "emit"]

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table, wide, json or yaml.")]
Column = tuple[str, str]  # (HEADER, key in the row)
_FORMATS = ("table", "wide", "json", "yaml")


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[Column], output: str, *,
         wide: Sequence[Column] = (), raw: Any = None, empty: str = "nothing found") -> None:
    """Print ``rows`` as ``output`` asks; JSON/YAML print ``raw`` (the API's own objects) when given."""
    if output not in _FORMATS:
        typer.echo(f"pitwall: --output must be one of {', '.join(_FORMATS)}, not {output!r}", err=True)
        raise typer.Exit(2)
    data = list(rows) if raw is None else raw
    if output == "json":
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    if output == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
        return
    if not rows:
        typer.echo(empty, err=True)
        return
    cols = [*columns, *(wide if output == "wide" else ())]
    cells = [[h for h, _ in cols]] + [[_cell(r.get(k)) for _, k in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    for line in cells:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ",".join(_cell(x) for x in v) or "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items()) or "-"
    return str(v)


def ago(iso: str | None, now: float | None = None) -> str:
    """kubectl's short age (``42s``, ``5m``, ``3h``, ``2d``) since an RFC 3339 time; ``-`` when unknown."""
    import time
    from datetime import datetime

    from pitwall.core.durations import short_age

    if not iso or iso.startswith("0001-"):
        return "-"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return iso
    return short_age((now if now is not None else time.time()) - t)
