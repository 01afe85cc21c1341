"""Scrape targets: Prometheus' PopulateLabels, and the status types the API shows.

Contract: ``populate_labels`` turns one discovered label set plus its job's
``ScrapeConfig`` into a ``Target`` (or None when relabeling drops it), raising
``ValueError`` with Prometheus' wording for targets that cannot be scraped.
``Target.hash`` is Prometheus' per-target hash (it spreads scrapes over the
interval). ``TargetStatus``, ``DroppedTarget``, ``TargetsSnapshot`` and
``TargetMetadata`` are plain values, rendered as /api/v1/targets renders them.
No I/O.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pitwall.core.durations import format_duration_ms, parse_duration_ms
from pitwall.core.labels import Labels
from pitwall.metrics.model import MetricMetadata
from pitwall.metrics.relabel import relabel
from pitwall.metrics.scrape.config import ScrapeConfig

__all__ = [
    "DroppedTarget",
    "Health",
    "Target",
    "TargetMetadata",
    "TargetStatus",
    "TargetsSnapshot",
    "global_url",
    "populate_labels",
    "rfc3339",
]

Health = Literal["up", "down", "unknown"]


@dataclass(frozen=True)
class TargetStatus:
    """One active target as /api/v1/targets reports it."""

    discovered_labels: dict[str, str]
    labels: dict[str, str]
    scrape_pool: str
    scrape_url: str
    global_url: str
    last_error: str
    last_scrape: datetime | None
    last_scrape_duration: float
    health: Health
    scrape_interval: str
    scrape_timeout: str

    def to_json(self) -> dict[str, Any]:
        return {
            "discoveredLabels": self.discovered_labels,
            "labels": self.labels,
            "scrapePool": self.scrape_pool,
            "scrapeUrl": self.scrape_url,
            "globalUrl": self.global_url,
            "lastError": self.last_error,
            "lastScrape": rfc3339(self.last_scrape),
            "lastScrapeDuration": self.last_scrape_duration,
            "health": self.health,
            "scrapeInterval": self.scrape_interval,
            "scrapeTimeout": self.scrape_timeout,
        }


@dataclass(frozen=True)
class DroppedTarget:
    """A target dropped by ``relabel_configs``, with its labels before relabeling."""

    discovered_labels: dict[str, str]
    scrape_pool: str

    def to_json(self) -> dict[str, Any]:
        return {"discoveredLabels": self.discovered_labels, "scrapePool": self.scrape_pool}


@dataclass(frozen=True)
class TargetsSnapshot:
    active: list[TargetStatus]
    dropped: list[DroppedTarget]
    dropped_counts: dict[str, int]


@dataclass(frozen=True)
class TargetMetadata:
    """Latest metric metadata of one target (for /api/v1/targets/metadata)."""

    target: dict[str, str]
    scrape_pool: str
    metadata: list[MetricMetadata]


def rfc3339(t: datetime | None) -> str:
    """Go's RFC3339Nano rendering of a time.Time (zero time when never scraped)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    off = t.utcoffset()
    if off is None or off.total_seconds() == 0:
        zone = "Z"
    else:
        secs = int(off.total_seconds())
        sign = "+" if secs >= 0 else "-"
        secs = abs(secs)
        zone = f"{sign}{secs // 3600:02d}:{secs % 3600 // 60:02d}"
    return f"{base}{'.' + frac if frac else ''}{zone}"


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class Target:
    """One scrape target after relabeling."""

    labels: dict[str, str]  # full label set incl. __address__, __scheme__...
    discovered: dict[str, str]
    public: Labels  # labels attached to samples (no "__" prefix)
    url: str
    interval_ms: int
    timeout_ms: int

    @property
    def key(self) -> tuple[Labels, str]:
        return tuple(sorted(self.labels.items())), self.url

    def hash(self) -> int:
        text = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return _fnv64a(text.encode() + b"\xff" + self.url.encode())


def _target_url(labels: dict[str, str], params: dict[str, list[str]]) -> str:
    q = {k: list(v) for k, v in params.items()}
    for name, value in labels.items():
        if name.startswith("__param_"):
            k = name[len("__param_") :]
            if q.get(k):
                q[k][0] = value
            else:
                q[k] = [value]
    query = urllib.parse.urlencode([(k, v) for k in sorted(q) for v in q[k]])
    url = f"{labels.get('__scheme__', '')}://{labels.get('__address__', '')}{labels.get('__metrics_path__', '')}"
    return f"{url}?{query}" if query else url


def populate_labels(
    discovered: dict[str, str], cfg: ScrapeConfig
) -> tuple[Target | None, dict[str, str]]:
    """Prometheus' PopulateLabels: (target or None when dropped, labels before relabeling).

    Raises ValueError for targets that cannot be scraped (no address, bad interval).
    """
    lb = dict(discovered)
    defaults = {
        "job": cfg.job_name,
        "__scrape_interval__": format_duration_ms(cfg.interval_ms),
        "__scrape_timeout__": format_duration_ms(cfg.timeout_ms),
        "__metrics_path__": cfg.metrics_path,
        "__scheme__": cfg.scheme,
    }
    for k, v in defaults.items():
        if lb.get(k, "") == "":
            lb[k] = v
    for k, vals in cfg.params.items():
        name = "__param_" + k
        if vals and lb.get(name, "") == "":
            lb[name] = vals[0]
    pre = {k: v for k, v in lb.items() if v != ""}
    out = relabel(pre, cfg.relabel_configs, scheme=cfg.name_scheme)
    if out is None:
        return None, pre
    addr = out.get("__address__", "")
    if addr == "":
        raise ValueError("no address")
    if "/" in addr:
        raise ValueError(f'"{addr}" is not a valid hostname')
    interval_ms = _label_duration(out, "__scrape_interval__", "interval")
    timeout_ms = _label_duration(out, "__scrape_timeout__", "timeout")
    if timeout_ms > interval_ms:
        raise ValueError(
            f'scrape timeout cannot be greater than scrape interval ("{out["__scrape_timeout__"]}" > '
            f'"{out["__scrape_interval__"]}")'
        )
    res = {k: v for k, v in out.items() if not k.startswith("__meta_")}
    if res.get("instance", "") == "":
        res["instance"] = addr
    public = tuple(sorted((k, v) for k, v in res.items() if not k.startswith("__")))
    return Target(res, pre, public, _target_url(res, cfg.params), interval_ms, timeout_ms), pre


def _label_duration(labels: dict[str, str], name: str, what: str) -> int:
    try:
        ms = parse_duration_ms(labels.get(name, ""))
    except ValueError as e:
        raise ValueError(f"error parsing scrape {what}: {e}") from e
    if ms == 0:
        raise ValueError(f"scrape {what} cannot be 0")
    return ms


def global_url(url: str, external_host: str) -> str:
    """Replace a loopback host by the server's host name, as Prometheus' globalUrl does."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return url
    netloc = external_host + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
