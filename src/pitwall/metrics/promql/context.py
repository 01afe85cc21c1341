"""Per-query evaluation state: the querier, limits, annotations."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pitwall.metrics.promql.ast import Pos
from pitwall.metrics.promql.errors import QueryTimeout, TooManySamples
from pitwall.metrics.store import Querier


@dataclass
class EvalContext:
    querier: Querier
    lookback_ms: int
    max_samples: int
    deadline: float  # time.monotonic() value
    default_step_ms: int
    start_ms: int  # query start/end, for @ start() / end()
    end_ms: int
    step_ms: int = 0  # 0 for instant queries
    is_range: bool = False
    warnings: dict[str, None] = field(default_factory=dict)
    infos: dict[str, None] = field(default_factory=dict)
    loaded: int = 0
    peak: int = 0  # the most samples held at once: loaded plus result points checked by ``hold``

    def warn(self, msg: str, pos: Pos) -> None:
        self.warnings[f"PromQL warning: {msg} ({pos[0]}:{pos[1]})"] = None

    def info(self, msg: str, pos: Pos) -> None:
        self.infos[f"PromQL info: {msg} ({pos[0]}:{pos[1]})"] = None

    def warner(self, pos: Pos) -> Callable[[str], None]:
        return lambda msg: self.warn(msg, pos)

    def informer(self, pos: Pos) -> Callable[[str], None]:
        return lambda msg: self.info(msg, pos)

    def check_timeout(self) -> None:
        if time.monotonic() > self.deadline:
            raise QueryTimeout()

    def load(self, n: int) -> None:
        """Account for ``n`` samples read from storage."""
        self.loaded += n
        if self.loaded > self.max_samples:
            raise TooManySamples()

    def grid(self, series: int, steps: int) -> None:
        """Check, before allocating, that a (series x steps) grid fits the samples limit.

        The evaluator holds step results densely, so a grid costs its cells
        whether or not each holds a point: this bounds memory for any query,
        including subqueries with tiny steps over long ranges.
        """
        if series * steps > self.max_samples:
            raise TooManySamples()

    def hold(self, n: int) -> None:
        """Check that ``n`` result points on top of what was loaded fit the limit."""
        held = self.loaded + n
        if held > self.max_samples:
            raise TooManySamples()
        if held > self.peak:
            self.peak = held
