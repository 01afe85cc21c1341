"""A command run to completion for the load tester: output kept to a bound, the whole process group killed when
the caller gives up (a timeout, a cancelled webhook)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["run_process"]


async def run_process(argv: Sequence[str], max_output: int, *, env: Mapping[str, str] | None = None,
                      cwd: Path | None = None) -> tuple[int, bytes]:
    """(exit status, stdout and stderr together up to ``max_output`` bytes)."""
    # A session of its own, so giving up kills the command's children too: killing only the first process
    # leaves them holding the output pipe, and the wait for it would last as long as they do.
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                                                env=None if env is None else dict(env), cwd=cwd,
                                                start_new_session=True)
    assert proc.stdout is not None
    out = b""
    try:
        while chunk := await proc.stdout.read(65536):
            if len(out) < max_output:
                out += chunk[:max_output - len(out)]
        rc = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return rc, out
