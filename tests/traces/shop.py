"""Three known traces, sent over OTLP/HTTP, for the Jaeger, Tempo and TraceQL tests.

A  ``a1..``: frontend ``GET /checkout`` (SERVER, 300ms, http.status_code 500, ERROR)
   -> frontend ``call backend`` (CLIENT, peer.service backend)
   -> backend ``POST /reserve`` (SERVER, 200ms, http.status_code 503, ERROR)
   -> backend ``SELECT stock`` (INTERNAL, 50ms, db.system postgresql)
B  ``b2..``: frontend ``GET /cart`` (SERVER, 20ms, http.status_code 200, OK)
   -> backend ``GET /items`` (SERVER, 10ms, http.status_code 200)
C  ``c3..``: worker ``process job`` (CONSUMER, 2s, job.id "42"; resource deployment.environment prod)
"""

from __future__ import annotations

import time

import httpx

from tests.traces.helpers import PROTO, otlp_request

A, B, C = "a1" * 16, "b2" * 16, "c3" * 16
MS = 1_000_000
T0 = time.time_ns() - 60_000 * MS  # a minute ago


def _span(trace: str, span: str, name: str, kind: int, start_ms: int, dur_ms: int, parent: str = "",
          status: int = 0, **attrs: object) -> dict[str, object]:
    return {"trace": trace, "span": span, "parent": parent, "name": name, "kind": kind,
            "start": T0 + start_ms * MS, "duration": dur_ms * MS, "status": status, "attrs": attrs}


FRONTEND = [
    _span(A, "a000000000000001", "GET /checkout", 2, 0, 300, status=2, **{"http.status_code": 500}),
    _span(A, "a000000000000002", "call backend", 3, 10, 250, parent="a000000000000001",
          **{"peer.service": "backend"}),
    _span(B, "b000000000000001", "GET /cart", 2, 1000, 20, status=1, **{"http.status_code": 200}),
]
BACKEND = [
    _span(A, "a000000000000003", "POST /reserve", 2, 20, 200, parent="a000000000000002", status=2,
          **{"http.status_code": 503}),
    _span(A, "a000000000000004", "SELECT stock", 1, 30, 50, parent="a000000000000003",
          **{"db.system": "postgresql"}),
    _span(B, "b000000000000002", "GET /items", 2, 1005, 10, parent="b000000000000001",
          **{"http.status_code": 200}),
]
WORKER = [_span(C, "c000000000000001", "process job", 5, 2000, 2000, **{"job.id": "42"})]


async def load_shop(client: httpx.AsyncClient) -> None:
    for service, spans, res in (("frontend", FRONTEND, None), ("backend", BACKEND, None),
                                ("worker", WORKER, {"deployment.environment": "prod"})):
        r = await client.post("/v1/traces", content=otlp_request(service, spans, res), headers=PROTO)
        assert r.status_code == 200, r.text
