"""The few git reads a pipeline needs: the commit of a ref, files at that commit, what changed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from pitwall.core.errors import BadData

__all__ = ["Commit", "GitRepo"]

MAX_FILE_BYTES = 1 << 20
GIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Commit:
    sha: str
    ref: str
    is_tag: bool
    message: str
    author: str
    timestamp: str
    default_branch: str


class GitRepo:
    """A local git repository (working tree or bare), read with the ``git`` command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _git(self, *args: str, limit: int = MAX_FILE_BYTES) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "git", "-C", str(self.path), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BadData(f"git {args[0]} timed out in {self.path}") from None
        if len(out) > limit:
            raise BadData(f"git {args[0]} output is larger than {limit} bytes")
        return proc.returncode or 0, out

    async def commit(self, ref: str | None) -> Commit:
        """The commit ``ref`` names (default: the checked-out branch)."""
        if not self.path.is_dir():
            raise BadData(f"repository {self.path} does not exist")
        code, out = await self._git("rev-parse", "--git-dir")
        if code != 0:
            raise BadData(f"{self.path} is not a git repository")
        _, head = await self._git("symbolic-ref", "--short", "-q", "HEAD")
        default = head.decode().strip() or "main"
        ref = ref or default
        if ref.startswith("-"):
            raise BadData(f"invalid ref {ref!r}")
        code, out = await self._git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if code != 0:
            raise BadData(f"Reference not found: {ref}")
        sha = out.decode().strip()
        code, _ = await self._git("show-ref", "--verify", "-q", f"refs/tags/{ref}")
        is_tag = code == 0
        _, info = await self._git("log", "-1", "--format=%an <%ae>%x00%cI%x00%B", sha)
        author, ts, message = ([*info.decode("utf-8", "replace").split("\x00", 2), "", ""])[:3]
        short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        return Commit(sha=sha, ref=short, is_tag=is_tag, message=message.strip(), author=author, timestamp=ts.strip(),
                      default_branch=default)

    async def read(self, sha: str, path: str) -> str | None:
        code, out = await self._git("show", f"{sha}:{path}")
        return out.decode("utf-8", "replace") if code == 0 else None

    async def files(self, sha: str) -> list[str]:
        code, out = await self._git("ls-tree", "-r", "-z", "--name-only", sha, limit=64 << 20)
        return [f for f in out.decode("utf-8", "replace").split("\0") if f] if code == 0 else []

    async def changed(self, base: str, sha: str) -> list[str] | None:
        code, out = await self._git("diff", "--name-only", "-z", f"{base}...{sha}", limit=64 << 20)
        return [f for f in out.decode("utf-8", "replace").split("\0") if f] if code == 0 else None
