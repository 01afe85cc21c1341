"""The embedded metrics store (WAL + head + DuckDB time blocks), as a package.

``store`` holds ``MetricStore`` (series registry, write path, head, flush and
reads), ``blocks`` the DuckDB block tables (write, read, retention,
compaction), ``blockindex`` the sealed blocks' persisted index files, ``merge`` the
numpy kernels, ``walrec`` the WAL record codec and
``querier`` the per-tenant Querier. Wiring imports ``MetricStore`` and
``StoreLimits`` from here.
"""

from pitwall.storage.metrics.querier import SeriesReader, TenantQuerier
from pitwall.storage.metrics.store import MetricStore, StoreLimits

__all__ = ["MetricStore", "SeriesReader", "StoreLimits", "TenantQuerier"]
