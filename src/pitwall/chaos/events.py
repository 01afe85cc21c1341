"""What chaos reports about itself: change events (the incident timeline) and counters (self-metrics)."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import numpy as np

from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.metrics import Appender, SampleBatch

__all__ = ["ChaosReport"]

log = logging.getLogger(__name__)


class ChaosReport:
    """One place every fault, revert and run is reported: a ``ChangeEvent(kind="chaos")`` and a counter."""

    def __init__(self, sink: ChangeSink | None = None, appender: Appender | None = None,
                 tenant: str = "default") -> None:
        self.sink = sink
        self.appender = appender
        self.tenant = tenant
        self.injections: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, action)
        self.recoveries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()
        self.runs: collections.Counter[str] = collections.Counter()  # by final status
        self.halts = 0

    async def _change(self, summary: str, service: str, details: dict[str, Any], who: str = "") -> None:
        if self.sink is None:
            return
        try:
            await self.sink.record(ChangeEvent(kind="chaos", summary=summary, source="pitwall-chaos",
                                               service=service, who=who, details=details))
        except Exception as e:  # the timeline is best effort; the fault itself is tracked in the object
            log.warning("chaos change event not recorded: %s", e)

    async def _sample(self, name: str, labels: dict[str, str], value: float) -> None:
        """The counter's new value into the metric store, so dashboards show when chaos happened."""
        if self.appender is None:
            return
        series = [tuple(sorted({"__name__": name, "job": "pitwall-chaos", **labels}.items()))]
        batch = SampleBatch(series=series, series_idx=np.zeros(1, dtype=np.int64),
                            ts=np.array([int(time.time() * 1000)], dtype=np.int64),
                            values=np.array([value], dtype=np.float64))
        try:
            await self.appender.append(self.tenant, batch)
        except Exception as e:
            log.warning("chaos sample not appended: %s", e)

    async def fault(self, op: str, kind: str, action: str, experiment: str, target: str, *, ok: bool = True,
                    message: str = "") -> None:
        """``op`` is "Apply" or "Recover" (Chaos Mesh's record operations)."""
        key = (kind, action)
        if not ok:
            self.failures[key] += 1
        elif op == "Apply":
            self.injections[key] += 1
        else:
            self.recoveries[key] += 1
        counters = {"Apply": ("pitwall_chaos_injections_total", self.injections),
                    "Recover": ("pitwall_chaos_recoveries_total", self.recoveries)}
        metric, counter = ("pitwall_chaos_failures_total", self.failures) if not ok else counters[op]
        await self._sample(metric, {"kind": kind, "action": action}, float(counter[key]))
        verb = {"Apply": "injected", "Recover": "reverted"}[op] if ok else f"{op.lower()} failed"
        ns, _, rest = target.partition("/")
        await self._change(f"{kind} {action} {verb} on {target} ({experiment})" + (f": {message}" if message else ""),
                           f"{ns}/{rest.split('/')[0]}",
                           {"experiment": experiment, "kind": kind, "action": action, "target": target,
                            "operation": op, "ok": ok, "message": message})

    async def run(self, title: str, status: str, details: dict[str, Any]) -> None:
        self.runs[status] += 1
        await self._sample("pitwall_chaos_runs_total", {"status": status}, float(self.runs[status]))
        await self._change(f"chaos experiment {title!r}: {status}", "", {"status": status, **details})

    async def workflow_aborted(self, namespace: str, name: str, why: str) -> None:
        """A Chaos Mesh Workflow aborted (its running chaos is being deleted; each revert is reported too)."""
        await self._change(f"chaos workflow {namespace}/{name} aborted: {why}", "",
                           {"workflow": f"{namespace}/{name}", "reason": why})

    async def halt(self, who: str, stopped: list[str]) -> None:
        self.halts += 1
        await self._sample("pitwall_chaos_halts_total", {}, float(self.halts))
        await self._change(f"chaos halted: {len(stopped)} experiment(s) paused", "", {"paused": stopped}, who=who)
