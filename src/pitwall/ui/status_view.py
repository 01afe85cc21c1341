"""The self-monitoring page's data: what Prometheus shows at ``/status`` and ``/tsdb-status``.

Build and runtime, the configuration with its secrets redacted, storage and WAL on disk, series
cardinality (top metrics by series, label names by values, label pairs by series) read through the
metrics ``Querier``, the rule files loaded, ingestion rates and limits hit, both from the server's
own metrics registry (``core.selfmetrics``, what ``/metrics`` exposes).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pitwall import __version__
from pitwall.core.labels import METRIC_NAME, Matcher

__all__ = ["Cardinality", "StatusView", "cardinality", "dir_usage", "redact"]

_SECRET_KEY = re.compile(
    r"(^|_)(secret|secrets|password|passwd|token|tokens|api_key|apikey|key|keys|credentials?|private_key|"
    r"cookie|client_secret|auth|authorization|bearer|signing_key|routing_key|service_key|webhook_url)($|_)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)
REDACTED = "<redacted>"


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every secret-looking field replaced (by key name) and passwords in URLs removed."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if _SECRET_KEY.search(key) and value not in (None, "", [], {}, False, 0):
        return REDACTED
    if isinstance(value, str):
        return _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", value)
    return value


def dir_usage(path: Path, max_entries: int = 200_000) -> tuple[int, int, bool]:
    """Bytes and files under ``path``; stops (third value True) after ``max_entries`` entries."""
    size = files = seen = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    seen += 1
                    if seen > max_entries:
                        return size, files, True
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        elif e.is_file(follow_symlinks=False):
                            size += e.stat(follow_symlinks=False).st_size
                            files += 1
                    except OSError:
                        continue
        except OSError:
            continue
    return size, files, False


@dataclass
class Cardinality:
    """Prometheus' ``/api/v1/status/tsdb`` lists, over the series with samples in a range."""

    series: int
    label_names: int
    by_metric: list[tuple[str, int]]
    by_label_values: list[tuple[str, int]]
    by_label_pair: list[tuple[str, int]]
    truncated: bool = False


def cardinality(series: Iterable[Any], top: int = 10, max_series: int = 500_000) -> Cardinality:
    """Counts over label sets (each a sequence of (name, value)); stops reading after ``max_series``."""
    metrics: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    values: dict[str, set[str]] = {}
    n = 0
    truncated = False
    for labels in series:
        if n >= max_series:
            truncated = True
            break
        n += 1
        for k, v in labels:
            if k == METRIC_NAME:
                metrics[v] += 1
            pairs[f"{k}={v}"] += 1
            values.setdefault(k, set()).add(v)
    by_values = sorted(((k, len(v)) for k, v in values.items()), key=lambda t: (-t[1], t[0]))
    return Cardinality(n, len(values), metrics.most_common(top), by_values[:top], pairs.most_common(top), truncated)


@dataclass
class _Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class StatusView:
    """Reads for the status page; keeps the previous reading of the counters to show rates between views."""

    registry: Callable[[], Any]  # the server's prometheus_client registry (None before registration)
    config: Callable[[], Any]  # the server's Settings (pydantic), or None
    _last: tuple[float, dict[str, float]] | None = field(default=None, repr=False)

    def samples(self) -> list[_Sample]:
        reg = self.registry()
        if reg is None:
            return []
        return [_Sample(s.name, dict(s.labels), float(s.value)) for fam in reg.collect() for s in fam.samples]

    def build(self, samples: list[_Sample]) -> dict[str, Any]:
        started = next((s.value for s in samples if s.name == "pitwall_start_time_seconds"), 0.0)
        return {"version": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
                "pid": os.getpid(), "started": started, "uptime_s": max(time.time() - started, 0.0) if started else 0.0,
                "cwd": os.getcwd()}

    def config_yaml(self) -> str:
        s = self.config()
        if s is None:
            return ""
        data = s.model_dump(mode="json") if hasattr(s, "model_dump") else dict(s)
        return yaml.safe_dump(redact(data), sort_keys=False, allow_unicode=True, width=120)

    def storage(self, samples: list[_Sample]) -> dict[str, Any]:
        s = self.config()
        data_dir = Path(getattr(s, "data_dir", "") or ".")
        out: dict[str, Any] = {"data_dir": str(data_dir.resolve()), "dirs": [], "wal": [], "disk": None}
        try:
            du = shutil.disk_usage(data_dir)
            out["disk"] = {"total": du.total, "used": du.used, "free": du.free}
        except OSError:
            pass
        if data_dir.is_dir():
            for d in sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name != "wal"):
                size, files, capped = dir_usage(d)
                out["dirs"].append({"name": d.name, "bytes": size, "files": files, "capped": capped})
            wal = data_dir / "wal"
            if wal.is_dir():
                for d in sorted(p for p in wal.iterdir() if p.is_dir()):
                    size, files, capped = dir_usage(d)
                    segs = sorted(f.name for f in d.iterdir() if f.is_file())
                    out["wal"].append({"name": d.name, "bytes": size, "files": files, "capped": capped,
                                       "last_segment": segs[-1] if segs else ""})
        head = {s.name: s.value for s in samples if s.name in ("pitwall_metrics_series", "pitwall_metrics_head_samples")}
        out["head_series"] = head.get("pitwall_metrics_series")
        out["head_samples"] = head.get("pitwall_metrics_head_samples")
        return out

    def rates(self, samples: list[_Sample], uptime_s: float) -> dict[str, Any]:
        """Ingestion by counter: totals and the rate since the previous view (or since start, the first time)."""
        now = time.time()
        current: dict[str, float] = {}
        for s in samples:
            if s.name == "pitwall_metrics_samples_appended_total":
                current["metric samples"] = s.value
            elif s.name == "pitwall_http_requests_total" and _is_ingest(s.labels.get("handler", "")):
                key = f"requests to {s.labels.get('handler')}"
                current[key] = current.get(key, 0.0) + s.value
        prev = self._last
        self._last = (now, current)
        rows = []
        for k, v in sorted(current.items()):
            if prev is not None and now - prev[0] >= 1.0 and k in prev[1]:
                rate, basis = (v - prev[1][k]) / (now - prev[0]), f"over the last {now - prev[0]:.0f}s"
            else:
                rate, basis = (v / uptime_s if uptime_s > 0 else 0.0), "average since start"
            rows.append({"name": k, "total": v, "rate": max(rate, 0.0), "basis": basis})
        return {"rows": rows}

    def limits(self, samples: list[_Sample]) -> list[dict[str, Any]]:
        """Requests refused for a limit (413 too large, 429 too many) and anything counted as dropped."""
        out: list[dict[str, Any]] = []
        for s in samples:
            if s.name == "pitwall_http_requests_total" and s.labels.get("code") in ("413", "429") and s.value > 0:
                out.append({"what": f"{s.labels.get('handler')} answered {s.labels.get('code')}",
                            "count": s.value})
            elif re.search(r"dropped|rejected|discarded|limited", s.name) and s.value > 0 and \
                    not s.name.endswith("_created"):
                lbl = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out.append({"what": s.name + (f"{{{lbl}}}" if lbl else ""), "count": s.value})
        return sorted(out, key=lambda r: -r["count"])


_INGEST = re.compile(r"^/(api/v1/write|api/v1/otlp/v1/metrics|v1/(traces|logs|metrics)|loki/api/v1/push|"
                     r"api/v2/spans|api/traces|otlp/v1/\w+|api/v1/push)")


def _is_ingest(handler: str) -> bool:
    return bool(_INGEST.match(handler))


def all_series_matchers() -> list[Matcher]:
    """Every series (a selector must match something non-empty)."""
    return [Matcher.of("=~", METRIC_NAME, ".+")]
