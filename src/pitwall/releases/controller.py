"""The Canary controller: Flagger's scheduler (``pkg/controller/scheduler.go``) for Deployments on the Istio
provider, as a ``Reconciler``.

Flagger runs ``advanceCanary`` on a ticker per Canary every
``analysis.interval``; here the reconcile of a Canary runs it once and asks to
be run again after the interval, and an event in between (the controller's
own status writes, a Deployment changing) waits for the next tick, so a step
is taken once per interval however many events arrive. All progress is in
the Canary's status (phase, canaryWeight, failedChecks, iterations,
lastAppliedSpec) and in the VirtualService's weights, so a restarted
server resumes where the stored status says.

What the CRD schema cannot reject (a missing target Deployment, an unknown
MetricTemplate, weights that cannot work) is reported in a ``Ready``
condition (status False, the field's path in the message) and a Warning
Event; the analysis waits until it is fixed. Deleting a Canary (finalizer
``finalizer.flagger.app``) gives the target Deployment the primary's
replicas back, points the apex Service at it and removes the routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.controllers import record_event
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import Conflict, KubeClient, NotFoundError
from pitwall.releases import autoscaler, configs, router, workload
from pitwall.releases.affinity import Affinity
from pitwall.releases.alerts import Alerter
from pitwall.releases.checks import MetricContext, run_checks
from pitwall.releases.gates import Gates
from pitwall.releases.judge import JudgeResult
from pitwall.releases.model import (
    ADVANCING,
    API_VERSION,
    CANARY,
    FINALIZER,
    METRIC_TEMPLATE,
    TOTAL_WEIGHT,
    CanaryView,
    Phase,
    fmt_time,
    parse_time,
)
from pitwall.releases.recorder import COMPLETED, SKIPPED, FlaggerMetrics
from pitwall.releases.settings import ReleasesSettings
from pitwall.releases.verdicts import (
    CONDITION,
    JUDGEMENT,
    judged_condition,
    judgement_annotation,
    pass_message,
)
from pitwall.releases.webhooks import (
    HttpFactory,
    WebhookError,
    call_event_webhook,
    call_webhook,
    default_http,
)

__all__ = ["COMPONENT", "CanaryController"]

log = logging.getLogger(__name__)
COMPONENT = "flagger"
Obj = dict[str, Any]

_CONDITION_TEXT = {
    Phase.INITIALIZING: ("Unknown", "New {kind} detected, starting initialization."),
    Phase.INITIALIZED: ("True", "{kind} initialization completed."),
    Phase.WAITING: ("Unknown", "Waiting for approval."),
    Phase.WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
    Phase.PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
    Phase.PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
    Phase.FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
    Phase.SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
    Phase.FAILED: ("False", "Canary analysis failed, {kind} scaled to zero."),
}


class _Invalid(Exception):
    """The Canary cannot be run as it is: ``reason`` and a message naming the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def promoted_condition(cd: CanaryView, phase: str, now: str) -> list[Obj] | None:
    """Flagger's MakeStatusConditions: the new ``Promoted`` condition list, or None when unchanged."""
    status, text = _CONDITION_TEXT.get(phase, ("Unknown", "New {kind} detected, starting initialization."))
    kind = str(cd.target_ref.get("kind") or "Deployment")
    cur = next((c for c in cd.status.get("conditions") or [] if c.get("type") == "Promoted"), None)
    if cur is not None and cur.get("status") == status and cur.get("reason") == phase:
        return None
    cond = {"type": "Promoted", "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": phase, "message": text.format(kind=kind)}
    if cur is not None and cur.get("status") == status:
        cond["lastTransitionTime"] = cur.get("lastTransitionTime") or now
    return [cond]


class CanaryController:
    """Reconciles ``flagger.app/v1beta1`` Canaries (a ``controllers.Reconciler``)."""

    name = COMPONENT
    primary: tuple[str, str] = (API_VERSION, CANARY)
    secondary: Sequence[tuple[str, str]] = (("apps/v1", "Deployment"),)

    def __init__(self, client: KubeClient, *, metrics: MetricContext, changes: ChangeSink | None = None,
                 http: HttpFactory = default_http, clock: Callable[[], float] = time.monotonic,
                 gates: Gates | None = None, recorder: FlaggerMetrics | None = None) -> None:
        self.client = client
        self.metrics = metrics
        self.gates = gates or Gates()
        self.changes = changes
        self.http = http
        self.clock = clock
        self._by_target: dict[str, set[str]] = {}  # "ns/deployment" -> Canary keys
        self._due: dict[str, float] = {}  # next tick of each Canary (monotonic seconds)
        self.alerts = Alerter(client)
        self.event_webhook = ""  # releases.event_webhook
        self.include_label_prefix: list[str] = []  # releases.include_label_prefix
        self.recorder = recorder or FlaggerMetrics(None)

    def configure(self, settings: ReleasesSettings) -> None:
        """Flagger's controller flags from ``releases``: the global notifier, cluster name, event webhook, the
        label prefixes copied to primaries."""
        self.alerts.configure(settings.notifier, settings.cluster_name)
        self.event_webhook = settings.event_webhook
        self.include_label_prefix = list(settings.include_label_prefix)

    # ---- Reconciler ---------------------------------------------------------------------------------------

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        ns, name = str(m.get("namespace") or "default"), str(m.get("name") or "")
        if kind == CANARY:
            key = f"{ns}/{name}"
            target = str(((obj.get("spec") or {}).get("targetRef") or {}).get("name") or "")
            for keys in self._by_target.values():
                keys.discard(key)
            if target:
                self._by_target.setdefault(f"{ns}/{target}", set()).add(key)
            return [key]
        base = name.removesuffix("-primary")
        return sorted(self._by_target.get(f"{ns}/{name}", set()) | self._by_target.get(f"{ns}/{base}", set()))

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            obj = await self.client.get(API_VERSION, CANARY, name, ns)
        except NotFoundError:
            self._due.pop(key, None)
            return None
        cd = CanaryView(obj)
        if cd.meta.get("deletionTimestamp"):
            await self._finalize(cd)
            self._due.pop(key, None)
            return None
        if FINALIZER not in (cd.meta.get("finalizers") or []):
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = [*(cd.meta.get("finalizers") or []), FINALIZER]
            await self.client.update(new)
            return None  # the update's event runs the first tick
        interval = cd.interval_s()
        now = self.clock()
        due = self._due.get(key)
        if due is not None and now < due:
            return due - now
        self._due[key] = now + interval
        await self.advance(cd)
        return interval

    # ---- status, events ------------------------------------------------------------------------------------

    async def _write_status(self, cd: CanaryView, change: Callable[[Obj, Obj], None]) -> CanaryView:
        """Apply ``change(status, fresh_object)`` to the stored Canary's status (retrying on conflicts)."""
        for _ in range(10):
            fresh = await self.client.get(API_VERSION, CANARY, cd.name, cd.namespace)
            new = copy.deepcopy(fresh)
            status = new.setdefault("status", {})
            change(status, fresh)
            try:
                return CanaryView(await self.client.update_status(new))
            except Conflict:
                await asyncio.sleep(0.01)
        raise RuntimeError(f"canary {cd.name}.{cd.namespace} status update kept conflicting")

    async def _phase_change(self, cd: CanaryView, old: str, new: str, details: Obj) -> None:
        if old == new or self.changes is None:
            return
        try:
            await self.changes.record(ChangeEvent(
                kind="release", summary=f"Canary {cd.name}.{cd.namespace}: {old or '(new)'} -> {new}",
                source=COMPONENT, service=f"{cd.namespace}/{cd.target}", who=COMPONENT,
                details={"canary": cd.key, "phase": new, "previousPhase": old, **details}))
        except Exception as e:  # the timeline is best effort; the release goes on
            log.warning("could not record change event", extra={"canary": cd.key, "error": repr(e)})

    async def _sync(self, cd: CanaryView, target: Obj, phase: str, *, weight: int = 0, failed: int = 0,
                    iterations: int = 0) -> CanaryView:
        """Flagger's SyncStatus: phase and counters, lastAppliedSpec = the target template's hash."""
        h = workload.compute_hash((target.get("spec") or {}).get("template") or {})
        now = fmt_time(datetime.now(UTC))
        try:
            tracked: dict[str, str] | None = configs.tracked(
                await configs.target_configs(self.client, cd.namespace, target))
        except configs.ConfigError:
            tracked = None  # keep what the status holds; the next tick reports the missing config

        def change(st: Obj, fresh: Obj) -> None:
            conds = promoted_condition(CanaryView(fresh), phase, now)
            st.update(phase=phase, canaryWeight=weight, failedChecks=failed, iterations=iterations,
                      lastAppliedSpec=h, lastTransitionTime=now)
            if phase == Phase.INITIALIZED:
                st["lastPromotedSpec"] = h
            if tracked is not None:
                st["trackedConfigs"] = tracked
            if conds is not None:
                st["conditions"] = [*_others(st), *conds]

        out = await self._write_status(cd, change)
        await self._phase_change(cd, cd.phase, phase, {"canaryWeight": weight})
        return out

    async def _set_phase(self, cd: CanaryView, phase: str) -> CanaryView:
        """Flagger's SetStatusPhase (counters reset outside Progressing, Waiting and Promoting)."""
        now = fmt_time(datetime.now(UTC))

        def change(st: Obj, fresh: Obj) -> None:
            view = CanaryView(fresh)
            st["phase"] = phase
            st["lastTransitionTime"] = now
            if phase not in (Phase.PROGRESSING, Phase.WAITING, Phase.PROMOTING):
                st["canaryWeight"] = 0
                st["iterations"] = view.iterations - 1 if phase == Phase.WAITING_PROMOTION else 0
            if phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
                st["lastPromotedSpec"] = st.get("lastAppliedSpec", "")
            conds = promoted_condition(view, phase, now)
            if conds is not None:
                st["conditions"] = [*_others(st), *conds]

        out = await self._write_status(cd, change)
        await self._phase_change(cd, cd.phase, phase, {"canaryWeight": out.status.get("canaryWeight", 0)})
        return out

    async def _set(self, cd: CanaryView, **fields: int) -> CanaryView:
        """Set counters (failedChecks, canaryWeight, iterations) as Flagger's SetStatus* do."""
        now = fmt_time(datetime.now(UTC))

        def change(st: Obj, fresh: Obj) -> None:
            st.update(fields)
            st["lastTransitionTime"] = now

        out = await self._write_status(cd, change)
        if "canaryWeight" in fields and self.changes is not None and fields["canaryWeight"] != cd.status.get(
                "canaryWeight"):
            await self._weight_change(cd, fields["canaryWeight"])
        return out

    async def _weight_change(self, cd: CanaryView, weight: int) -> None:
        assert self.changes is not None
        try:
            await self.changes.record(ChangeEvent(
                kind="release", summary=f"Canary {cd.name}.{cd.namespace}: canary weight {weight}",
                source=COMPONENT, service=f"{cd.namespace}/{cd.target}", who=COMPONENT,
                details={"canary": cd.key, "phase": cd.phase, "canaryWeight": weight}))
        except Exception as e:
            log.warning("could not record change event", extra={"canary": cd.key, "error": repr(e)})

    async def _set_ready(self, cd: CanaryView, problem: _Invalid | None) -> CanaryView:
        """The ``Ready`` condition: False with the reason and the field while the Canary cannot run."""
        cur = next((c for c in cd.status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if problem is None and (cur is None or cur.get("status") == "True"):
            return cd
        want = ("False", problem.reason, str(problem)) if problem else ("True", "Valid", "The Canary can be run.")
        if cur is not None and (cur.get("status"), cur.get("reason"), cur.get("message")) == want:
            return cd
        now = fmt_time(datetime.now(UTC))

        def change(st: Obj, fresh: Obj) -> None:
            st.setdefault("phase", cd.phase or Phase.INITIALIZING)
            others = [c for c in st.get("conditions") or [] if c.get("type") != "Ready"]
            st["conditions"] = [*others, {"type": "Ready", "status": want[0], "reason": want[1],
                                          "message": want[2], "lastUpdateTime": now, "lastTransitionTime": now}]

        return await self._write_status(cd, change)

    async def _event(self, cd: CanaryView, type_: str, message: str) -> None:
        """A Kubernetes Event (reason Synced, as Flagger's recorder) and the ``event`` webhooks."""
        log.info(message, extra={"canary": cd.key})
        await record_event(self.client, cd.obj, type_, "Synced", message, COMPONENT)
        hooks = [h for h in cd.webhooks if h.get("type") == "event"]
        if not hooks and self.event_webhook:  # Flagger's -event-webhook, for Canaries with none of their own
            hooks = [{"name": "events", "url": self.event_webhook}]
        for hook in hooks:
            try:
                await call_event_webhook(self.http, cd, hook, message, type_)
            except WebhookError as e:
                log.warning("error sending event to webhook", extra={"canary": cd.key, "error": str(e)})

    async def _alert(self, cd: CanaryView, message: str, metadata: bool, severity: str) -> None:
        """Flagger's alert(): the Canary's AlertProviders whose severity matches."""
        await self.alerts.alert(cd, message, metadata, severity)

    async def _hooks(self, cd: CanaryView, kind: str, phase: str) -> tuple[bool, dict[str, Any] | None, str]:
        """Call every hook of ``kind``; (all passed, the first that refused, its reason)."""
        for hook in cd.webhooks:
            if (hook.get("type") or "rollout") == kind:
                try:
                    await call_webhook(self.http, cd, phase, hook)
                except WebhookError as e:
                    return False, hook, str(e)
        return True, None, ""

    async def _primary_hpa(self, cd: CanaryView, *, init: bool) -> bool:
        """Flagger's ReconcilePrimaryScaler (with ``autoscalerRef``); False (and a Warning) when it cannot."""
        if not cd.autoscaler_ref:
            return True
        try:
            await autoscaler.reconcile_primary(self.client, cd, init=init)
        except autoscaler.AutoscalerError as e:
            await self._event(cd, "Warning", str(e))
            return False
        return True

    async def _revision_changed(self, cd: CanaryView, target: Obj) -> bool:
        """A new pod template or a changed tracked ConfigMap/Secret (Flagger's HasTargetChanged ||
        HaveDependenciesChanged)."""
        if workload.spec_changed(cd, target):
            return True
        return configs.changed(cd, await configs.target_configs(self.client, cd.namespace, target))

    async def _set_routes(self, cd: CanaryView, primary: int, canary: int, mirrored: bool) -> CanaryView:
        """Write the split; the session-affinity cookies it uses go to the status (as Flagger's do)."""
        return await self._keep_cookies(cd, await router.set_routes(self.client, cd, primary, canary, mirrored))

    async def _keep_cookies(self, cd: CanaryView, state: Affinity) -> CanaryView:
        if state == Affinity.of(cd.status):
            return cd
        fields = {k: v for k, v in state.status_fields().items() if v}
        gone = [k for k, v in state.status_fields().items() if not v]

        def change(st: Obj, fresh: Obj) -> None:
            st.update(fields)
            for k in gone:
                st.pop(k, None)

        return await self._write_status(cd, change)

    # ---- the loop ------------------------------------------------------------------------------------------

    async def _validate(self, cd: CanaryView) -> tuple[Obj, str, str]:
        """The target Deployment and its selector label, or ``_Invalid`` naming the field."""
        problems = cd.problems()
        if problems:
            raise _Invalid("InvalidSpec", "; ".join(problems))
        try:
            target = await self.client.get("apps/v1", "Deployment", cd.target, cd.namespace)
        except NotFoundError:
            raise _Invalid("TargetNotFound", f"spec.targetRef.name: Not found: deployment.apps \"{cd.target}\" "
                                             f"not found in namespace {cd.namespace}") from None
        try:
            label, value = workload.selector_label(cd, target)
        except workload.TargetError as e:
            raise _Invalid("InvalidTarget", f"spec.targetRef.name: {e}") from None
        for i, m in enumerate(cd.metrics):
            ref = m.get("templateRef") or {}
            if not ref:
                continue
            ns = str(ref.get("namespace") or cd.namespace)
            try:
                await self.client.get(API_VERSION, METRIC_TEMPLATE, str(ref.get("name") or ""), ns)
            except NotFoundError:
                raise _Invalid("MetricTemplateNotFound",
                               f"spec.analysis.metrics[{i}].templateRef.name: Not found: metrictemplate.flagger.app "
                               f"\"{ref.get('name')}\" not found in namespace {ns}") from None
        return target, label, value

    @staticmethod
    def _since(cd: CanaryView) -> datetime | None:
        return parse_time(cd.status.get("lastTransitionTime"))

    async def advance(self, cd: CanaryView) -> None:
        """One tick of Flagger's advanceCanary; Flagger's metrics are written after it."""
        try:
            await self._advance(cd, time.perf_counter())
        except configs.ConfigError as e:  # a required ConfigMap/Secret is missing: wait for it, as Flagger
            await self._event(cd, "Warning", str(e))
        finally:
            await self.recorder.flush()

    async def _advance(self, cd: CanaryView, begin: float) -> None:
        if cd.suspended:
            await self._event(cd, "Normal", "skipping canary run as object is suspended")
            return
        try:
            target, label, value = await self._validate(cd)
        except _Invalid as e:
            await self._set_ready(cd, e)
            await self._event(cd, "Warning", str(e))
            return
        cd = await self._set_ready(cd, None)
        initializing = cd.phase in ("", Phase.INITIALIZING)
        if cd.phase == "":
            cd = await self._set_phase(cd, Phase.INITIALIZING)
        await router.reconcile_services(self.client, cd, label, value)
        primary = await workload.ensure_primary(self.client, cd, target, label, value, self.include_label_prefix)
        if not await self._primary_hpa(cd, init=True):
            return
        if initializing:
            ready, why, _ = workload.readiness(primary, threshold=cd.primary_ready_threshold)
            if not ready:
                await self._event(cd, "Warning", f"{cd.primary_workload}.{cd.namespace} not ready: {why}")
                return
            await workload.scale(self.client, cd.namespace, cd.target, 0)
        cd = await self._keep_cookies(cd, await router.reconcile_routing(self.client, cd))
        if initializing:
            await self._sync(cd, target, Phase.INITIALIZED)
            await self._event(cd, "Normal", f"Initialization done! {cd.name}.{cd.namespace}")
            await self._alert(cd, f"New {cd.target_ref.get('kind') or 'Deployment'} detected, initialization "
                                  "completed.", True, "info")
            return
        if cd.phase not in ADVANCING and not await self._revision_changed(cd, target):
            return
        await self._analyse(cd, target, label, value, primary, begin)

    async def _analyse(self, cd: CanaryView, target: Obj, label: str, value: str, primary: Obj,
                       begin: float) -> None:
        if not cd.skip_analysis:
            ready, why, retriable = workload.readiness(primary, cd.progress_deadline_s, self._since(cd),
                                                       cd.primary_ready_threshold)
            if not ready:
                if not retriable and cd.phase in (Phase.PROMOTING, Phase.FINALISING):
                    await self._failed_promotion(cd, why)
                elif not retriable:
                    await self._event(cd, "Warning", f"Rolling back {cd.name}.{cd.namespace} progress deadline "
                                                     f"exceeded {why}")
                    await self._alert(cd, f"Progress deadline exceeded {why}", False, "error")
                    await self._rollback(cd, target)
                else:
                    await self._event(cd, "Warning", f"{cd.primary_workload}.{cd.namespace} not ready: {why}")
                return
        routes = await router.get_routes(self.client, cd)
        if cd.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING):
            await self._start(cd, target)
            return
        if cd.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION) and await self._revision_changed(cd, target):
            await self._event(cd, "Normal", f"New revision detected! Restarting analysis for "
                                            f"{cd.target}.{cd.namespace}")
            await self._set_routes(cd, TOTAL_WEIGHT, 0, False)
            await self._sync(cd, target, Phase.PROGRESSING)
            return
        target = await self.client.get("apps/v1", "Deployment", cd.target, cd.namespace)
        ready, why, retriable = workload.readiness(target, cd.progress_deadline_s, self._since(cd),
                                                   cd.canary_ready_threshold)
        if not ready:
            if not retriable:
                await self._event(cd, "Warning", f"Rolling back {cd.name}.{cd.namespace} progress deadline "
                                                 f"exceeded {why}")
                await self._alert(cd, f"Progress deadline exceeded {why}", False, "error")
                await self._rollback(cd, target)
            else:
                await self._event(cd, "Warning", f"{cd.target}.{cd.namespace} not ready: {why}")
            return
        if cd.skip_analysis:
            await self._skip(cd, target, label, value)
            return
        if cd.phase in (Phase.PROGRESSING, Phase.WAITING, Phase.WAITING_PROMOTION):
            ok, _, _ = await self._rollback_hooks(cd)
            if ok:
                await self._event(cd, "Warning", f"Rolling back {cd.name}.{cd.namespace} manual webhook invoked")
                await self._alert(cd, "Rolling back manual webhook invoked", False, "warn")
                await self._rollback(cd, target)
                return
        if cd.phase == Phase.PROMOTING:
            if not await self._primary_hpa(cd, init=False):
                return
            await self._promotion_shift(cd, routes)
            return
        if cd.phase == Phase.FINALISING:
            await self._finalising(cd)
            return
        if cd.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION) and \
                int(cd.status.get("failedChecks") or 0) >= cd.threshold:
            await self._rollback(cd, target)
            return
        try:
            await self._step(cd, target, label, value, routes)
        finally:  # Flagger's deferred SetDuration: the ticks that got to the checks, from the tick's start
            self.recorder.set_duration(cd.target, cd.namespace, time.perf_counter() - begin)

    async def _step(self, cd: CanaryView, target: Obj, label: str, value: str, routes: router.Routes) -> None:
        """Checks, then the strategy's next step."""
        if not await self._step_checks(cd, routes):
            return
        strategy = cd.strategy()
        if strategy == "ab-testing":
            await self._run_ab(cd, target, label, value)
        elif strategy == "blue-green":
            await self._run_blue_green(cd, target, label, value, routes)
        elif cd.next_step_weight(routes.canary) > 0:
            if not routes.mirrored and cd.phase not in (Phase.PROMOTING, Phase.WAITING_PROMOTION, Phase.FINALISING):
                ok, hook, _ = await self._hooks(cd, "confirm-traffic-increase", Phase.PROGRESSING)
                if not ok:
                    assert hook is not None
                    await self._event(cd, "Warning", f"Halt {cd.name}.{cd.namespace} advancement waiting for "
                                                     f"traffic increase approval {hook.get('name')}")
                    if not hook.get("muteAlert"):
                        await self._alert(cd, "Canary traffic increase is waiting for approval.", False, "warn")
                    return
            await self._run_canary(cd, target, label, value, routes)

    async def _rollback_hooks(self, cd: CanaryView) -> tuple[bool, dict[str, Any] | None, str]:
        for hook in cd.webhooks:
            if hook.get("type") == "rollback":
                try:
                    await call_webhook(self.http, cd, cd.phase, hook)
                except WebhookError:
                    await self._event(cd, "Normal", f"Rollback hook {hook.get('name')} not signaling a rollback")
                    continue
                await self._event(cd, "Warning", f"Rollback check {hook.get('name')} passed")
                return True, hook, ""
        return False, None, ""

    async def _start(self, cd: CanaryView, target: Obj) -> None:
        """A new revision (Flagger's checkCanaryStatus): confirm-rollout, scale the target up, Progressing."""
        ok, hook, _ = await self._hooks(cd, "confirm-rollout", cd.phase)
        if not ok:
            assert hook is not None
            if cd.phase != Phase.WAITING:
                await self._set_phase(cd, Phase.WAITING)
                await self._event(cd, "Warning", f"Halt {cd.name}.{cd.namespace} advancement waiting for approval "
                                                 f"{hook.get('name')}")
                if not hook.get("muteAlert"):
                    await self._alert(cd, "Canary is waiting for approval.", False, "warn")
            return
        for h in cd.webhooks:
            if h.get("type") == "confirm-rollout":
                await self._event(cd, "Normal", f"Confirm-rollout check {h.get('name')} passed")
        await self._event(cd, "Normal", f"New revision detected! Scaling up {cd.target}.{cd.namespace}")
        await self._alert(cd, "New revision detected, progressing canary analysis.", True, "info")
        if cd.autoscaler_ref:  # Flagger's ScaleFromZero: the HPA's minReplicas; it scales from there
            replicas = await autoscaler.min_replicas(self.client, cd)
        else:
            primary = await self.client.get("apps/v1", "Deployment", cd.primary_workload, cd.namespace)
            replicas = int((primary.get("spec") or {}).get("replicas") or 1)
        await workload.scale(self.client, cd.namespace, cd.target, replicas)
        await self._sync(cd, target, Phase.PROGRESSING)

    async def _step_checks(self, cd: CanaryView, routes: router.Routes) -> bool:
        """Pre-rollout hooks on the first step, else rollout hooks and metric checks; a failure counts."""
        failed = int(cd.status.get("failedChecks") or 0)
        if routes.canary == 0 and int(cd.status.get("iterations") or 0) == 0 and not (cd.mirror and routes.mirrored):
            await self._event(cd, "Normal", f"Starting canary analysis for {cd.target}.{cd.namespace}")
            ok, hook, why = await self._hooks(cd, "pre-rollout", Phase.PROGRESSING)
            if not ok:
                assert hook is not None
                await self._event(cd, "Warning", f"Halt {cd.name}.{cd.namespace} advancement pre-rollout check "
                                                 f"{hook.get('name')} failed {why}")
                await self._set(cd, failedChecks=failed + 1)
                return False
            for h in cd.webhooks:
                if h.get("type") == "pre-rollout":
                    await self._event(cd, "Normal", f"Pre-rollout check {h.get('name')} passed")
            return True
        ok, hook, why = await self._hooks(cd, "rollout", Phase.PROGRESSING)
        if not ok:
            assert hook is not None
            await self._event(cd, "Warning", f"Halt {cd.name}.{cd.namespace} advancement external check "
                                             f"{hook.get('name')} failed {why}")
            await self._set(cd, failedChecks=failed + 1)
            return False
        result = await run_checks(self.metrics, cd)
        for metric, v in result.values:
            self.recorder.set_analysis(cd.target, cd.namespace, metric, v)
        if result.judgements:
            await self._record_judgements(cd, result.judgements)
        for type_, msg in result.events:
            await self._event(cd, type_, msg)
        if result.ok:
            return True
        if not result.wait:
            await self._set(cd, failedChecks=failed + 1)
        return False

    async def _record_judgements(self, cd: CanaryView, judgements: list[tuple[str, JudgeResult]]) -> None:
        """The judge's verdicts: the ``Judged`` condition, the result annotation, a Normal Event when it passed."""
        now = fmt_time(datetime.now(UTC))

        def change(st: Obj, fresh: Obj) -> None:
            cur = next((c for c in st.get("conditions") or [] if c.get("type") == CONDITION), None)
            others = [c for c in st.get("conditions") or [] if c.get("type") != CONDITION]
            st["conditions"] = [*others, judged_condition(judgements, now, cur)]

        await self._write_status(cd, change)
        text = judgement_annotation(judgements, now, int(cd.status.get("canaryWeight") or 0))
        with contextlib.suppress(Conflict):  # the annotation only mirrors the status written above
            await self.client.modify(await self.client.get(API_VERSION, CANARY, cd.name, cd.namespace),
                                     lambda o: o["metadata"].setdefault("annotations", {}).__setitem__(JUDGEMENT,
                                                                                                      text),
                                     attempts=10)
        for name, r in judgements:
            if r.classification == "Pass" and not r.inconclusive:
                await self._event(cd, "Normal", pass_message(cd.name, cd.namespace, name, r))

    async def _confirm_promotion(self, cd: CanaryView) -> bool:
        ok, hook, _ = await self._hooks(cd, "confirm-promotion", Phase.PROGRESSING)
        if ok:
            for h in cd.webhooks:
                if h.get("type") == "confirm-promotion":
                    await self._event(cd, "Normal", f"Confirm-promotion check {h.get('name')} passed")
            closed = await self.gates.closed(cd.meta.get("annotations") or {})
            if closed is None:
                return True
            why = f"promotion gate: {closed}"
        else:
            assert hook is not None
            why = f"promotion approval {hook.get('name')}"
        if cd.phase != Phase.WAITING_PROMOTION:
            await self._set_phase(cd, Phase.WAITING_PROMOTION)
            await self._event(cd, "Warning", f"Halt {cd.name}.{cd.namespace} advancement waiting for {why}")
            if hook is not None and not hook.get("muteAlert"):
                await self._alert(cd, "Canary promotion is waiting for approval.", False, "warn")
        else:
            await self._set(cd, iterations=cd.iterations - 1)
        return False

    async def _promote(self, cd: CanaryView, target: Obj, label: str, value: str) -> None:
        await self._event(cd, "Normal", f"Copying {cd.target}.{cd.namespace} template spec to "
                                        f"{cd.primary_workload}.{cd.namespace}")
        await workload.promote(self.client, cd, target, label, value, self.include_label_prefix)
        await self._set_phase(cd, Phase.PROMOTING)

    async def _run_canary(self, cd: CanaryView, target: Obj, label: str, value: str, routes: router.Routes) -> None:
        primary_w, canary_w, mirrored = routes.primary, routes.canary, routes.mirrored
        if canary_w < cd.max_weight():
            step = cd.next_step_weight(canary_w)
            if cd.mirror and canary_w == 0:
                if not mirrored:
                    mirrored, primary_w, canary_w = True, TOTAL_WEIGHT, 0
                else:
                    mirrored, primary_w, canary_w = False, TOTAL_WEIGHT - step, step
            else:
                primary_w, canary_w = max(primary_w - step, 0), min(canary_w + step, TOTAL_WEIGHT)
            await self._set_routes(cd, primary_w, canary_w, mirrored)
            await self._set(cd, canaryWeight=canary_w)
            await self._event(cd, "Normal", f"Advance {cd.name}.{cd.namespace} canary weight {canary_w}")
            return
        if not await self._confirm_promotion(cd):
            return
        await self._promote(cd, target, label, value)

    async def _run_ab(self, cd: CanaryView, target: Obj, label: str, value: str) -> None:
        done = int(cd.status.get("iterations") or 0)
        if cd.iterations > done:
            await self._set_routes(cd, 0, TOTAL_WEIGHT, False)
            await self._set(cd, iterations=done + 1)
            await self._event(cd, "Normal", f"Advance {cd.name}.{cd.namespace} canary iteration "
                                            f"{done + 1}/{cd.iterations}")
            return
        if not await self._confirm_promotion(cd):
            return
        if cd.iterations == done:
            await self._promote(cd, target, label, value)

    async def _run_blue_green(self, cd: CanaryView, target: Obj, label: str, value: str,
                              routes: router.Routes) -> None:
        done = int(cd.status.get("iterations") or 0)
        if cd.iterations > done:
            if cd.mirror and not routes.mirrored:
                await self._set_routes(cd, TOTAL_WEIGHT, 0, True)
            await self._set(cd, iterations=done + 1)
            await self._event(cd, "Normal", f"Advance {cd.name}.{cd.namespace} canary iteration "
                                            f"{done + 1}/{cd.iterations}")
            return
        if not await self._confirm_promotion(cd):
            return
        if cd.iterations == done:
            await self._event(cd, "Normal", "Stop traffic mirroring and route all traffic to canary" if cd.mirror
                              else "Routing all traffic to canary")
            await self._set_routes(cd, 0, TOTAL_WEIGHT, False)
            await self._set(cd, iterations=done + 1)
            return
        if cd.iterations < done:
            await self._promote(cd, target, label, value)

    async def _promotion_shift(self, cd: CanaryView, routes: router.Routes) -> None:
        if cd.step_weight_promotion == 0:
            await self._event(cd, "Normal", "Routing all traffic to primary")
            await self._set_routes(cd, TOTAL_WEIGHT, 0, False)
            await self._set_phase(cd, Phase.FINALISING)
            return
        if routes.canary > 0:
            primary_w = min(routes.primary + cd.step_weight_promotion, TOTAL_WEIGHT)
            canary_w = max(routes.canary - cd.step_weight_promotion, 0)
            await self._set_routes(cd, primary_w, canary_w, False)
            await self._event(cd, "Normal", f"Advance {cd.name}.{cd.namespace} primary weight {primary_w}")
            if primary_w == TOTAL_WEIGHT:
                await self._set_phase(cd, Phase.FINALISING)
            else:
                await self._set(cd, canaryWeight=canary_w)

    async def _finalising(self, cd: CanaryView) -> None:
        await workload.scale(self.client, cd.namespace, cd.target, 0)
        done = await self._set_phase(cd, Phase.SUCCEEDED)
        self.recorder.inc_successes(cd.target, cd.namespace, cd.strategy(), COMPLETED)
        await self._hooks_post(done, Phase.SUCCEEDED)
        await self._event(done, "Normal", f"Promotion completed! Scaling down {cd.target}.{cd.namespace}")
        await self._alert(done, "Canary analysis completed successfully, promotion finished.", False, "info")

    async def _hooks_post(self, cd: CanaryView, phase: str) -> None:
        ok, hook, why = await self._hooks(cd, "post-rollout", phase)
        if not ok:
            assert hook is not None
            await self._event(cd, "Warning", f"Post-rollout hook {hook.get('name')} failed {why}")
            return
        for h in cd.webhooks:
            if h.get("type") == "post-rollout":
                await self._event(cd, "Normal", f"Post-rollout check {h.get('name')} passed")

    async def _skip(self, cd: CanaryView, target: Obj, label: str, value: str) -> None:
        await self._set_routes(cd, TOTAL_WEIGHT, 0, False)
        await self._event(cd, "Normal", f"Copying {cd.target}.{cd.namespace} template spec to "
                                        f"{cd.primary_workload}.{cd.namespace}")
        await workload.promote(self.client, cd, target, label, value, self.include_label_prefix)
        if not await self._primary_hpa(cd, init=False):
            return
        await workload.scale(self.client, cd.namespace, cd.target, 0)
        done = await self._set_phase(cd, Phase.SUCCEEDED)
        self.recorder.inc_successes(cd.target, cd.namespace, cd.strategy(), SKIPPED)
        await self._hooks_post(done, Phase.SUCCEEDED)
        await self._event(done, "Normal", f"Promotion completed! Canary analysis was skipped for "
                                          f"{cd.target}.{cd.namespace}")
        await self._alert(done, "Canary analysis was skipped, promotion finished.", False, "info")

    async def _rollback(self, cd: CanaryView, target: Obj) -> None:
        failed = int(cd.status.get("failedChecks") or 0)
        if failed >= cd.threshold:
            await self._event(cd, "Warning", f"Rolling back {cd.name}.{cd.namespace} failed checks threshold "
                                             f"reached {failed}")
            await self._alert(cd, f"Failed checks threshold reached {failed}", False, "error")
        await self._set_routes(cd, TOTAL_WEIGHT, 0, False)
        await self._event(cd, "Warning", f"Canary failed! Scaling down {cd.name}.{cd.namespace}")
        await workload.scale(self.client, cd.namespace, cd.target, 0)
        done = await self._sync(cd, target, Phase.FAILED)
        self.recorder.inc_failures(cd.target, cd.namespace, cd.strategy(), COMPLETED)
        await self._hooks_post(done, Phase.FAILED)

    async def _failed_promotion(self, cd: CanaryView, why: str) -> None:
        await self._event(cd, "Warning", f"Promotion of {cd.target}.{cd.namespace} failed, primary not ready: {why}")
        await self._alert(cd, f"Promotion failed, primary not ready: {why}", False, "error")
        await self._set_routes(cd, 0, TOTAL_WEIGHT, False)
        target = await self.client.get("apps/v1", "Deployment", cd.target, cd.namespace)
        done = await self._sync(cd, target, Phase.FAILED, weight=TOTAL_WEIGHT)
        self.recorder.inc_failures(cd.target, cd.namespace, cd.strategy(), COMPLETED)
        await self._hooks_post(done, Phase.FAILED)

    # ---- deletion ------------------------------------------------------------------------------------------

    async def _finalize(self, cd: CanaryView) -> None:
        """Give the target back its replicas and the apex Service, remove the routing, drop the finalizer."""
        if FINALIZER not in (cd.meta.get("finalizers") or []):
            return
        try:
            primary = await self.client.get("apps/v1", "Deployment", cd.primary_workload, cd.namespace)
            replicas = int((primary.get("spec") or {}).get("replicas") or 1)
        except NotFoundError:
            replicas = 1
        try:
            target = await self.client.get("apps/v1", "Deployment", cd.target, cd.namespace)
            label, value = workload.selector_label(cd, target)
            await workload.scale(self.client, cd.namespace, cd.target, replicas)
            await self._point_apex(cd, label, value)
        except (NotFoundError, workload.TargetError):
            pass  # nothing to give back
        await router.delete_routing(self.client, cd)
        if cd.autoscaler_ref:
            await autoscaler.delete_primary(self.client, cd)
        await self._event(cd, "Normal", f"Canary {cd.name}.{cd.namespace} deleted: {cd.target} restored to "
                                        f"{replicas} replicas, routing removed")
        await self._phase_change(cd, cd.phase, Phase.TERMINATED, {})
        self.recorder.forget(cd.target, cd.namespace)
        await self.recorder.flush()
        with contextlib.suppress(NotFoundError, Conflict):  # still conflicting: the next delete event retries
            await self.client.modify(await self.client.get(API_VERSION, CANARY, cd.name, cd.namespace),
                                     _drop_finalizer, attempts=10)

    async def _point_apex(self, cd: CanaryView, label: str, value: str) -> None:
        apex, _, _ = cd.service_names()
        try:
            svc = await self.client.get("v1", "Service", apex, cd.namespace)
        except NotFoundError:
            return
        new = copy.deepcopy(svc)
        new["spec"]["selector"] = {label: value}
        # the apex Service outlives the Canary: drop the owner reference the garbage collector would follow
        new["metadata"]["ownerReferences"] = [r for r in svc["metadata"].get("ownerReferences") or []
                                              if r.get("kind") != CANARY]
        await self.client.update(new)


def _drop_finalizer(obj: Obj) -> None:
    obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER]


def _others(st: Obj) -> list[Obj]:
    return [c for c in st.get("conditions") or [] if c.get("type") != "Promoted"]
