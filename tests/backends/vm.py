"""Debian's victoria-metrics as a real metrics backend for tests, on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.metrics.ingest import prompb
from tests.conftest import free_port

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def need_victoria() -> None:
    if not Path(VICTORIA).exists():
        pytest.skip("Debian's victoria-metrics is not installed (apt-get install victoria-metrics)")


class VictoriaPeer:
    """A single-node VictoriaMetrics in a temp dir; ``stop``/``start`` keep its data and port."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [VICTORIA, f"-storageDataPath={self.dir}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache",
             "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("victoria-metrics did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def api(self, path: str, **params: Any) -> Any:
        return httpx.get(self.url + path, params=params, timeout=30).json()

    def write(self, series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> None:
        """Straight into the engine (remote write), bypassing pitwall."""
        httpx.post(self.url + "/api/v1/write", content=write_body(series),
                   headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"},
                   timeout=30).raise_for_status()


def write_body(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    """A snappy remote-write request: (labels, [(ms, value), ...]) per series."""
    w = prompb.WriteRequest()
    for labels, points in series:
        ts = w.timeseries.add()
        for k, v in sorted(labels.items()):
            ts.labels.add(name=k, value=v)
        for t, v in points:
            ts.samples.add(timestamp=t, value=v)
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def wait_for(check: Any, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy; its last value otherwise fails the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"condition not met in {timeout}s (last: {last!r})")
