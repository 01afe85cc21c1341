"""LogQL error types, mapped onto the shared error kinds (``pitwall.core.errors``).

Messages follow Loki's wording, since Grafana shows them to the user verbatim.
"""

from __future__ import annotations

from pitwall.core.errors import BadData, Timeout

__all__ = [
    "LogQLError",
    "LogQLLimitError",
    "LogQLParseError",
    "LogQLPipelineError",
    "LogQLTimeout",
]


class LogQLError(BadData):
    """Base of LogQL errors a client caused (HTTP 400 as Loki answers)."""


class LogQLParseError(LogQLError):
    """The expression does not parse; message as Loki's ``ParseError``."""

    def __init__(self, msg: str, line: int = 0, col: int = 0) -> None:
        if line == 0 and col == 0:
            text = f"parse error : {msg}"
        else:
            text = f"parse error at line {line}, col {col}: {msg}"
        super().__init__(text)
        self.line = line
        self.col = col


class LogQLLimitError(LogQLError):
    """A query limit (entries, series, query length) was exceeded."""


class LogQLPipelineError(LogQLError):
    """A metric query met a sample carrying ``__error__`` (Loki's ``PipelineError``)."""

    def __init__(self, error_type: str, series: str) -> None:
        super().__init__(
            f"pipeline error: '{error_type}' for series: '{series}'.\n"
            "Use a label filter to intentionally skip this error. "
            f'(e.g | __error__!="{error_type}").\n'
            'To skip all potential errors you can match empty errors.(e.g __error__="")\n'
            "The label filter can also be specified after unwrap. "
            '(e.g | unwrap latency | __error__="" )\n'
        )
        self.error_type = error_type


class LogQLTimeout(Timeout):
    """The query ran longer than the engine's timeout."""

    def __init__(self) -> None:
        super().__init__("context deadline exceeded")
