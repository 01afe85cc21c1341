"""What pipelines tell the rest of pitwall: job logs into the log store, durations and status counts into the
metric store, finished pipelines and deploys onto the change-event stream."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from pitwall.core.labels import labels_from_dict
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.logs import LogAppender, LogEntry, PushStream
from pitwall.metrics import Appender, SampleBatch

__all__ = ["LOG_JOB", "JobLog", "Reporter"]

log = logging.getLogger(__name__)
LOG_JOB = "pitwall-pipelines"
MAX_BATCH_LINES = 1000


class JobLog:
    """One job's lines on their way to the log store, in order, with strictly increasing timestamps."""

    def __init__(self, reporter: Reporter, labels: dict[str, str]) -> None:
        self.reporter = reporter
        self.labels = labels_from_dict({"job": LOG_JOB, **labels})
        self.pending: list[LogEntry] = []
        self.last_ns = 0

    def add(self, lines: list[str]) -> None:
        for line in lines:
            ts = max(time.time_ns(), self.last_ns + 1)
            self.last_ns = ts
            self.pending.append(LogEntry(ts, line))

    async def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH_LINES], self.pending[MAX_BATCH_LINES:]
            await self.reporter.push_log(self.labels, batch)


class Reporter:
    """Best effort: a store that refuses is logged, the pipeline goes on (its own state is in the revstore)."""

    def __init__(self, logs: LogAppender | None, metrics: Appender | None, changes: ChangeSink | None,
                 tenant: str = DEFAULT_TENANT) -> None:
        self.logs = logs
        self.metrics = metrics
        self.changes = changes
        self.tenant = tenant

    def job_log(self, pipeline: dict[str, Any], project: dict[str, Any], job_name: str) -> JobLog:
        return JobLog(self, {"pipeline": str(pipeline["id"]), "job_name": job_name, "project": project["name"],
                             "ref": pipeline["ref"]})

    async def push_log(self, labels: tuple[tuple[str, str], ...], entries: list[LogEntry]) -> None:
        if self.logs is None:
            return
        try:
            await self.logs.push(self.tenant, [PushStream(labels, entries)])
        except Exception as e:
            log.warning("pipeline job log not stored: %s", e)

    async def samples(self, rows: list[tuple[str, dict[str, str], float]]) -> None:
        """``(name, labels, value)`` samples now."""
        if self.metrics is None or not rows:
            return
        series = [labels_from_dict({"__name__": n, "job": LOG_JOB, **lbl}) for n, lbl, _ in rows]
        now = int(time.time() * 1000)
        batch = SampleBatch(series=series, series_idx=np.arange(len(rows), dtype=np.int64),
                            ts=np.full(len(rows), now, dtype=np.int64),
                            values=np.array([v for _, _, v in rows], dtype=np.float64))
        try:
            await self.metrics.append(self.tenant, batch)
        except Exception as e:
            log.warning("pipeline samples not appended: %s", e)

    async def change(self, ev: ChangeEvent) -> None:
        if self.changes is None:
            return
        try:
            await self.changes.record(ev)
        except Exception as e:
            log.warning("pipeline change event not recorded: %s", e)
