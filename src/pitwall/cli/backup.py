"""``pitwall backup self`` (ask the running server for a consistent snapshot into a restic repository),
``pitwall backup check`` (verify a repository) and ``pitwall restore self`` (a data directory back, offline).

The repository password is taken as restic takes it: ``RESTIC_PASSWORD`` or ``RESTIC_PASSWORD_FILE``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated

import typer

from pitwall.backup import Restic, ResticError, RestoreError, password_from_env, restore_self
from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

app = typer.Typer(help="Backups into restic repositories: this server's own data, repository checks.",
                  no_args_is_help=True)
restore_app = typer.Typer(help="Restore from restic repositories.", no_args_is_help=True)

_URL_LIKE = re.compile(r"^[a-z0-9]+:")  # sftp:, rest:, s3:, b2:, ... (restic's backends); a path otherwise


def _password(prog: str) -> str:
    try:
        pw = password_from_env()
    except OSError as e:
        fail(prog, f"RESTIC_PASSWORD_FILE: {e}", 2)
    if not pw:
        fail(prog, "no repository password: set RESTIC_PASSWORD or RESTIC_PASSWORD_FILE", 2)
    return pw


def _repo(repo: str) -> str:
    """A local path made absolute (the server resolves it, not this shell); URLs as given."""
    return repo if _URL_LIKE.match(repo) else str(Path(repo).expanduser().resolve())


@app.command("self")
def backup_self(
    to: Annotated[str, typer.Option("--to", help="restic repository (path or URL); created if absent.")],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Snapshot the running server's whole data directory into a restic repository."""
    body = {"repository": _repo(to), "password": _password("pitwall backup")}
    resp = call("pitwall backup", "POST", server, "/api/backup/v1/self", token=token, timeout=6 * 3600, json=body)
    try:
        run = resp.json()
    except ValueError:
        fail("pitwall backup", f"HTTP {resp.status_code}: {resp.text.strip()[:500]}")
    if not isinstance(run, dict) or "phase" not in run:
        fail("pitwall backup", f"HTTP {resp.status_code}: {resp.text.strip()[:500]}")
    if output == "json":
        typer.echo(json.dumps(run, indent=2))
    if run["phase"] != "Completed":
        fail("pitwall backup", f"backup failed ({run.get('reason')}): {run.get('error')}")
    if output != "json":
        s = run.get("summary") or {}
        typer.echo(f"snapshot {run['snapshot_id']} saved to {run['repository']}: {run['files']} files, "
                   f"{run['bytes']} bytes copied, {s.get('data_added', 0)} bytes added, "
                   f"{run['duration_s']:.1f}s")
        for w in run.get("warnings") or []:
            typer.echo(f"warning: {w}", err=True)


@app.command("check")
def check(
    repo: Annotated[str, typer.Option("--repo", help="restic repository (path or URL).")],
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every pack file.")] = False,
) -> None:
    """Verify a repository as ``restic check`` does; exit 1 when it is damaged."""
    restic = Restic(_repo(repo), _password("pitwall backup check"))
    try:
        report = asyncio.run(restic.check(read_data=read_data))
    except ResticError as e:
        fail("pitwall backup check", e.message)
    typer.echo(report.strip())


@restore_app.command("self")
def restore_self_cmd(
    from_: Annotated[str, typer.Option("--from", help="restic repository (path or URL).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="An empty directory for a server to start on.")],
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot id (default: the latest "
                                                                       "self-backup).")] = None,
) -> None:
    """Restore a self-backup into an empty data directory (offline: then start ``pitwall server`` on it)."""
    restic = Restic(_repo(from_), _password("pitwall restore"))
    try:
        got = asyncio.run(restore_self(restic, data_dir, snapshot))
    except (ResticError, RestoreError) as e:
        fail("pitwall restore", str(getattr(e, "message", e)))
    snap, manifest = got["snapshot"], got["manifest"]
    typer.echo(f"restored snapshot {snap['short_id']} ({snap['time']}) into {data_dir}: "
               f"{manifest.get('files')} files, {manifest.get('bytes')} bytes; "
               f"start it with: pitwall server --data-dir {data_dir}")
