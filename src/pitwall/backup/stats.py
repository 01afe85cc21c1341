"""Backup figures as metrics: in the server's ``/metrics`` and as series in the metric store (for PromQL and
alert rules), labelled by ``kind`` (self, velero), ``name`` and ``repository``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pitwall.core.labels import labels_from_dict
from pitwall.metrics import Appender, SampleBatch

__all__ = ["GAUGES", "BackupStats"]

log = logging.getLogger(__name__)

_NAMES = {
    "last_success": ("pitwall_backup_last_success_timestamp_seconds",
                     "Unix time of the last backup that completed."),
    "duration": ("pitwall_backup_duration_seconds", "Wall time of the last backup, copy and restic together."),
    "bytes_added": ("pitwall_backup_bytes_added", "Bytes the last backup added to its repository (deduplicated)."),
}
_LABELS = ("kind", "name", "repository")
# Gauges set by name with their own labels: restore drills, repository checks, schedules' intervals.
GAUGES = {
    "pitwall_restore_drill_success": "1 when the restore drill's last run passed, 0 when it failed.",
    "pitwall_restore_drill_duration_seconds": "Wall time of the restore drill's last run: the measured RTO.",
    "pitwall_restore_drill_data_age_seconds": "Restore time minus the snapshot's time in the drill's last run: "
                                              "the measured RPO.",
    "pitwall_backup_repository_check_success": "1 when the last restic check of the repository passed, else 0.",
    "pitwall_backup_schedule_interval_seconds": "Seconds between two runs of a backup schedule (from its cron).",
    "pitwall_backup_schedule_created_timestamp_seconds": "Unix time the backup schedule was created.",
}


@dataclass
class _Figures:
    last_success: float | None = None
    duration: float | None = None
    bytes_added: float | None = None


class BackupStats(Collector):
    """The last figures per (kind, name, repository); appended to ``appender`` every ``interval_s``."""

    def __init__(self, appender: Appender | None = None, *, interval_s: float = 30.0,
                 tenant: str = "default") -> None:
        self.appender = appender
        self.interval_s = interval_s
        self.tenant = tenant
        self._figs: dict[tuple[str, str, str], _Figures] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._task: asyncio.Task[None] | None = None

    def observe(self, kind: str, name: str, repository: str, *, ok: bool, duration_s: float,
                bytes_added: int) -> None:
        f = self._figs.setdefault((kind, name, repository), _Figures())
        f.duration = duration_s
        if ok:
            f.last_success = time.time()
            f.bytes_added = float(bytes_added)
        self._publish_soon()

    def set_gauge(self, name: str, labels: dict[str, str], value: float) -> None:
        """Set one of ``GAUGES`` for ``labels`` (kept until ``drop_gauges``), appended at the next publish."""
        if name not in GAUGES:
            raise KeyError(name)
        self._gauges[(name, tuple(sorted(labels.items())))] = float(value)
        self._publish_soon()

    def drop_gauges(self, **labels: str) -> None:
        """Forget the gauges whose labels include ``labels`` (a deleted drill or schedule)."""
        want = set(labels.items())
        self._gauges = {k: v for k, v in self._gauges.items() if not want <= set(k[1])}

    def gauges(self) -> list[tuple[str, dict[str, str], float]]:
        return [(n, dict(lbl), v) for (n, lbl), v in sorted(self._gauges.items())]

    def _publish_soon(self) -> None:
        if self.appender is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self.publish())

    def figures(self) -> Iterator[tuple[str, tuple[str, str, str], float]]:
        for key, f in sorted(self._figs.items()):
            for attr in _NAMES:
                v = getattr(f, attr)
                if v is not None:
                    yield attr, key, float(v)

    def collect(self):  # type: ignore[no-untyped-def]
        fams = {attr: GaugeMetricFamily(n, doc, labels=list(_LABELS)) for attr, (n, doc) in _NAMES.items()}
        for attr, key, v in self.figures():
            fams[attr].add_metric(list(key), v)
        yield from fams.values()
        by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for n, lbl, v in self.gauges():
            by_name.setdefault(n, []).append((lbl, v))
        for n, series in by_name.items():
            keys = sorted({k for lbl, _ in series for k in lbl})
            fam = GaugeMetricFamily(n, GAUGES[n], labels=keys)
            for lbl, v in series:
                fam.add_metric([lbl.get(k, "") for k in keys], v)
            yield fam

    async def publish(self) -> int:
        """Append the current figures to the metric store; the number of samples."""
        if self.appender is None:
            return 0
        now = int(time.time() * 1000)
        rows = [(labels_from_dict({"__name__": _NAMES[attr][0], **dict(zip(_LABELS, key, strict=True))}), now, v)
                for attr, key, v in self.figures()]
        rows += [(labels_from_dict({"__name__": n, **lbl}), now, v) for n, lbl, v in self.gauges()]
        if rows:
            await self.appender.append(self.tenant, SampleBatch.from_rows(rows))
        return len(rows)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.publish()
            except Exception:
                log.exception("backup metrics append failed")

    name = "backup-stats"

    async def start(self) -> None:
        if self.appender is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
