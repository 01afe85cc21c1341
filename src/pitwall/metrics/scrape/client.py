"""The scrape HTTP client: one httpx client per job, Prometheus' request headers.

Contract: ``make_client`` builds the job's client (TLS, redirects, proxy; no
client timeout, as ``scrape_timeout`` bounds each whole scrape);
``request_headers`` are the headers Prometheus 3 sends (``Accept`` from
``scrape_protocols``, compression, ``X-Prometheus-Scrape-Timeout-Seconds``,
authorization).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from pitwall.core.httpconfig import auth_header, ssl_context
from pitwall.metrics.scrape.config import SCRAPE_PROTOCOL_HEADERS, ScrapeConfig

__all__ = ["USER_AGENT", "accept_header", "make_client", "request_headers"]

USER_AGENT = "pitwall/0.1.0"


def accept_header(protocols: Sequence[str]) -> str:
    """Prometheus 3's Accept header for ``scrape_protocols``, weights descending.

    Names are requested with ``escaping=underscores``: pitwall parses classic
    (non-UTF-8) metric names only.
    """
    vals = []
    weight = len(SCRAPE_PROTOCOL_HEADERS) + 1
    for p in protocols:
        v = SCRAPE_PROTOCOL_HEADERS[p]
        if p in ("PrometheusText1.0.0", "OpenMetricsText1.0.0"):
            v += ";escaping=underscores"
        vals.append(f"{v};q=0.{weight}")
        weight -= 1
    vals.append(f"*/*;q=0.{weight}")
    return ",".join(vals)


def request_headers(cfg: ScrapeConfig, accept: str, timeout_s: float) -> dict[str, str]:
    """Headers of one scrape request of ``cfg``'s job."""
    h = {
        "Accept": accept,
        "Accept-Encoding": "gzip" if cfg.enable_compression else "identity",
        "User-Agent": USER_AGENT,
        "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}",
    }
    auth = auth_header(cfg)
    if auth:
        h["Authorization"] = auth
    return h


def make_client(cfg: ScrapeConfig, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context(cfg.tls_config),
        follow_redirects=cfg.follow_redirects,
        proxy=cfg.proxy_url,
        trust_env=cfg.proxy_from_environment,
        timeout=None,  # the whole scrape is bounded by scrape_timeout instead
        transport=transport,
    )
