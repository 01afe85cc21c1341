"""LogQL: Loki's query language over a ``LogQuerier``.

``LogQLEngine`` runs range and instant queries (log and metric
expressions) and returns a ``LogQLResult`` that renders Loki's ``data``
JSON object. ``parse_expr`` validates an expression (the ruler and the CLI
use it); ``parse_stream_selector`` returns the matchers of ``{...}``.
"""

from __future__ import annotations

from typing import Any

from pitwall.core.labels import Matcher
from pitwall.logs.logql.engine import LogQLEngine
from pitwall.logs.logql.errors import (
    LogQLError,
    LogQLLimitError,
    LogQLParseError,
    LogQLPipelineError,
    LogQLTimeout,
)
from pitwall.logs.logql.parser import parse_expr as _parse_expr
from pitwall.logs.logql.parser import parse_matchers
from pitwall.logs.logql.result import LogQLResult

__all__ = [
    "LogQLEngine",
    "LogQLError",
    "LogQLLimitError",
    "LogQLParseError",
    "LogQLPipelineError",
    "LogQLResult",
    "LogQLTimeout",
    "parse_expr",
    "parse_stream_selector",
]


def parse_stream_selector(expr: str) -> list[Matcher]:
    """The matchers of a stream selector such as ``{app="api", env=~"prod|dev"}``."""
    return parse_matchers(expr)


def parse_expr(expr: str) -> Any:
    """Parse and validate a LogQL expression into its AST (``pitwall.logs.logql.ast``)."""
    return _parse_expr(expr)
