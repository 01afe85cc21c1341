"""The one internal span model: a column-wise batch of spans. Pure data, no I/O.

OTLP and Zipkin decoders both fill a ``SpanColumns`` builder; ``to_table``
turns it into an Arrow table of ``SPAN_SCHEMA``, the layout the store keeps
in its head, its WAL records and its DuckDB block tables.

Conventions:

* ``trace_id`` is 32 lowercase hex characters (64-bit ids are left-padded
  with zeros); ``tkey`` is its low 64 bits as a signed int64, the lookup key
  (as Zipkin, a 64-bit id finds the 128-bit trace whose low half it is).
* ``kind`` and ``status_code`` use OTLP's enum numbers.
* ``attributes``/``resource`` are JSON objects of plain JSON values (bytes
  values as ``{"$bytes": "<base64>"}``); ``events`` and ``links`` are JSON
  lists; ``scope`` is ``{"name":..., "version":...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

# OTLP Span.SpanKind
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
KIND_NAMES = {
    KIND_UNSPECIFIED: "SPAN_KIND_UNSPECIFIED",
    KIND_INTERNAL: "SPAN_KIND_INTERNAL",
    KIND_SERVER: "SPAN_KIND_SERVER",
    KIND_CLIENT: "SPAN_KIND_CLIENT",
    KIND_PRODUCER: "SPAN_KIND_PRODUCER",
    KIND_CONSUMER: "SPAN_KIND_CONSUMER",
}
ZIPKIN_KINDS = {KIND_SERVER: "SERVER", KIND_CLIENT: "CLIENT", KIND_PRODUCER: "PRODUCER", KIND_CONSUMER: "CONSUMER"}
KIND_OF_ZIPKIN = {v: k for k, v in ZIPKIN_KINDS.items()}

# OTLP Status.StatusCode
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {STATUS_UNSET: "STATUS_CODE_UNSET", STATUS_OK: "STATUS_CODE_OK", STATUS_ERROR: "STATUS_CODE_ERROR"}

# bits of the ``flags`` column
FLAG_SHARED = 1
FLAG_DEBUG = 2

UNKNOWN_SERVICE = "unknown_service"

SPAN_SCHEMA = pa.schema([
    ("tenant", pa.string()),
    ("tkey", pa.int64()),
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("parent_id", pa.string()),
    ("service", pa.string()),
    ("name", pa.string()),
    ("kind", pa.int8()),
    ("start_ns", pa.int64()),
    ("duration_ns", pa.int64()),
    ("status_code", pa.int8()),
    ("status_message", pa.string()),
    ("remote_service", pa.string()),
    ("flags", pa.int8()),
    ("attributes", pa.string()),
    ("resource", pa.string()),
    ("scope", pa.string()),
    ("events", pa.string()),
    ("links", pa.string()),
])

COLUMNS = SPAN_SCHEMA.names

# Attributes, most specific first, that name the remote side of a CLIENT or
# PRODUCER span (OpenTelemetry's Zipkin exporter specification).
REMOTE_SERVICE_KEYS = (
    "peer.service", "server.address", "net.peer.name", "network.peer.address", "net.sock.peer.name",
    "net.sock.peer.addr", "peer.hostname", "peer.address", "db.name",
)


def dumps(obj: Any) -> str:
    """Compact JSON as stored in the string columns."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def tkey_of(trace_id_hex: str) -> int:
    """The lookup key of a normalized trace id: its low 64 bits as signed int64."""
    v = int(trace_id_hex[-16:], 16)
    return v - (1 << 64) if v >= 1 << 63 else v


def normalize_trace_id(text: str) -> str:
    """A 16- or 32-hex-digit trace id as stored (32 lowercase digits); ValueError if malformed."""
    t = text.strip().lower()
    if len(t) not in (16, 32) or any(c not in "0123456789abcdef" for c in t):
        raise ValueError(f"invalid trace id {text[:64]!r}: expected 16 or 32 hex characters")
    return t.rjust(32, "0")


def display_trace_id(stored: str) -> str:
    """Zipkin's form: 16 hex digits when the high 64 bits are zero."""
    return stored[16:] if stored.startswith("0" * 16) else stored


@dataclass
class SpanColumns:
    """Builder: one list per column, appended span by span by the decoders."""

    tkey: list[int] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    parent_id: list[str] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    duration_ns: list[int] = field(default_factory=list)
    status_code: list[int] = field(default_factory=list)
    status_message: list[str] = field(default_factory=list)
    remote_service: list[str] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    resource: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.span_id)

    def to_table(self, tenant: str) -> pa.Table:
        """The batch as an Arrow table of ``SPAN_SCHEMA``."""
        n = len(self)
        arrays = [
            tenant_array(tenant, n),
            pa.array(np.asarray(self.tkey, dtype=np.int64)),
            pa.array(self.trace_id, pa.string()),
            pa.array(self.span_id, pa.string()),
            pa.array(self.parent_id, pa.string()),
            pa.array(self.service, pa.string()),
            pa.array(self.name, pa.string()),
            pa.array(np.asarray(self.kind, dtype=np.int8)),
            pa.array(np.asarray(self.start_ns, dtype=np.int64)),
            pa.array(np.asarray(self.duration_ns, dtype=np.int64)),
            pa.array(np.asarray(self.status_code, dtype=np.int8)),
            pa.array(self.status_message, pa.string()),
            pa.array(self.remote_service, pa.string()),
            pa.array(np.asarray(self.flags, dtype=np.int8)),
            pa.array(self.attributes, pa.string()),
            pa.array(self.resource, pa.string()),
            pa.array(self.scope, pa.string()),
            pa.array(self.events, pa.string()),
            pa.array(self.links, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)


@dataclass(frozen=True)
class SpanArrays:
    """A decoded batch already in Arrow form (the native decoder's output): every column but ``tenant``."""

    arrays: dict[str, pa.Array]
    n: int

    def __len__(self) -> int:
        return self.n

    def to_table(self, tenant: str) -> pa.Table:
        arrays = [tenant_array(tenant, self.n), *(self.arrays[c] for c in COLUMNS[1:])]
        return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)


def tenant_array(tenant: str, n: int) -> pa.Array:
    """``n`` copies of ``tenant`` as a string array, built from buffers (no per-row objects)."""
    raw = tenant.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def empty_table() -> pa.Table:
    return SPAN_SCHEMA.empty_table()


@dataclass(frozen=True)
class AppendResult:
    """How many spans a commit kept and rejected (spans over the per-trace limit)."""

    accepted: int
    rejected: int = 0
    message: str = ""


@dataclass(frozen=True)
class SpanRow:
    """One stored span, decoded for the query APIs (never on the ingest path)."""

    trace_id: str
    span_id: str
    parent_id: str
    service: str
    name: str
    kind: int
    start_ns: int
    duration_ns: int
    status_code: int
    status_message: str
    remote_service: str
    flags: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


def rows_of(table: pa.Table) -> list[SpanRow]:
    """Decode a result table into ``SpanRow`` objects, sorted by start time."""
    d = table.to_pydict()
    out = [
        SpanRow(
            trace_id=d["trace_id"][i], span_id=d["span_id"][i], parent_id=d["parent_id"][i] or "",
            service=d["service"][i], name=d["name"][i], kind=int(d["kind"][i]),
            start_ns=int(d["start_ns"][i]), duration_ns=int(d["duration_ns"][i]),
            status_code=int(d["status_code"][i]), status_message=d["status_message"][i] or "",
            remote_service=d["remote_service"][i] or "", flags=int(d["flags"][i]),
            attributes=_loads(d["attributes"][i], {}), resource=_loads(d["resource"][i], {}),
            scope=_loads(d["scope"][i], {}), events=_loads(d["events"][i], []), links=_loads(d["links"][i], []),
        )
        for i in range(table.num_rows)
    ]
    out.sort(key=lambda r: (r.start_ns, r.span_id))
    return out


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    return json.loads(raw)


@dataclass(frozen=True)
class TraceSummary:
    """What a search result shows about one trace."""

    trace_id: str
    root_service: str
    root_name: str
    start_ns: int
    duration_ns: int
    span_count: int
    error_count: int
    services: list[str]
    orphans: int = 0  # spans whose parent is not in the trace (yet): an incomplete trace
    has_root: bool = True  # a span without a parent was received

    @property
    def incomplete(self) -> bool:
        return self.orphans > 0 or not self.has_root


def summarize(spans: list[SpanRow]) -> TraceSummary:
    """Root span (no parent, else the earliest), duration, counts and services of one trace."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id] or [s for s in spans if s.parent_id not in ids] or spans
    root = min(roots, key=lambda s: s.start_ns)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    return TraceSummary(
        trace_id=spans[0].trace_id,
        root_service=root.service,
        root_name=root.name,
        start_ns=start,
        duration_ns=end - start,
        span_count=len(spans),
        error_count=sum(1 for s in spans if s.status_code == STATUS_ERROR),
        services=sorted({s.service for s in spans}),
        orphans=sum(1 for s in spans if s.parent_id and s.parent_id not in ids),
        has_root=any(not s.parent_id for s in spans),
    )


@dataclass(frozen=True)
class DependencyLink:
    """A caller -> callee edge with its call and error counts."""

    parent: str
    child: str
    call_count: int
    error_count: int
