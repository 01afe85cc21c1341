"""The logs pillar: Loki push, OTLP, syslog and Elasticsearch bulk ingest, LogQL, the Loki HTTP API, live tail.

``__all__`` is the pillar's public interface: what other pillars may import
(``from pitwall.logs import LogQLEngine``), checked by ``tests/test_layout.py``.
Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can
import ``pitwall.logs.settings`` cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.logs.api import LogsApiDeps, streams_json
    from pitwall.logs.logql import (
        LogQLEngine,
        LogQLError,
        LogQLResult,
        parse_stream_selector,
    )
    from pitwall.logs.logql import (
        parse_expr as parse_logql,
    )
    from pitwall.logs.logql.ast import LogSelector
    from pitwall.logs.model import Direction, LogEntry, LogStream, PushStream
    from pitwall.logs.store import LogAppender, LogQuerier, LogSource

_EXPORTS = {
    "Direction": "pitwall.logs.model",
    "LogAppender": "pitwall.logs.store",
    "LogEntry": "pitwall.logs.model",
    "LogQLEngine": "pitwall.logs.logql",
    "LogQLError": "pitwall.logs.logql",
    "LogQLResult": "pitwall.logs.logql",
    "LogQuerier": "pitwall.logs.store",
    "LogSelector": "pitwall.logs.logql.ast",
    "LogSource": "pitwall.logs.store",
    "LogStream": "pitwall.logs.model",
    "LogsApiDeps": "pitwall.logs.api",
    "PushStream": "pitwall.logs.model",
    "parse_logql": "pitwall.logs.logql:parse_expr",
    "parse_stream_selector": "pitwall.logs.logql",
    "streams_json": "pitwall.logs.api",
}

__all__ = [
    "Direction",
    "LogAppender",
    "LogEntry",
    "LogQLEngine",
    "LogQLError",
    "LogQLResult",
    "LogQuerier",
    "LogSelector",
    "LogSource",
    "LogStream",
    "LogsApiDeps",
    "PushStream",
    "parse_logql",
    "parse_stream_selector",
    "streams_json",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
