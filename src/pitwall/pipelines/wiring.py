"""The pipelines capability as a part of the server: the runner (recovers on start) and its two APIs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeClient
from pitwall.logs import LogAppender
from pitwall.metrics import Appender
from pitwall.pipelines.api import gitlab_hook_router, gitlab_router, native_router
from pitwall.pipelines.api_envs import dora_router, gitlab_env_router
from pitwall.pipelines.api_hooks import Hooks, hooks_router
from pitwall.pipelines.api_schedules import schedules_router
from pitwall.pipelines.canary import KubeCanaryWaiter
from pitwall.pipelines.dora import Incident
from pitwall.pipelines.report import Reporter
from pitwall.pipelines.runner import PipelineRunner
from pitwall.pipelines.schedules import Scheduler
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.pipelines.watch import RepoWatcher
from pitwall.storage.revstore import RevStore

__all__ = ["PipelinesPart", "build_pipelines_part"]


class _Gauges(Collector):
    def __init__(self, runner: PipelineRunner) -> None:
        self.runner = runner

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily("pitwall_pipeline_jobs_running", "Pipeline jobs running or waiting for the pool.",
                                value=float(len(self.runner._running)))


@dataclass
class PipelinesPart:
    runner: PipelineRunner
    watcher: RepoWatcher
    scheduler: Scheduler
    base_url: str
    hooks: Hooks
    name: str = "pipelines"

    def components(self) -> Sequence[Component]:
        return [self.runner, self.watcher, self.scheduler]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(schedules_router(self.runner, self.scheduler.stored, self.base_url), server_wide=True),
                Mount(gitlab_router(self.runner, self.base_url), server_wide=True),
                Mount(gitlab_hook_router(self.watcher), server_wide=True),
                Mount(gitlab_env_router(self.runner, self.base_url), server_wide=True),
                Mount(native_router(self.runner, self.base_url), server_wide=True),
                Mount(hooks_router(self.hooks), server_wide=True),
                Mount(dora_router(self.runner), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        """Watched repositories, schedules and the GitHub secret apply at once; the pool size, limits and
        podman settings from the next start."""
        self.watcher.watch = list(settings.pipelines.watch)
        self.watcher.interval_s = settings.pipelines.watch_interval / 1000
        self.scheduler.schedules = list(settings.pipelines.schedules)
        self.hooks.settings = settings.pipelines

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.registry.register(_Gauges(self.runner))


def build_pipelines_part(store: RevStore, data_dir: Path, settings: PipelinesSettings, *, listen: str,
                         logs: LogAppender | None, metrics: Appender | None,
                         changes: ChangeSink | None,
                         incidents: Callable[[], Awaitable[list[Incident]]] | None = None,
                         kube: KubeClient | None = None) -> PipelinesPart:
    """The runner over ``store`` with its files under ``<data_dir>/pipelines``, reporting to the stores;
    ``incidents`` (all incidents, open and resolved) joins DORA's change failure rate and time to restore;
    with ``kube``, deploy jobs with ``PITWALL_CANARY`` wait for that Canary's verdict."""
    base_url = f"http://{listen}"
    runner = PipelineRunner(store, data_dir / "pipelines", settings, Reporter(logs, metrics, changes),
                            base_url=base_url)
    runner.incidents = incidents
    runner.canary_waiter = KubeCanaryWaiter(kube) if kube is not None else None
    watcher = RepoWatcher(runner, settings.watch, settings.watch_interval / 1000)
    return PipelinesPart(runner, watcher, Scheduler(runner, settings.schedules), base_url,
                         Hooks(watcher, runner, settings))
