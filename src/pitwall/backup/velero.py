"""Velero's model on restic: storage locations, what a Backup selects, the tarball layout, hooks.

A BackupStorageLocation with ``provider: restic`` names ``config.resticRepoPrefix``;
each namespace a Backup covers goes to its own restic repository
``<prefix>/<namespace>`` (as Velero's restic integration lays them out), one
snapshot per Backup and namespace, tagged ``velero.io/backup=<name>``,
``velero.io/storage-location=<bsl>`` and ``velero.io/namespace=<ns>``. The
password is the Secret ``velero-repo-credentials``, key ``repository-password``,
in the location's namespace.

A snapshot holds the selected objects in Velero's tarball layout
(``resources/<resource>[.<group>]/namespaces/<ns>/<name>.json``), the pods'
emptyDir/hostPath volumes (``volumes/<pod>/<volume>/...``) and
``pitwall-results.json`` (per-item errors and warnings). The cluster-scoped
objects a Backup holds (``ClusterScope``) go to one more repository,
``<prefix>/_cluster`` (no namespace can be named so), as
``resources/<resource>[.<group>]/cluster/<name>.json``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pitwall.backup.restic import Restic
from pitwall.kube import KubeClient, NotFoundError

__all__ = [
    "API_VERSION", "BOTH_SELECTORS", "CLUSTER_KEY", "OLD_AND_NEW_FILTERS", "RESTORE_HIGH", "RESTORE_LOW",
    "ClusterScope", "Hook", "LocationError", "PodHost", "Selection", "backup_tags", "hooks_for_pod", "label_selectors",
    "location_of", "ordered_names", "parse_duration", "parse_time", "repository_for", "resource_dir",
    "restore_order", "rfc3339", "run_hook", "selector_string", "sort_by_order", "uses_old_filters",
    "validate_backup",
]

Obj = dict[str, Any]
API_VERSION = "velero.io/v1"
SECRET_NAME = "velero-repo-credentials"
SECRET_KEY = "repository-password"
DEFAULT_TTL = timedelta(hours=720)
DEFAULT_VALIDATION = timedelta(minutes=1)
SNAPSHOTS_ANNOTATION = "backup.pitwall.dev/snapshots"  # JSON {namespace (or CLUSTER_KEY): snapshot id}
# the repository and snapshots-annotation key of the cluster-scoped objects: not a DNS label, so no namespace
CLUSTER_KEY = "_cluster"
CLUSTER_DIR = "cluster"  # Velero's ClusterScopedDir: resources/<resource>/cluster/<name>.json
STATS_ANNOTATION = "backup.pitwall.dev/stats"  # JSON {bytes, bytesAdded, durationSeconds} of the run
LABEL_BACKUP_NAME = "velero.io/backup-name"
LABEL_RESTORE_NAME = "velero.io/restore-name"
LABEL_SCHEDULE_NAME = "velero.io/schedule-name"
LABEL_STORAGE_LOCATION = "velero.io/storage-location"
# never backed up: what only describes the moment (Events, the metrics API's usage samples, which cannot be
# created either) or belongs to the backup machinery itself
SKIPPED_GROUPS = frozenset({"velero.io", "events.k8s.io", "metrics.k8s.io"})
SKIPPED_KINDS = frozenset({("", "Event")})
# Velero's non-restorable resources that are cluster-scoped: backed up (for inspection), never restored
NON_RESTORABLE = frozenset({"nodes", "csinodes.storage.k8s.io", "volumeattachments.storage.k8s.io"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


class LocationError(Exception):
    """The storage location cannot be used (missing, read-only, no password, not restic)."""


class PodHost(Protocol):
    """The node's side of backups (``pitwall.node.Kubelet``): where a hook runs, where volumes live."""

    def exec_context(self, namespace: str, name: str, container: str | None = None) \
            -> tuple[dict[str, str], Path] | None: ...

    def volume_dirs(self, namespace: str, name: str) -> dict[str, Path]: ...


def parse_duration(text: str | None, default: timedelta) -> timedelta:
    """A Go duration as Velero's fields take it (``720h0m0s``, ``10m``, ``30s``)."""
    if not text:
        return default
    parts = _DURATION.findall(str(text))
    if not parts or "".join(a + u for a, u in parts) != str(text).replace(" ", ""):
        raise ValueError(f"invalid duration {text!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return timedelta(seconds=sum(float(a) * scale[u] for a, u in parts))


async def location_of(client: KubeClient, namespace: str, name: str | None) -> Obj:
    """The BackupStorageLocation ``name`` in ``namespace`` (by default the one marked ``default``, else the one
    named ``default``)."""
    if name:
        try:
            return await client.get(API_VERSION, "BackupStorageLocation", name, namespace)
        except NotFoundError:
            raise LocationError(f'backup storage location "{name}" not found in namespace {namespace}') from None
    items = (await client.list(API_VERSION, "BackupStorageLocation", namespace)).items
    marked = [b for b in items if (b.get("spec") or {}).get("default")]
    named = [b for b in items if b["metadata"]["name"] == "default"]
    if marked or named:
        return (marked or named)[0]
    raise LocationError(f"no default backup storage location in namespace {namespace}")


async def repository_for(client: KubeClient, bsl: Obj, namespace: str, *, writing: bool) -> Restic:
    """The restic repository of ``namespace`` below ``bsl``'s prefix, with the location's password."""
    spec = bsl.get("spec") or {}
    name = bsl["metadata"]["name"]
    if spec.get("provider") != "restic":
        raise LocationError(f'backup storage location "{name}": provider {spec.get("provider")!r} is not '
                            'supported (pitwall stores backups with provider: restic)')
    prefix = str((spec.get("config") or {}).get("resticRepoPrefix") or "")
    if not prefix:
        raise LocationError(f'backup storage location "{name}": config.resticRepoPrefix is required')
    if writing and spec.get("accessMode") == "ReadOnly":
        raise LocationError(f'backup storage location "{name}" is read-only')
    ns = bsl["metadata"]["namespace"]
    try:
        secret = await client.get("v1", "Secret", SECRET_NAME, ns)
    except NotFoundError:
        raise LocationError(f'secret "{SECRET_NAME}" not found in namespace {ns}') from None
    raw = (secret.get("data") or {}).get(SECRET_KEY)
    password = base64.b64decode(raw).decode() if raw else (secret.get("stringData") or {}).get(SECRET_KEY, "")
    if not password:
        raise LocationError(f'secret "{SECRET_NAME}" in namespace {ns} has no key {SECRET_KEY}')
    return Restic(f"{prefix.rstrip('/')}/{namespace}", password)


def backup_tags(backup: str, location: str, namespace: str) -> list[str]:
    return [f"velero.io/backup={backup}", f"velero.io/storage-location={location}", f"velero.io/namespace={namespace}"]


def resource_dir(group: str, plural: str) -> str:
    """Velero's group-resource directory name: ``pods``, ``deployments.apps``."""
    return plural if not group else f"{plural}.{group}"


def selector_string(sel: Obj | None) -> str | None:
    """A ``metav1.LabelSelector`` as a label selector string (None selects everything)."""
    if not sel:
        return None
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), ",".join(e.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(str(op), f"{key}"))
    return ",".join(parts) or None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(name, p) for p in patterns)


def _globbed(names: set[str], patterns: Sequence[str]) -> bool:
    """Whether one of ``names`` (a resource's plural, kind, short names, each bare and ``.<group>``-qualified)
    matches one of ``patterns`` (Velero's scoped filters take globs: ``*``, ``config*``)."""
    return any(p == "*" or any(fnmatch.fnmatchcase(n, p) for n in names) for p in patterns)


@dataclass
class Selection:
    """What a Backup's (or Restore's) include/exclude fields select.

    Namespaced resources follow ``includedResources``/``excludedResources`` (Velero's old filters) or, when
    the Backup uses the newer ones, ``includedNamespaceScopedResources``/``excludedNamespaceScopedResources``:
    an excluded resource (or ``*``) never, else every one when none are included or ``*``, else the listed."""

    included_namespaces: list[str] = field(default_factory=lambda: ["*"])
    excluded_namespaces: list[str] = field(default_factory=list)
    included_resources: list[str] = field(default_factory=lambda: ["*"])
    excluded_resources: list[str] = field(default_factory=list)
    included_ns_scoped: list[str] = field(default_factory=list)  # includedNamespaceScopedResources
    excluded_ns_scoped: list[str] = field(default_factory=list)  # excludedNamespaceScopedResources

    @classmethod
    def of(cls, spec: Obj) -> Selection:
        return cls(list(spec.get("includedNamespaces") or ["*"]), list(spec.get("excludedNamespaces") or []),
                   list(spec.get("includedResources") or ["*"]), list(spec.get("excludedResources") or []),
                   list(spec.get("includedNamespaceScopedResources") or []),
                   list(spec.get("excludedNamespaceScopedResources") or []))

    @property
    def scoped(self) -> bool:
        """Whether the newer namespace-scoped filters are in use (then the old resource lists are not)."""
        return bool(self.included_ns_scoped or self.excluded_ns_scoped)

    def namespace(self, ns: str) -> bool:
        return _matches(ns, self.included_namespaces) and not _matches(ns, self.excluded_namespaces)

    @staticmethod
    def _names(group: str, plural: str, kind: str, short: Iterable[str]) -> set[str]:
        names = {plural, kind.lower(), *short}
        return names | {f"{n}.{group}" for n in names} if group else names

    def resource(self, group: str, plural: str, kind: str, short: Iterable[str] = ()) -> bool:
        names = self._names(group, plural, kind, short)
        inc = "*" in self.included_resources or bool(names & set(self.included_resources))
        return inc and not names & set(self.excluded_resources)

    def namespaced(self, group: str, plural: str, kind: str, short: Iterable[str] = ()) -> bool:
        """Whether a namespaced resource is taken (Velero's ``ScopeIncludesExcludes.ShouldInclude`` with the
        newer filters, ``resource`` with the old ones)."""
        if not self.scoped:
            return self.resource(group, plural, kind, short)
        names = self._names(group, plural, kind, short)
        if _globbed(names, self.excluded_ns_scoped):
            return False
        return not self.included_ns_scoped or _globbed(names, self.included_ns_scoped)

    def namespaced_everything(self) -> bool:
        """Whether every namespaced resource is taken (Velero's ``IncludeEverything`` of the filter in use)."""
        if self.scoped:
            return not self.excluded_ns_scoped and self.included_ns_scoped in ([], ["*"])
        return not self.excluded_resources and self.included_resources == ["*"]


# Velero's validation messages (pkg/controller/backup_controller.go, pkg/util/collections), word for word
OLD_AND_NEW_FILTERS = (
    "include-resources, exclude-resources and include-cluster-resources are old filter parameters.\n"
    "include-cluster-scoped-resources, exclude-cluster-scoped-resources, include-namespace-scoped-resources and "
    "exclude-namespace-scoped-resources are new filter parameters.\nThey cannot be used together")
BOTH_SELECTORS = "encountered labelSelector as well as orLabelSelectors in backup spec, only one can be specified"
_ONLY_STAR = "{} list must either contain '*' only, or a non-empty list of items"


def _includes_excludes(inc: Sequence[str], exc: Sequence[str], *, scoped: bool) -> list[str]:
    """Velero's ``ValidateIncludesExcludes`` (``scoped``: ``ValidateScopedIncludesExcludes``)."""
    includes, excludes = set(inc), set(exc)
    errs = []
    if len(includes) > 1 and "*" in includes:
        errs.append(_ONLY_STAR.format("includes"))
    if scoped:
        if len(excludes) > 1 and "*" in excludes:
            errs.append(_ONLY_STAR.format("excludes"))
        if includes and "*" in excludes:
            errs.append("when exclude is '*', include cannot have value")
    elif "*" in excludes:
        errs.append("excludes list cannot contain '*'")
    errs += [f"excludes list cannot contain an item in the includes list: {x}" for x in sorted(excludes & includes)]
    return errs


def uses_old_filters(spec: Obj) -> bool:
    """Velero's ``UseOldResourceFilters``: includedResources, excludedResources or includeClusterResources."""
    return spec.get("includeClusterResources") is not None or bool(spec.get("includedResources")) \
        or bool(spec.get("excludedResources"))


def validate_backup(spec: Obj) -> list[str]:
    """A Backup spec's validation errors, as Velero's backup controller words them (empty when valid)."""
    errs: list[str] = []
    new = any(spec.get(k) for k in ("includedClusterScopedResources", "excludedClusterScopedResources",
                                     "includedNamespaceScopedResources", "excludedNamespaceScopedResources"))
    if uses_old_filters(spec) and new:
        errs.append(OLD_AND_NEW_FILTERS)
    if uses_old_filters(spec):
        errs += [f"Invalid included/excluded resource lists: {e}" for e in _includes_excludes(
            spec.get("includedResources") or [], spec.get("excludedResources") or [], scoped=False)]
    else:
        for scope, inc, exc in (("cluster", "includedClusterScopedResources", "excludedClusterScopedResources"),
                                ("namespace", "includedNamespaceScopedResources",
                                 "excludedNamespaceScopedResources")):
            errs += [f"Invalid {scope}-scoped included/excluded resource lists: {e}" for e in _includes_excludes(
                spec.get(inc) or [], spec.get(exc) or [], scoped=True)]
    errs += [f"Invalid included/excluded namespace lists: {e}" for e in _includes_excludes(
        spec.get("includedNamespaces") or [], spec.get("excludedNamespaces") or [], scoped=False)]
    if spec.get("orLabelSelectors") is not None and spec.get("labelSelector") is not None:
        errs.append(BOTH_SELECTORS)
    return errs


def label_selectors(spec: Obj) -> list[str | None]:
    """The selector strings a Backup lists each resource with: each of ``orLabelSelectors`` (their union is
    backed up), else ``labelSelector`` (None: everything)."""
    ors = spec.get("orLabelSelectors")
    if ors:
        return [selector_string(s) for s in ors]
    return [selector_string(spec.get("labelSelector"))]


def ordered_names(spec: Obj, plural: str) -> list[str]:
    """``orderedResources[plural]``: the ``ns/name`` (cluster-scoped: ``name``) items backed up first, in order."""
    raw = (spec.get("orderedResources") or {}).get(plural) or ""
    return [x.strip() for x in str(raw).split(",") if x.strip()]


def sort_by_order(items: list[Obj], order: Sequence[str]) -> list[Obj]:
    """Velero's ``sortResourcesByOrder``: the items named in ``order`` first in that order, then the rest as
    they came."""
    if not order:
        return items
    def full(o: Obj) -> str:
        m = o["metadata"]
        return f"{m['namespace']}/{m['name']}" if m.get("namespace") else str(m["name"])
    by_name = {full(o): o for o in items}
    first = [by_name.pop(n) for n in order if n in by_name]
    return first + [o for o in items if full(o) in by_name]


# Velero's server defaults for --restore-resource-priorities (pkg/cmd/server/config): the high list first, then
# the other resources of the backup by name, then the low list.
RESTORE_HIGH = (
    "customresourcedefinitions", "namespaces", "storageclasses", "volumesnapshotclass.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io", "volumesnapshots.snapshot.storage.k8s.io",
    "datauploads.velero.io", "persistentvolumes", "persistentvolumeclaims", "clusterroles", "roles",
    "serviceaccounts", "clusterrolebindings", "rolebindings", "secrets", "configmaps", "limitranges",
    "priorityclasses", "pods", "replicasets.apps", "clusterclasses.cluster.x-k8s.io", "endpoints", "services")
RESTORE_LOW = ("clusterbootstraps.run.tanzu.vmware.com", "clusters.cluster.x-k8s.io",
               "clusterresourcesets.addons.cluster.x-k8s.io", "apps.kappctrl.k14s.io",
               "packageinstalls.packaging.carvel.dev")
_FULL_NAMES = {"customresourcedefinitions": "customresourcedefinitions.apiextensions.k8s.io",
               "storageclasses": "storageclasses.storage.k8s.io",
               "clusterroles": "clusterroles.rbac.authorization.k8s.io", "roles": "roles.rbac.authorization.k8s.io",
               "clusterrolebindings": "clusterrolebindings.rbac.authorization.k8s.io",
               "rolebindings": "rolebindings.rbac.authorization.k8s.io",
               "priorityclasses": "priorityclasses.scheduling.k8s.io"}


def restore_order(resource_dirs: Iterable[str]) -> list[str]:
    """The backup's resource directories in Velero's restore order (``getOrderedResources`` with the default
    priorities; a bare name in the lists is resolved to its group as Velero's discovery does)."""
    high = [_FULL_NAMES.get(r, r) for r in RESTORE_HIGH]
    low = [_FULL_NAMES.get(r, r) for r in RESTORE_LOW]
    have = set(resource_dirs)
    rest = sorted(have - set(high) - set(low))
    return [r for r in (*high, *rest, *low) if r in have]


@dataclass
class ClusterScope:
    """Which cluster-scoped resources a Backup (or Restore) takes, as Velero v1.x decides.

    ``includeClusterResources`` (with includedResources/excludedResources): ``false`` none; ``true`` every
    one the resource filters select; unset, every one only when all namespaces are covered, else only the
    Namespace objects of the covered namespaces and what the backed-up items need (their CRDs). With
    ``includedClusterScopedResources``/``excludedClusterScopedResources`` (Velero's newer filters) instead:
    the excluded never, the included (``*`` for all) plus the Namespace objects, and every one when neither
    is given and all namespaces and all namespaced resources are covered (the newer filters are in use when
    any of the four scoped lists is given, the namespace-scoped pair included)."""

    include: bool | None = None
    included: list[str] = field(default_factory=list)  # includedClusterScopedResources
    excluded: list[str] = field(default_factory=list)  # excludedClusterScopedResources
    all_namespaces: bool = True
    scoped: bool = False  # the newer filters are in use
    full: bool = True  # all namespaces and every namespaced resource are covered

    @classmethod
    def of(cls, spec: Obj) -> ClusterScope:
        inc = spec.get("includeClusterResources")
        sel = Selection.of(spec)
        every = sel.included_namespaces == ["*"] and not sel.excluded_namespaces
        included = list(spec.get("includedClusterScopedResources") or [])
        excluded = list(spec.get("excludedClusterScopedResources") or [])
        return cls(inc if isinstance(inc, bool) else None, included, excluded, every,
                   bool(included or excluded) or sel.scoped, every and sel.namespaced_everything())

    def direct(self, sel: Selection, group: str, plural: str, kind: str, short: Iterable[str] = ()) -> bool:
        """Whether every object of this cluster-scoped resource is taken (Namespaces: of covered namespaces)."""
        names = Selection._names(group, plural, kind, short)
        is_ns = group == "" and plural == "namespaces"
        if self.scoped:
            if _globbed(names, self.excluded):
                return False
            if not self.included and not self.excluded and self.full:
                return True
            return _globbed(names, self.included) or is_ns
        if self.include is False:
            return False
        if self.include is None and not self.all_namespaces and not is_ns:
            return False
        return sel.resource(group, plural, kind, short)

    def related(self, sel: Selection, group: str, plural: str, kind: str) -> bool:
        """Whether an object of this resource that a backed-up item needs (a custom resource's CRD) is taken:
        not when cluster resources are off or the resource is excluded (Velero's ``ShouldExclude``)."""
        names = Selection._names(group, plural, kind, ())
        if self.scoped:
            return not _globbed(names, self.excluded)
        if self.include is False or names & set(sel.excluded_resources):
            return False
        return self.include is True or sel.resource(group, plural, kind)

    def restores(self) -> bool:
        """On a Restore: whether its cluster-scoped items are restored (Velero: not when
        ``includeClusterResources`` is false, nor when unset and the restore selects namespaces)."""
        return self.include is True or (self.include is None and self.all_namespaces)


@dataclass(frozen=True)
class Hook:
    """One exec hook for one pod: pre or post, from the pod's annotations or the Backup's ``spec.hooks``."""

    phase: str  # pre, post
    command: tuple[str, ...]
    container: str | None
    on_error: str  # Fail, Continue
    timeout_s: float
    source: str  # "annotation" or the hook's name


def _annotation_hook(ann: dict[str, str], phase: str) -> Hook | None:
    prefix = f"{phase}.hook.backup.velero.io/"
    raw = ann.get(prefix + "command")
    if not raw:
        return None
    try:
        parsed = json.loads(raw) if raw.strip().startswith("[") else [raw]
    except ValueError:
        parsed = [raw]
    timeout = parse_duration(ann.get(prefix + "timeout"), timedelta(seconds=30)).total_seconds()
    return Hook(phase, tuple(str(x) for x in parsed), ann.get(prefix + "container") or None,
                ann.get(prefix + "on-error") or "Fail", timeout, "annotation")


def hooks_for_pod(pod: Obj, spec_hooks: Obj | None) -> list[Hook]:
    """The pod's pre and post hooks: its annotations when it has any (as Velero, they win), else every
    ``spec.hooks.resources`` entry whose namespaces and label selector match it."""
    m = pod.get("metadata") or {}
    ann = m.get("annotations") or {}
    own = [h for h in (_annotation_hook(ann, "pre"), _annotation_hook(ann, "post")) if h is not None]
    if own:
        return own
    out: list[Hook] = []
    labels = m.get("labels") or {}
    for res in (spec_hooks or {}).get("resources") or []:
        sel = Selection(list(res.get("includedNamespaces") or ["*"]), list(res.get("excludedNamespaces") or []),
                        list(res.get("includedResources") or ["*"]), list(res.get("excludedResources") or []))
        if not sel.namespace(str(m.get("namespace"))) or not sel.resource("", "pods", "Pod", ("po",)):
            continue
        want = (res.get("labelSelector") or {}).get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in want.items()):
            continue
        for phase in ("pre", "post"):
            for h in res.get(phase) or []:
                ex = h.get("exec") or {}
                out.append(Hook(phase, tuple(str(x) for x in ex.get("command") or []), ex.get("container") or None,
                                str(ex.get("onError") or "Fail"),
                                parse_duration(ex.get("timeout"), timedelta(seconds=30)).total_seconds(),
                                str(res.get("name") or "hook")))
    return out


async def run_hook(host: PodHost | None, pod: Obj, hook: Hook) -> str | None:
    """Run ``hook`` in the pod's container environment; None on success, else why it failed."""
    m = pod["metadata"]
    if not hook.command:
        return "hook has no command"
    ctx = host.exec_context(m["namespace"], m["name"], hook.container) if host is not None else None
    if ctx is None:
        return f"container {hook.container or '(first)'} of pod {m['namespace']}/{m['name']} is not running"
    env, cwd = ctx
    try:
        proc = await asyncio.create_subprocess_exec(*hook.command, env=env, cwd=str(cwd),
                                                    stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return f"{hook.command[0]}: {e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), hook.timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return f"hook timed out after {hook.timeout_s:g}s"
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()[-500:]
        return f"command exited with {proc.returncode}" + (f": {text}" if text else "")
    return None


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
