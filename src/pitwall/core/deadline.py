"""The running query's deadline, for code that holds no query context.

An engine enters ``scope(deadline, error)`` around one query's evaluation,
in the thread that evaluates it; loops that may run long over data they do
not own (label values in the series index, arrays of lines in a regex
filter) call ``check()`` every few thousand items and so stop with the
engine's own timeout error. Outside a scope ``check()`` does nothing, so the
same code serves ingest and config paths, which have no deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["check", "scope"]

_CURRENT: ContextVar[tuple[float, Callable[[], Exception]] | None] = ContextVar("pitwall_deadline", default=None)


@contextmanager
def scope(deadline: float, error: Callable[[], Exception]) -> Iterator[None]:
    """Make ``deadline`` (a ``time.monotonic()`` value) current; past it ``check()`` raises ``error()``."""
    token = _CURRENT.set((deadline, error))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check() -> None:
    """Raise the current scope's error when its deadline has passed."""
    cur = _CURRENT.get()
    if cur is not None and time.monotonic() > cur[0]:
        raise cur[1]()
