"""Test helpers: a threaded HTTP receiver that collects JSON posts, and config writers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port


class Receiver:
    """Collects POSTed JSON bodies per path; ``fail_with`` makes it answer an error status."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.fail_with: int | None = None
        self.attempts = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                with owner._lock:
                    owner.attempts += 1
                    status = owner.fail_with or 200
                    if status == 200:
                        owner.posts.append((self.path, dict(self.headers), json.loads(raw)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [b for p, _, b in self.posts if path is None or p == path]

    def wait_for(self, pred: Callable[[list[Any]], bool], timeout: float = 20.0, path: str | None = None) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.bodies(path)
            if pred(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver condition not met in {timeout}s; got {self.bodies(path)!r}")


def write_am_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def webhook_config(url: str, group_wait: str = "100ms", group_interval: str = "1s", repeat: str = "1h",
                   **route: Any) -> dict[str, Any]:
    return {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": group_wait,
                  "group_interval": group_interval, "repeat_interval": repeat, **route},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": url, "send_resolved": True}]}],
    }
