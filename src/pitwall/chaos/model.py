"""Names and small parsers shared by the chaos pillar: Chaos Mesh's group, kinds, annotations, durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["API_VERSION", "CHAOS_KINDS", "FINALIZER", "INJECTED", "NOT_INJECTED", "NOT_YET_INJECTED",
           "PAUSE_ANNOTATION", "ChaosSpecError", "now_rfc3339", "parse_go_duration", "parse_time"]

API_VERSION = "chaos-mesh.org/v1alpha1"
PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
FINALIZER = "chaos-mesh/records"  # Chaos Mesh's: an object is not gone before its faults are recovered
INJECTED, NOT_INJECTED = "Injected", "Not Injected"

# Kinds pitwall injects itself, and those it accepts and stores but cannot inject yet (with why).
CHAOS_KINDS = ("PodChaos", "StressChaos", "NetworkChaos", "HTTPChaos", "IOChaos", "TimeChaos", "DNSChaos")
NOT_YET_INJECTED = {
    "NetworkChaos": "network faults are enforced by pitwall's service proxy, which this server does not run",
    "HTTPChaos": "HTTP faults are enforced by pitwall's service proxy, which this server does not run",
    "IOChaos": "file faults are injected by pitwall's node through its chaos shim, and this server runs no node",
    "TimeChaos": "clock skew is injected by pitwall's node through its chaos shim, and this server runs no node",
    "DNSChaos": "name lookups are failed by pitwall's node through its chaos shim, and this server runs no node",
}

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class ChaosSpecError(ValueError):
    """A spec Chaos Mesh's webhook would refuse; the message names the field."""


def parse_go_duration(text: str, field: str = "spec.duration") -> float:
    """Go's ``time.ParseDuration`` ("30s", "1m30s", "1.5h", "300ms") in seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ChaosSpecError(f'{field}: invalid duration "{text}"')
    return sign * total


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = obj.setdefault("metadata", {})
    return m
