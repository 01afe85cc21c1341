"""kill -9 under ingest load, then a restart: what the crash tests of every pillar share.

``kill_under_load`` runs writer threads that each call ``send(w, n)`` (the
n-th request of writer w; it returns the id of what the server acknowledged,
None when refused, and raises ``Stop`` when the server is gone) until enough
requests were acknowledged, then SIGKILLs the server and returns the
acknowledged ids. ``restarted`` starts the server again on the same data
and stops it after the checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import start_pitwall_process, wait_ready


class Stop(Exception):
    """The server stopped answering: the writer ends."""


def kill_under_load(proc: subprocess.Popen[bytes], send: Callable[[int, int], str | None], *, writers: int = 4,
                    want: int = 300, within_s: float = 30) -> set[str]:
    """Load the server with ``writers`` threads, SIGKILL it once ``want`` requests were acknowledged."""
    acked: set[str] = set()
    stop = threading.Event()

    def writer(w: int) -> None:
        n = 0
        while not stop.is_set() and n < 100_000:
            try:
                rid = send(w, n)
            except Stop:
                return
            if rid is not None:
                acked.add(rid)
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + within_s
    while len(acked) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= want, f"only {len(acked)} requests acknowledged before the kill"
    return set(acked)


@contextmanager
def restarted(data: Path, port: int, timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """The server again on ``data`` (it replays its WAL), stopped with SIGTERM afterwards."""
    proc = start_pitwall_process(data, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc=proc, timeout=timeout)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
