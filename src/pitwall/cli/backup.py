"""``pitwall backup self`` (ask the running server for a consistent snapshot into a restic repository),
``pitwall backup check`` (verify a repository), ``pitwall restore self`` (a data directory back, offline) and
``pitwall backup list|describe|logs`` (Velero Backups on the server, as ``velero backup get|describe|logs``).

The repository password is taken as restic takes it: ``RESTIC_PASSWORD`` or ``RESTIC_PASSWORD_FILE``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from pitwall.backup import Restic, ResticError, password_from_env
from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail, headers
from pitwall.cli._output import OutputOpt, ago, emit
from pitwall.cli._progress import ProgressLine, bar, human_bytes

app = typer.Typer(help="Backups into restic repositories: this server's own data, repository checks.",
                  no_args_is_help=True)
restore_app = typer.Typer(help="Restore from restic repositories.", no_args_is_help=True)

_URL_LIKE = re.compile(r"^[a-z0-9]+:")  # sftp:, rest:, s3:, b2:, ... (restic's backends); a path otherwise

ProgressOpt = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="A progress bar on stderr (default: when stderr is a terminal).",
    show_default=False)]


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
    progress: ProgressOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Snapshot the running server's whole data directory into a restic repository."""
    body = {"repository": _repo(to), "password": _password("pitwall backup")}
    resp = _with_progress(ProgressLine(progress), server, token, body["repository"], lambda: call(
        "pitwall backup", "POST", server, "/api/backup/v1/self", token=token, timeout=6 * 3600, json=body))
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


_STEPS = {"copy": "copying the data directory", "checksums": "writing checksums", "upload": "uploading"}


def _with_progress(line: ProgressLine, server: str, token: str | None, repo: str,
                   request: Callable[[], httpx.Response]) -> httpx.Response:
    """Run the (blocking) backup request while drawing the server's progress of it (its in-progress run of
    ``repo`` in ``GET /api/backup/v1/self/runs``, polled twice a second)."""
    if not line.enabled:
        return request()
    result: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: result.append(request()), daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        run = _running(server, token, repo)
        if run is not None:
            total, done = int(run.get("total_bytes") or 0), int(run.get("bytes_done") or 0)
            step = str(run.get("step") or "")
            detail = f"{human_bytes(done)} of {human_bytes(total)}" if step == "upload" and total else ""
            line.show(bar(float(run.get("percent_done") or 0.0) if step == "upload" else None,
                          _STEPS.get(step, step or "starting"), detail))
    line.done()
    if not result:  # the request thread ended the command (an unreachable server)
        raise typer.Exit(1)
    return result[0]


def _running(server: str, token: str | None, repo: str) -> dict[str, Any] | None:
    try:
        resp = httpx.get(server.rstrip("/") + "/api/backup/v1/self/runs", headers=headers(token), timeout=5)
        runs = resp.json().get("runs") or [] if resp.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    mine = [r for r in runs if isinstance(r, dict) and r.get("repository") == repo and r.get("phase") == "InProgress"]
    return mine[-1] if mine else None


@app.command("check")
def check(
    repo: Annotated[str, typer.Option("--repo", help="restic repository (path or URL).")],
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every pack file.")] = False,
    on_server: Annotated[bool, typer.Option(
        "--on-server", help="Let the server run the check and record pitwall_backup_repository_check_success "
                            "(the repository as the server sees it).")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Verify a repository as ``restic check`` does; exit 1 when it is damaged."""
    if on_server:
        body = {"repository": _repo(repo), "password": _password("pitwall backup check"), "readData": read_data}
        resp = call("pitwall backup check", "POST", server, "/api/backup/v1/check", token=token, timeout=6 * 3600,
                    json=body)
        if resp.status_code != 200:
            fail("pitwall backup check", f"HTTP {resp.status_code}: {resp.text.strip()[:500]}")
        doc = resp.json()
        if not doc["ok"]:
            fail("pitwall backup check", str(doc.get("error")))
        typer.echo(str(doc.get("report", "")))
        return
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
    progress: ProgressOpt = None,
) -> None:
    """Restore a self-backup into an empty data directory (offline: then start ``pitwall server`` on it)."""
    # here: it imports the stores, which the CLI starts without
    from pitwall.backup import RestoreError, restore_self

    restic = Restic(_repo(from_), _password("pitwall restore"))
    line = ProgressLine(progress)

    def show(done: int, total: int, files: int, all_files: int) -> None:
        line.show(bar(done / total if total else None, "restoring",
                      f"{human_bytes(done)} of {human_bytes(total)}, {files} of {all_files} files"))

    try:
        got = asyncio.run(restore_self(restic, data_dir, snapshot, on_progress=show if line.enabled else None))
    except (ResticError, RestoreError) as e:
        line.done()
        fail("pitwall restore", str(getattr(e, "message", e)))
    line.done()
    snap, manifest = got["snapshot"], got["manifest"]
    typer.echo(f"restored snapshot {snap['short_id']} ({snap['time']}) into {data_dir}: "
               f"{manifest.get('files')} files, {manifest.get('bytes')} bytes; "
               f"start it with: pitwall server --data-dir {data_dir}")


# Velero's `velero backup get|describe|logs`, over the server's /api/backup/v1/backups.

NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="The Backup's namespace.")]


def _get(prog: str, server: str, path: str, token: str | None, **params: str) -> dict[str, Any]:
    resp = call(prog, "GET", server, path, token=token, timeout=60, params=params or None)
    if resp.status_code >= 400:
        try:
            msg = resp.json().get("error") or resp.text
        except ValueError:
            msg = resp.text
        fail(prog, f"HTTP {resp.status_code}: {str(msg).strip()[:500]}")
    doc: dict[str, Any] = resp.json()
    return doc


def _until(iso: str | None) -> str:
    """Velero's EXPIRES column: how long until ``iso`` (``-`` when unknown or past)."""
    from pitwall.core.durations import short_age

    if not iso:
        return "-"
    try:
        left = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - time.time()
    except ValueError:
        return iso
    return short_age(left) if left > 0 else "expired"


def _row(b: dict[str, Any]) -> dict[str, Any]:
    m, spec, st = b["metadata"], b.get("spec") or {}, b.get("status") or {}
    sel = (spec.get("labelSelector") or {}).get("matchLabels") or {}
    stats = json.loads((m.get("annotations") or {}).get("backup.pitwall.dev/stats") or "{}")
    return {"namespace": m.get("namespace"), "name": m.get("name"), "status": st.get("phase") or "New",
            "errors": st.get("errors", 0), "warnings": st.get("warnings", 0),
            "created": st.get("startTimestamp") or m.get("creationTimestamp"), "expires": _until(st.get("expiration")),
            "location": spec.get("storageLocation") or (m.get("labels") or {}).get("velero.io/storage-location"),
            "selector": ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
            "schedule": (m.get("labels") or {}).get("velero.io/schedule-name"),
            "snapshots": json.loads((m.get("annotations") or {}).get("backup.pitwall.dev/snapshots") or "{}"),
            "size": _mib(stats.get("bytes")), "added": _mib(stats.get("bytesAdded")),
            "duration": f"{stats['durationSeconds']:.1f}s" if "durationSeconds" in stats else None,
            "age": ago(m.get("creationTimestamp"))}


def _mib(n: Any) -> str | None:
    return None if n is None else f"{int(n) / (1 << 20):.2f}MiB"


@app.command("list")
def list_backups(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Only this namespace (default all).")] = "",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Velero Backups, newest first (as ``velero backup get``)."""
    items = _get("pitwall backup list", server, "/api/backup/v1/backups", token,
                 **({"namespace": namespace} if namespace else {}))["items"]
    emit([_row(b) for b in items],
         [("NAMESPACE", "namespace"), ("NAME", "name"), ("STATUS", "status"), ("ERRORS", "errors"),
          ("WARNINGS", "warnings"), ("CREATED", "created"), ("EXPIRES", "expires"),
          ("STORAGE LOCATION", "location"), ("SELECTOR", "selector")],
         output, wide=[("SIZE", "size"), ("ADDED", "added"), ("DURATION", "duration"), ("SCHEDULE", "schedule"),
               ("SNAPSHOTS", "snapshots"), ("AGE", "age")], raw=items,
         empty="no backups found")


def _list_field(v: Any) -> str:
    return ", ".join(str(x) for x in v) if v else "<none>"


def _describe_text(doc: dict[str, Any]) -> list[str]:
    b = doc["backup"]
    m, spec, st = b["metadata"], b.get("spec") or {}, b.get("status") or {}
    prog = st.get("progress") or {}
    lines = [f"Name:         {m['name']}", f"Namespace:    {m['namespace']}",
             f"Labels:       {_list_field([f'{k}={v}' for k, v in (m.get('labels') or {}).items()])}", "",
             f"Phase:  {st.get('phase') or 'New'}", ""]
    if st.get("failureReason"):
        lines += [f"Failure reason:  {st['failureReason']}", ""]
    lines += [f"Errors:    {st.get('errors', 0)}", f"Warnings:  {st.get('warnings', 0)}", "", "Namespaces:",
              f"  Included:  {_list_field(spec.get('includedNamespaces') or ['*'])}",
              f"  Excluded:  {_list_field(spec.get('excludedNamespaces'))}", "", "Resources:",
              f"  Included:        {_list_field(spec.get('includedResources') or ['*'])}",
              f"  Excluded:        {_list_field(spec.get('excludedResources'))}", "",
              f"Label selector:  {json.dumps(spec['labelSelector']) if spec.get('labelSelector') else '<none>'}",
              "", f"Storage Location:  {spec.get('storageLocation') or 'default'}", "",
              f"TTL:  {spec.get('ttl') or '720h0m0s'}", "",
              f"Started:    {st.get('startTimestamp') or '<n/a>'}",
              f"Completed:  {st.get('completionTimestamp') or '<n/a>'}", "",
              f"Expiration:  {st.get('expiration') or '<n/a>'}", "",
              f"Total items to be backed up:  {prog.get('totalItems', 0)}",
              f"Items backed up:              {prog.get('itemsBackedUp', 0)}", ""]
    stats = json.loads((m.get("annotations") or {}).get("backup.pitwall.dev/stats") or "{}")
    if stats:
        lines += [f"Size:         {stats.get('bytes', 0)} bytes (restic's total bytes processed)",
                  f"Bytes added:  {stats.get('bytesAdded', 0)} (deduplicated)",
                  f"Duration:     {stats.get('durationSeconds', 0)}s", ""]
    lines += ["Restic snapshots:"]
    snaps = json.loads((m.get("annotations") or {}).get("backup.pitwall.dev/snapshots") or "{}")
    lines += [f"  {ns}:  {snap}" for ns, snap in sorted(snaps.items())] or ["  <none>"]
    lines += ["", "Restores:"]
    lines += [f"  {r['metadata']['name']}  ({(r.get('status') or {}).get('phase') or 'New'})"
              for r in doc.get("restores") or []] or ["  <none>"]
    lines += ["", "Restore drills:"]
    for d in doc.get("drills") or []:
        ds = d.get("status") or {}
        lines.append(f"  {d['metadata']['name']}:  {ds.get('lastResult') or 'not run'}, RTO "
                     f"{ds.get('durationSeconds', '-')}s, RPO {ds.get('dataAgeSeconds', '-')}s, last run "
                     f"{ds.get('lastRunTime') or '-'}" + (f": {ds['message']}" if ds.get("message") else ""))
    if not doc.get("drills"):
        lines.append("  <none>")
    lines += ["", "Events:"]
    lines += [f"  {e.get('type', '')}  {e.get('reason', '')}  {ago(e.get('lastTimestamp'))}  {e.get('message', '')}"
              for e in doc.get("events") or []] or ["  <none>"]
    return lines


@app.command("describe")
def describe_backup(
    name: Annotated[str, typer.Argument(help="The Backup's name.")],
    namespace: NamespaceOpt = "velero",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    output: OutputOpt = "table",
) -> None:
    """One Backup: its spec, phase, snapshots, restores, restore drills and Events (``velero backup describe``)."""
    doc = _get("pitwall backup describe", server, f"/api/backup/v1/backups/{namespace}/{name}", token)
    if output in ("json", "yaml"):
        emit([], [], output, raw=doc)
        return
    if output not in ("table", "wide"):
        emit([], [], output)  # the renderer's own error for an unknown format
    typer.echo("\n".join(_describe_text(doc)))


@app.command("logs")
def backup_logs(
    name: Annotated[str, typer.Argument(help="The Backup's name.")],
    namespace: NamespaceOpt = "velero",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """What the controller recorded while running the Backup, oldest first (``velero backup logs``)."""
    doc = _get("pitwall backup logs", server, f"/api/backup/v1/backups/{namespace}/{name}/logs", token)
    for line in doc["lines"]:
        typer.echo(line)
