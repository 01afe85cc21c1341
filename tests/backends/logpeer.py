"""A second pitwall, in a subprocess, playing the remote Loki (or Tempo); ``stop``/``start`` keep data and port."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready

T = TypeVar("T")


class PitwallPeer:
    """``pitwall server`` on loopback with its own data dir (kube off)."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.data = tmp / "data"
        self.cfg = tmp / "peer.yaml"
        self.cfg.write_text(yaml.safe_dump({"kube": {"enabled": False}, "storage": {"fsync": False},
                                                "otlp_grpc": {"enabled": False}}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = start_pitwall_process(self.data, self.port, config=self.cfg)
        wait_ready(self.url, timeout=90, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=30)


def wait_for(fn: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (httpx.HTTPError, KeyError, IndexError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out; last: {last!r}")
