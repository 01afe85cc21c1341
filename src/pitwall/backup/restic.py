"""Drives the ``restic`` binary: every repository pitwall writes is one the real restic reads.

pitwall never writes repository files itself; it runs restic with ``--json``,
parses what restic prints and turns restic's failures into ``ResticError``s
whose ``reason`` says which (wrong password, no repository, unreachable,
locked), so a caller can give a clear phase and message. The password goes
to restic in its environment (``RESTIC_PASSWORD``), never on a command line.
Captured output is bounded; every command has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BackupSummary", "Restic", "ResticError", "password_from_env"]

_MAX_OUTPUT = 16 << 20  # bytes of stdout kept per command (snapshot lists, ls)
_MAX_STDERR = 64 << 10
_DEFAULT_TIMEOUT_S = 3600.0


StatusHook = Callable[[dict[str, Any]], None]  # restic's JSON status message: percent_done, bytes_done...

class ResticError(Exception):
    """A restic command failed; ``reason`` is one of wrong-password, no-repository, unreachable, locked,
    timeout, missing-binary, failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class BackupSummary:
    """restic's ``summary`` message of one ``backup --json``."""

    snapshot_id: str
    data_added: int
    files_new: int
    files_changed: int
    files_unmodified: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float
    raw: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # what restic could not read (exit code 3: the snapshot is written without it)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> BackupSummary:
        return cls(snapshot_id=str(doc.get("snapshot_id", "")), data_added=int(doc.get("data_added", 0)),
                   files_new=int(doc.get("files_new", 0)), files_changed=int(doc.get("files_changed", 0)),
                   files_unmodified=int(doc.get("files_unmodified", 0)),
                   total_files_processed=int(doc.get("total_files_processed", 0)),
                   total_bytes_processed=int(doc.get("total_bytes_processed", 0)),
                   total_duration=float(doc.get("total_duration", 0.0)), raw=dict(doc))


def password_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The repository password as restic takes it: ``RESTIC_PASSWORD``, else ``RESTIC_PASSWORD_FILE``'s first
    line."""
    env = os.environ if env is None else env
    if env.get("RESTIC_PASSWORD"):
        return env["RESTIC_PASSWORD"]
    path = env.get("RESTIC_PASSWORD_FILE")
    if path:
        text = Path(path).read_text()
        return text.splitlines()[0] if text else ""
    return None


def _reason(stderr: str) -> str:
    s = stderr.lower()
    if "wrong password" in s:
        return "wrong-password"
    if "repository is already locked" in s or "unable to create lock" in s:
        return "locked"
    if any(m in s for m in ("connection refused", "no such host", "dial tcp", "i/o timeout", "network is unreachable",
                            "permission denied", "read-only file system", "no space left", "create repository at")):
        return "unreachable"
    if "unable to open config file" in s or "is there a repository" in s:
        return "no-repository"
    return "failed"


def _tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


class Restic:
    """One repository: ``repo`` as restic names it (a path, ``sftp:``, ``rest:``, ``s3:``...) and its password."""

    def __init__(self, repo: str, password: str, *, binary: str | None = None,
                 timeout_s: float = _DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None) -> None:
        if not repo:
            raise ResticError("failed", "no repository given")
        self.repo = repo
        self.password = password
        self.binary = binary or shutil.which("restic") or "restic"
        self.timeout_s = timeout_s
        self.env = dict(env or {})

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(self.env)
        env["RESTIC_PASSWORD"] = self.password
        env["RESTIC_REPOSITORY"] = self.repo
        return env

    async def run(self, *args: str, cwd: Path | None = None, timeout_s: float | None = None,
                  json_out: bool = True, on_status: StatusHook | None = None,
                  ok_codes: Sequence[int] = (0,)) -> tuple[str, str]:
        """Run ``restic [--json] ARGS``; its stdout and stderr, or ``ResticError`` on an exit code not in
        ``ok_codes``. ``on_status`` gets each of restic's JSON ``status`` messages as it prints them (twice a
        second), which are then left out of the returned stdout."""
        argv = [self.binary, *(["--json"] if json_out else []), *args]
        env = self._env()
        if on_status is not None:
            env["RESTIC_PROGRESS_FPS"] = "2"  # restic's status rate off a terminal is once a minute
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise ResticError("missing-binary", f"{self.binary} not found (install Debian's restic)") from None
        read_out = _read_bounded(proc.stdout, _MAX_OUTPUT) if on_status is None else \
            _read_lines(proc.stdout, _MAX_OUTPUT, on_status)
        reads = asyncio.gather(read_out, _read_bounded(proc.stderr, _MAX_STDERR))
        # cancelled with the caller (a server stopping mid-run): retrieved here, so asyncio logs nothing
        reads.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            out, err = await asyncio.wait_for(reads, timeout_s or self.timeout_s)
            await proc.wait()
        except (TimeoutError, asyncio.CancelledError) as e:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # restic removes its lock on SIGTERM
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 10)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            if isinstance(e, asyncio.CancelledError):
                raise
            raise ResticError("timeout", f"restic {args[0]} did not finish in {timeout_s or self.timeout_s:.0f}s") \
                from None
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if proc.returncode not in ok_codes:
            raise ResticError(_reason(stderr), f"restic {args[0]} exited {proc.returncode}: {_tail(stderr)}")
        return stdout, stderr

    async def exists(self) -> bool:
        """Whether a repository is there (and the password opens it: a wrong one raises)."""
        try:
            await self.run("cat", "config", timeout_s=120)
        except ResticError as e:
            if e.reason == "no-repository":
                return False
            raise
        return True

    async def init(self) -> None:
        await self.run("init", timeout_s=300, json_out=False)

    async def ensure(self) -> bool:
        """Create the repository if absent; True when this call created it."""
        if await self.exists():
            return False
        await self.init()
        return True

    async def backup(self, path: Path, *, tags: Sequence[str] = (), host: str = "pitwall",
                     excludes: Sequence[str] = (), ignore_ctime: bool = False,
                     ignore_inode: bool = False, on_status: StatusHook | None = None,
                     targets: Sequence[str] = (".",), partial_ok: bool = False) -> BackupSummary:
        """``restic backup TARGETS`` from inside ``path`` (by default ``.``: the snapshot's tree holds ``path``'s
        contents at its root; a relative target's leading ``..`` are dropped in the tree, so ``../x`` is ``/x``).
        ``ignore_ctime``/``ignore_inode``: a file is unchanged when its size and mtime (and inode) are, for a
        staging copy whose links or copies change ctime (and inode) but not content. ``partial_ok``: restic's
        exit code 3 (some files could not be read, e.g. removed while it ran; the snapshot is written without
        them) is a result whose ``errors`` name them, not a failure."""
        args = ["backup", *targets, "--host", host, *(["--ignore-ctime"] if ignore_ctime else []),
                *(["--ignore-inode"] if ignore_inode else [])]
        for t in tags:
            args += ["--tag", t]
        for x in excludes:
            args += ["--exclude", x]
        stdout, stderr = await self.run(*args, cwd=path, on_status=on_status,
                                        ok_codes=(0, 3) if partial_ok else (0,))
        summary = None
        for line in stdout.splitlines():
            doc = _json_line(line)
            if doc.get("message_type") == "summary":
                summary = doc
        errors = _backup_errors(stdout, stderr)
        if summary is None:
            raise ResticError("failed", "restic backup printed no summary" + (f": {errors[0]}" if errors else ""))
        return dataclasses.replace(BackupSummary.of(summary), errors=tuple(errors))

    async def snapshots(self, *, tags: Sequence[str] = (), host: str | None = None) -> list[dict[str, Any]]:
        """restic's snapshot list (oldest first), filtered by ``tags`` (all must match) and ``host``."""
        args = ["snapshots"]
        if tags:
            args += ["--tag", ",".join(tags)]
        if host:
            args += ["--host", host]
        stdout, _ = await self.run(*args, timeout_s=300)
        docs = json.loads(stdout or "[]")
        return list(docs) if isinstance(docs, list) else []

    async def ls(self, snapshot: str) -> list[dict[str, Any]]:
        """The nodes of ``snapshot`` (restic's ``ls --json``, without its leading snapshot line)."""
        stdout, _ = await self.run("ls", snapshot, timeout_s=600)
        return [d for d in (_json_line(line) for line in stdout.splitlines())
                if d.get("struct_type") == "node"]

    async def restore(self, snapshot: str, target: Path, *, includes: Sequence[str] = ()) -> None:
        args = ["restore", snapshot, "--target", str(target)]
        for i in includes:
            args += ["--include", i]
        await self.run(*args, json_out=False)

    async def restore_size(self, snapshot: str) -> tuple[int, int]:
        """(bytes, files) a restore of ``snapshot`` writes (``restic stats --mode restore-size``)."""
        stdout, _ = await self.run("stats", "--mode", "restore-size", snapshot, timeout_s=600)
        doc = json.loads(stdout or "{}")
        return int(doc.get("total_size") or 0), int(doc.get("total_file_count") or 0)

    async def forget(self, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        if snapshot_ids:
            await self.run("forget", *(["--prune"] if prune else []), *snapshot_ids, json_out=False)

    async def forget_policy(self, tags: Sequence[str], keep: Sequence[str], *, prune: bool = True) -> list[str]:
        """``restic forget --tag T --keep-* ... [--prune]`` (``keep``: the ``--keep-*`` flags); the ids of the
        snapshots it removed. The JSON report is read from ``forget`` alone, then ``prune`` runs on its own
        (restic prints prune's progress as text, which would break the JSON)."""
        if not keep:
            raise ResticError("failed", "no --keep-* policy given: refusing to forget every snapshot")
        tag_args = [f"--tag={','.join(tags)}"] if tags else []
        stdout, _ = await self.run("forget", *tag_args, *keep, timeout_s=600)
        groups = json.loads(stdout.strip().splitlines()[0] if stdout.strip() else "[]") or []
        removed = [str(snap.get("id")) for g in groups for snap in g.get("remove") or []]
        if removed and prune:
            await self.run("prune", json_out=False)
        return removed

    async def check(self, *, read_data: bool = False, subset: str | None = None) -> str:
        """``restic check``; its report (``ResticError`` on damage)."""
        args = ["check"]
        if read_data:
            args.append("--read-data")
        elif subset:
            args.append(f"--read-data-subset={subset}")
        stdout, stderr = await self.run(*args, json_out=False)
        return stdout + stderr

    async def locks(self) -> list[str]:
        stdout, _ = await self.run("list", "locks", timeout_s=120, json_out=False)
        return [x.strip() for x in stdout.splitlines() if x.strip()]

    async def unlock(self) -> None:
        """Remove stale locks (restic's own test: locks of dead processes on this host or older than 30 min)."""
        await self.run("unlock", timeout_s=120, json_out=False)


async def _read_lines(stream: asyncio.StreamReader | None, limit: int, on_status: StatusHook) -> bytes:
    """Read stdout line by line: restic's ``status`` messages go to ``on_status``, the rest is kept (at
    most ``limit`` bytes; a line longer than the reader's buffer is dropped, as status lines never are)."""
    if stream is None:
        return b""
    buf = bytearray()
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # over the stream's line limit: not a status line; skip the rest of it
            await stream.read(1 << 16)
            continue
        if not line:
            return bytes(buf)
        if line.startswith(b'{"message_type":"status"'):
            with contextlib.suppress(ValueError):
                on_status(json.loads(line))
        elif len(buf) < limit:
            buf += line[: limit - len(buf)]


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    """Read to EOF keeping at most ``limit`` bytes (the rest is drained so the process never blocks)."""
    if stream is None:
        return b""
    buf = bytearray()
    while chunk := await stream.read(65536):
        if len(buf) < limit:
            buf += chunk[: limit - len(buf)]
    return bytes(buf)


def _error_text(doc: Mapping[str, Any]) -> str:
    """One of restic's JSON ``error`` messages as text: the item and what went wrong."""
    err = doc.get("error")
    what = err.get("message") or json.dumps(err, sort_keys=True) if isinstance(err, dict) else str(err)
    item = doc.get("item")
    return f"{item}: {what}" if item else str(what)


def _backup_errors(stdout: str, stderr: str, limit: int = 20) -> list[str]:
    """What ``restic backup`` reported it could not read: its JSON ``error`` messages (on stderr in restic
    0.14, on stdout in later ones) and its plain stderr lines (``X does not exist, skipping``); at most
    ``limit``, then a count of the rest."""
    out = [_error_text(d) for d in map(_json_line, stdout.splitlines()) if d.get("message_type") == "error"]
    for line in stderr.splitlines():
        doc = _json_line(line)
        if doc.get("message_type") == "error":
            out.append(_error_text(doc))
        elif not doc and line.strip():
            out.append(line.strip())
    return out if len(out) <= limit else [*out[:limit], f"... and {len(out) - limit} more"]


def _json_line(line: str) -> dict[str, Any]:
    line = line.strip()
    if not line.startswith("{"):
        return {}
    try:
        doc = json.loads(line)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
