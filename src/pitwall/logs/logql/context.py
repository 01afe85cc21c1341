"""What one LogQL query carries while it runs: querier, time range, steps, deadline, stats.

Contract: a ``QueryContext`` is made per query by the engine and handed to
the sample extractor and the stream reader; ``steps`` are the evaluation
timestamps (one for instant queries); ``check_deadline`` raises
``LogQLTimeout`` once the query's time is up. No I/O of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pitwall.logs.logql.errors import LogQLTimeout
from pitwall.logs.logql.result import QueryStats
from pitwall.logs.store import LogQuerier

__all__ = ["QueryContext"]


@dataclass
class QueryContext:
    """One query's querier, range, steps, deadline (monotonic) and stats."""

    querier: LogQuerier
    start_ns: int
    end_ns: int
    step_ns: int
    steps: np.ndarray
    deadline: float
    stats: QueryStats = field(default_factory=QueryStats)

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise LogQLTimeout()
