"""Chaos Monkey's schedule over pitwall's Deployments: per-app opt-in, one kill per group per work day at most.

As Netflix's Chaos Monkey does it (its docs: Termination-behavior,
Configuring-behavior-via-Spinnaker, Configuration-file-format): every work
day (Monday to Friday in ``time_zone``), for each group of an enabled app, a
coin with p = 1/``meanTimeBetweenKillsInWorkDays`` decides whether one
instance of the group is terminated, at a random time between
``start_hour`` and ``end_hour``; a group is never hit again within
``minTimeBetweenKillsInWorkDays`` work days. pitwall's mapping: an app's
clusters are Deployments named by Spinnaker's convention (``app-stack-
detail``), the account is the namespace, the one region is ``pitwall``, an
instance is a pod. Apps opt in with the annotation
``chaosmonkey.pitwall.dev/config`` holding Spinnaker's per-app JSON.
``leashed`` only records what would be done; an open incident (the outage
checker) skips the kill. The day's schedule and each group's last kill are
keys in the state store, so a restart neither forgets nor repeats a kill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from pitwall.chaos.settings import MonkeySettings
from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import KubeClient, NotFoundError
from pitwall.storage.revstore import RevStore

__all__ = ["ANNOTATION", "AppConfig", "ChaosMonkey", "Cluster", "Termination", "app_config", "frigga", "plan_day",
           "workdays_between", "zone"]

ANNOTATION = "chaosmonkey.pitwall.dev/config"
REGION = "pitwall"
ROOT = "/pitwall/chaosmonkey/"
GROUPINGS = ("app", "stack", "cluster")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppConfig:
    """Spinnaker's per-app Chaos Monkey settings (its JSON field names in ``app_config``)."""

    enabled: bool = False
    grouping: str = "cluster"
    mean_days: int = 2  # meanTimeBetweenKillsInWorkDays
    min_days: int = 1  # minTimeBetweenKillsInWorkDays
    regions_independent: bool = True
    exceptions: tuple[tuple[str, str, str, str], ...] = ()  # (account, region, stack, detail); "*" matches all


def app_config(raw: str) -> AppConfig:
    """The annotation's JSON as an AppConfig; ``ValueError`` naming the field."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{ANNOTATION}: not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{ANNOTATION}: must be a JSON object")
    grouping = str(d.get("grouping", "cluster"))
    if grouping not in GROUPINGS:
        raise ValueError(f"{ANNOTATION}: grouping must be one of {', '.join(GROUPINGS)}, not {grouping!r}")
    mean, least = d.get("meanTimeBetweenKillsInWorkDays", 2), d.get("minTimeBetweenKillsInWorkDays", 1)
    if not isinstance(mean, int) or mean < 1:
        raise ValueError(f"{ANNOTATION}: meanTimeBetweenKillsInWorkDays must be a whole number of days, at least 1")
    if not isinstance(least, int) or least < 0:
        raise ValueError(f"{ANNOTATION}: minTimeBetweenKillsInWorkDays must be a whole number of days, at least 0")
    exceptions = []
    for i, exc in enumerate(d.get("exceptions") or []):
        if not isinstance(exc, dict):
            raise ValueError(f"{ANNOTATION}: exceptions[{i}] must be an object")
        exceptions.append(tuple(str(exc.get(k, "")) for k in ("account", "region", "stack", "detail")))
    return AppConfig(bool(d.get("enabled", False)), grouping, mean, least,
                     bool(d.get("regionsAreIndependent", True)), tuple(exceptions))  # type: ignore[arg-type]


def frigga(name: str) -> tuple[str, str, str]:
    """Spinnaker's naming convention: ``app-stack-detail`` (detail may hold more dashes)."""
    app, _, rest = name.partition("-")
    stack, _, detail = rest.partition("-")
    return app, stack, detail


@dataclass(frozen=True)
class Cluster:
    """A Deployment as Chaos Monkey sees it."""

    namespace: str
    name: str
    selector: dict[str, str]

    def group(self, grouping: str) -> str:
        app, stack, _ = frigga(self.name)
        key = {"app": app, "stack": f"{app}-{stack}", "cluster": self.name}[grouping]
        return f"{self.namespace}/{REGION}/{key}"

    def excepted(self, exceptions: Iterable[tuple[str, str, str, str]]) -> bool:
        _, stack, detail = frigga(self.name)
        mine = (self.namespace, REGION, stack, detail)
        return any(all(p == "*" or p == v for p, v in zip(e, mine, strict=True)) for e in exceptions)


@dataclass
class Termination:
    """One planned kill: which group, when (Unix seconds), its Deployments, the app's settings."""

    group: str
    at: float
    namespace: str
    deployments: list[str]
    min_days: int
    done: str = ""  # "", or what happened: "killed <pod>", "leashed", "skipped: <why>"


def zone(name: str) -> dt.tzinfo:
    """``time_zone`` as Chaos Monkey takes it: a tz database name, ``UTC`` or ``Local``."""
    if name == "Local":
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def plan_day(day: dt.date, apps: Iterable[tuple[Cluster, AppConfig]], settings: MonkeySettings,
             rng: random.Random) -> list[Termination]:
    """The day's terminations: none at weekends; per group of each enabled app, heads with p = 1/mean."""
    if day.weekday() >= 5:
        return []
    tz = zone(settings.time_zone)
    start = dt.datetime.combine(day, dt.time(settings.start_hour), tz).timestamp()
    end = (dt.datetime.combine(day, dt.time(0), tz) + dt.timedelta(hours=settings.end_hour)).timestamp()  # wall clock
    groups: dict[str, Termination] = {}
    seen_apps: set[str] = set()
    for cluster, cfg in sorted(apps, key=lambda a: (a[0].namespace, a[0].name)):
        if not cfg.enabled or cluster.excepted(cfg.exceptions):
            continue
        if settings.accounts and cluster.namespace not in settings.accounts:
            continue
        app = f"{cluster.namespace}/{frigga(cluster.name)[0]}"
        if app not in seen_apps and len(seen_apps) >= settings.max_apps:
            continue
        seen_apps.add(app)
        key = cluster.group(cfg.grouping)
        if key in groups:
            groups[key].deployments.append(cluster.name)
            continue
        t = Termination(key, 0.0, cluster.namespace, [cluster.name], cfg.min_days)
        groups[key] = t
        if rng.random() < 1.0 / cfg.mean_days:
            t.at = rng.uniform(start, max(start, end - 1))
    return [t for t in groups.values() if t.at]


def workdays_between(earlier: dt.date, later: dt.date) -> int:
    """Work days after ``earlier`` up to and including ``later``."""
    n, d = 0, earlier
    while d < later:
        d += dt.timedelta(days=1)
        n += d.weekday() < 5
    return n


Outage = Callable[[], Awaitable[str | None]]  # what the outage checker says is going on, or None


class ChaosMonkey:
    """Makes each work day's schedule and carries it out, on the controllers' leader only."""

    name = "chaos-monkey"

    def __init__(self, client: KubeClient, store: RevStore, settings: MonkeySettings, changes: ChangeSink | None, *,
                 leading: Callable[[], bool] = lambda: True, outage: Outage | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 interval_s: float = 30.0) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.changes = changes
        self.leading = leading
        self.outage = outage  # set by server.py once the incidents part exists
        self.clock = clock
        self.rng = rng or random.Random()
        self.interval_s = interval_s
        self.kills = 0
        self.tasks = Supervisor(self.name)

    async def start(self) -> None:
        if self.settings.enabled and self.settings.schedule_enabled:
            self.tasks.spawn(self._loop(), name=self.name)

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _loop(self) -> None:
        while True:
            if self.leading():
                try:
                    await self.tick()
                except Exception:  # one bad tick (API hiccup) must not end the schedule
                    log.exception("chaos monkey tick failed")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> list[Termination]:
        """Plan today if not yet planned, then carry out what is due; returns today's terminations."""
        now = self.clock()
        today = dt.datetime.fromtimestamp(now, zone(self.settings.time_zone)).date()
        key = f"{ROOT}schedule/{today.isoformat()}"
        kv = await self.store.get(key)
        if kv is None:
            plan = plan_day(today, await self._apps(), self.settings, self.rng)
            await self.store.put(key, orjson.dumps([asdict(t) for t in plan]))
        else:
            plan = [Termination(**t) for t in orjson.loads(kv.value)]
        changed = False
        for t in plan:
            if not t.done and t.at <= now:
                t.done = await self._carry_out(t, today)
                changed = True
        if changed:
            await self.store.put(key, orjson.dumps([asdict(t) for t in plan]))
        return plan

    async def _apps(self) -> list[tuple[Cluster, AppConfig]]:
        out = []
        for d in (await self.client.list("apps/v1", "Deployment")).items:
            md = d.get("metadata") or {}
            raw = (md.get("annotations") or {}).get(ANNOTATION)
            if not raw:
                continue
            try:
                cfg = app_config(raw)
            except ValueError as e:
                log.warning("chaos monkey skips %s/%s: %s", md.get("namespace"), md.get("name"), e)
                continue
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            out.append((Cluster(str(md.get("namespace")), str(md.get("name")), dict(sel)), cfg))
        return out

    async def _carry_out(self, t: Termination, today: dt.date) -> str:
        last_kv = await self.store.get(f"{ROOT}last/{t.group}")
        if last_kv is not None:
            last = dt.datetime.fromtimestamp(float(last_kv.value), zone(self.settings.time_zone)).date()
            if workdays_between(last, today) < t.min_days:
                return await self._record(t, f"skipped: last kill in this group on {last}, under "
                                             f"minTimeBetweenKillsInWorkDays {t.min_days}")
        why = await self.outage() if self.outage is not None else None
        if why:
            return await self._record(t, f"skipped: outage ({why})")
        pod = await self._victim(t)
        if pod is None:
            return await self._record(t, "skipped: no running instance in the group")
        if self.settings.leashed:
            return await self._record(t, f"leashed: would kill pod {t.namespace}/{pod}")
        try:
            await self.client.delete("v1", "Pod", pod, t.namespace)
        except NotFoundError:
            return await self._record(t, f"skipped: pod {t.namespace}/{pod} went away first")
        await self.store.put(f"{ROOT}last/{t.group}", str(self.clock()).encode())
        self.kills += 1
        return await self._record(t, f"killed pod {t.namespace}/{pod}")

    async def _victim(self, t: Termination) -> str | None:
        names: list[str] = []
        for dep in t.deployments:
            try:
                d = await self.client.get("apps/v1", "Deployment", dep, t.namespace)
            except NotFoundError:
                continue
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not sel:
                continue
            selector = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
            for p in (await self.client.list("v1", "Pod", t.namespace, label_selector=selector)).items:
                md = p.get("metadata") or {}
                if not md.get("deletionTimestamp") and (p.get("status") or {}).get("phase") == "Running":
                    names.append(str(md["name"]))
        return self.rng.choice(sorted(names)) if names else None

    async def _record(self, t: Termination, outcome: str) -> str:
        if self.changes is not None:
            await self.changes.record(ChangeEvent(
                kind="chaos", summary=f"Chaos Monkey {outcome} (group {t.group})", source="chaos-monkey",
                service=f"{t.namespace}/{t.deployments[0]}", details={"group": t.group, "outcome": outcome}))
        return outcome
