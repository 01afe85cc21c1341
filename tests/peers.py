"""Real peers for differential tests: Debian's prometheus, run on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def need_prometheus() -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("Debian's prometheus is not installed (make peers installs it)")


class PrometheusPeer:
    """A Prometheus 2.x server in a temp dir, with the remote-write receiver on."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None = None) -> None:
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config or {"global": {"scrape_interval": "15s"}}))
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--web.enable-lifecycle", "--storage.tsdb.retention.time=100y",
             "--query.lookback-delta=5m", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"prometheus exited: {err[-2000:]}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("prometheus did not become ready")

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=30)
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
