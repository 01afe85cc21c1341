"""Builds the releases capability as ``core.lifecycle.Part``s: Flagger's CRDs built into the Kubernetes API
and the Canary controller (leader-gated like the other controllers); and A/B reports (``/api/releases/v1``),
a part of their own because they need only the metrics query interface, not the control plane."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI, KubeClient
from pitwall.metrics import Appender, InstantQuery
from pitwall.releases.abtest_kind import install_abtest_kind
from pitwall.releases.api import releases_router
from pitwall.releases.checks import MetricContext
from pitwall.releases.controller import CanaryController
from pitwall.releases.crds import flagger_crds
from pitwall.releases.gates import Gates
from pitwall.releases.kubectl import Issuer, KubectlRunner
from pitwall.releases.loadtester import PREFIX, GateStore, LoadTester, loadtester_router
from pitwall.releases.recorder import FlaggerMetrics
from pitwall.releases.settings import ReleasesSettings
from pitwall.releases.webhooks import in_process_http
from pitwall.slo import SLOStatusQuery
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.election import Election

__all__ = ["ABTestPart", "ReleasesPart", "build_releases_part", "self_addresses"]


@dataclass
class ReleasesPart:
    """Releases as a part of the server (after the traffic part, whose mesh carries the canary's traffic)."""

    manager: ControllerManager
    controller: CanaryController
    loadtester: LoadTester
    name: str = "releases"

    def components(self) -> Sequence[Component]:
        return [self.manager, _LoadTesterTasks(self.loadtester), self.controller.recorder]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        # Flagger's load tester: server-wide (a Canary's webhook names no tenant).
        return [Mount(loadtester_router(self.loadtester), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        """The load tester's and the controller's flags (Canaries themselves are Kubernetes objects)."""
        releases = getattr(settings, "releases", None)
        if isinstance(releases, ReleasesSettings):
            self.loadtester.configure(releases.loadtester)  # ConfigError (a bad namespace_regexp) keeps the old
            self.controller.configure(releases)

    def register_metrics(self, metrics: SelfMetrics) -> None:
        m = self.manager
        metrics.add_gauges("pitwall_releases_reconciles", "Canary reconciles run.",
                           lambda: float(sum(r.reconciles for r in m.runners)))
        lt = self.loadtester
        metrics.add_gauges("pitwall_releases_loadtester_runs", "Load tester commands run (Flagger's total execs).",
                           lambda: float(lt.runs))
        metrics.add_gauges("pitwall_releases_reconcile_errors", "Canary reconciles that failed (and were retried).",
                           lambda: float(sum(r.errors for r in m.runners)))


@dataclass
class ABTestPart:
    """A/B reports over the metrics pillar's ``instant`` query: routes only, tenant-scoped (each tenant's
    metrics), on with or without the control plane."""

    instant: InstantQuery | None
    client: KubeClient | None = None  # saved experiments (ABTest objects): with the control plane
    name: str = "releases-abtest"

    def components(self) -> Sequence[Component]:
        return []

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(releases_router(self.instant, self.client))]

    async def reload(self, settings: Any) -> None:
        return None

    def register_metrics(self, metrics: SelfMetrics) -> None:
        return None


@dataclass
class _LoadTesterTasks:
    """Stops the load tester's running commands with the server."""

    lt: LoadTester
    name: str = "releases-loadtester"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.lt.stop()


def self_addresses(listen: str) -> frozenset[str]:
    """The Prometheus addresses that name this server (a MetricTemplate's ``address`` queried in process)."""
    host, _, port = listen.rpartition(":")
    hosts = {host, "127.0.0.1", "localhost"} if host in ("", "0.0.0.0", "127.0.0.1", "localhost", "[::]") else {host}
    return frozenset(f"{scheme}://{h}:{port}" for h in hosts if h for scheme in ("http", "https"))


def build_releases_part(kube: KubeAPI, *, instant: InstantQuery | None, changes: ChangeSink | None,
                        listen: str = "", election: Election | None = None,
                        slo_status: SLOStatusQuery | None = None, store: RevStore | None = None,
                        releases: ReleasesSettings | None = None,
                        appender: Appender | None = None, tls: bool = False) -> ReleasesPart:
    """The part over ``kube`` (call before ``kube`` starts: Flagger's CRDs go in). Canaries' metrics are
    queried through ``instant``; every phase change is a change event on ``changes``; with ``election`` (the
    controllers' one) the controller runs only on the leader; promotion gates read ``slo_status`` (and the open
    incidents the composition root hands ``controller.gates`` once the incidents part exists). The load tester
    keeps its gates in ``store`` (the Kubernetes API's store when None) and records gate changes on ``changes``;
    ``releases`` (pitwall.yaml's section) holds its settings and Flagger's controller flags.
    Flagger's own metrics (``releases.recorder``) go to ``appender``. The load tester's kubectl tasks dial
    ``listen`` (over TLS when ``tls``)."""
    kube.add_builtin_crds(flagger_crds())
    install_abtest_kind(kube)  # saved A/B experiments: reports are ABTestPart's routes
    own = self_addresses(listen)
    ctx = MetricContext(instant=instant, client=kube.client, self_addresses=own)
    releases = releases or ReleasesSettings()
    lt = LoadTester(releases.loadtester, GateStore(store or kube.store), _resolver(kube),
                    changes, KubectlRunner(_kube_url(listen, tls), _issuer(kube)))
    # Webhooks to this server's own load tester are served in process (no token needed, none to leak).
    controller = CanaryController(kube.client, metrics=ctx, changes=changes, gates=Gates(slo_status),
                                  recorder=FlaggerMetrics(appender), http=in_process_http(_app(lt), own, PREFIX))
    controller.configure(releases)
    manager = ControllerManager([ControllerRunner(kube.client, controller, workers=2, resync_s=30.0)],
                                election=election)
    return ReleasesPart(manager, controller, lt)


def _app(lt: LoadTester) -> FastAPI:
    """The load tester's routes alone, for the controller's in-process webhook calls."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(loadtester_router(lt))
    return app


def _kube_url(listen: str, tls: bool) -> str:
    """Where kubectl reaches this server's Kubernetes API: its listen address (loopback for a wildcard)."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _issuer(kube: KubeAPI) -> Issuer:
    """A token for the load tester's ServiceAccount, from the TokenRequest machinery."""
    from pitwall.kube import NotFoundError

    async def issue(namespace: str, name: str, seconds: int) -> str:
        try:
            token, _ = await kube.service_accounts.issue(namespace, name, seconds=seconds)
        except NotFoundError:
            raise ValueError(f"releases.loadtester.kubectl_service_account: ServiceAccount {namespace}/{name} "
                             "does not exist") from None
        return token

    return issue


def _resolver(kube: KubeAPI) -> Callable[[str, str], Any]:
    """A Service's clusterIP (the load generator sends ``svc.ns`` URLs there)."""
    from pitwall.kube import KubeError

    async def resolve(namespace: str, name: str) -> str | None:
        try:
            svc = await kube.client.get("v1", "Service", name, namespace)
        except KubeError:
            return None
        ip = (svc.get("spec") or {}).get("clusterIP")
        return ip if isinstance(ip, str) and ip and ip != "None" else None

    return resolve
