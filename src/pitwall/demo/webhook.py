"""The demo's alert receiver: where ``alertmanager.yml`` sends notifications.

It accepts Alertmanager's webhook payload (``POST /alerts``, version 4),
keeps the last notifications in memory for ``GET /notifications`` (newest
last), and logs one line per alert through OpenTelemetry, so notifications
also show up in pitwall's logs as service ``alert-webhook``::

    {service_name="alert-webhook"} |= "firing"

Run as ``python -m pitwall.demo.webhook --port N [--pitwall URL]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from pitwall.instrument import DEFAULT_ENDPOINT, instrument

__all__ = ["NotificationLog", "main"]

log = logging.getLogger("alert-webhook")

MAX_NOTIFICATIONS = 1000
MAX_BODY_BYTES = 4 << 20


class NotificationLog:
    """The last ``limit`` webhook payloads, each stamped with when it arrived."""

    def __init__(self, limit: int = MAX_NOTIFICATIONS) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self._items.append({"received_at": time.time(), **payload})
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            summary = alert.get("annotations", {}).get("summary", "")
            line = "alert %s: %s service=%s severity=%s %s"
            args = (alert.get("status", payload.get("status", "?")), labels.get("alertname", "?"),
                    labels.get("service_name") or labels.get("job", "-"), labels.get("severity", "-"), summary)
            if alert.get("status") == "firing":
                log.warning(line, *args)
            else:
                log.info(line, *args)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path.split("?")[0] != "/alerts":
            return self._send(404, {"error": "POST /alerts"})
        if length > MAX_BODY_BYTES:
            return self._send(413, {"error": "payload too large"})
        try:
            payload = json.loads(self.rfile.read(length))
            if not isinstance(payload, dict):
                raise ValueError("payload must be a JSON object")
        except ValueError as e:
            return self._send(400, {"error": f"bad payload: {e}"})
        self.server.notifications.add(payload)
        self._send(200, {"status": "ok"})

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/notifications":
            return self._send(200, {"notifications": self.server.notifications.snapshot()})
        if path == "/healthz":
            return self._send(200, {"status": "ok"})
        self._send(404, {"error": "GET /notifications"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each notification is logged once, in NotificationLog.add."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], notifications: NotificationLog) -> None:
        self.notifications = notifications
        super().__init__(addr, _Handler)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pitwall.demo.webhook")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pitwall", default=DEFAULT_ENDPOINT, help="OTLP/HTTP base URL for the receiver's logs")
    args = p.parse_args(argv)
    otel = instrument("alert-webhook", args.pitwall, traces=False, metrics=False, console=True,
                      export_delay_s=1.0)
    server = _Server((args.host, args.port), NotificationLog())

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        otel.shutdown()


if __name__ == "__main__":
    main()
