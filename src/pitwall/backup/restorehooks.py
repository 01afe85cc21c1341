"""Velero's restore hooks on the pods a Restore creates (``Restore.spec.hooks.resources[].postHooks``).

``init``: the hook's ``initContainers`` are added to the restored pod before its own init containers
(after ``restore-wait``, which stays first so the volume data is back before they run), as Velero's
``InitContainerRestoreHookHandler``. ``exec``: once the pod is created, each command runs in its container
when that container is running (``waitTimeout``: how long to wait for it, 0 = as long as the restore waits for
pods; ``execTimeout``: how long it may run, default 30s). Every failed hook is an error of the Restore (as
Velero's ``waitExec``); ``onError: Fail`` (the default) skips that pod's remaining exec hooks, ``Continue``
runs them. A hook applies to a pod when its namespaces (the pod's namespace after ``namespaceMapping``), its
resources (pods) and its ``labelSelector`` take it. The pod annotations ``post.hook.restore.velero.io/*``
(command, container, on-error, exec-timeout, wait-timeout) and ``init.hook.restore.velero.io/*``
(container-image, container-name, command) replace the spec's hooks for that pod, as in Velero.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pitwall.backup.podvolumes import RESTORE_WAIT
from pitwall.backup.velero import Hook, PodHost, Selection, parse_duration, run_hook

__all__ = ["ExecHook", "add_init_hooks", "exec_hooks", "run_exec_hooks"]

Obj = dict[str, Any]
DEFAULT_EXEC_TIMEOUT = timedelta(seconds=30)  # Velero's default for a post-restore exec hook
_POLL_S = 0.2
_EXEC = "post.hook.restore.velero.io/"
_INIT = "init.hook.restore.velero.io/"


@dataclass(frozen=True)
class ExecHook:
    """One post-restore exec hook for one restored pod."""

    name: str
    container: str
    command: tuple[str, ...]
    on_error: str  # Fail, Continue
    exec_timeout_s: float
    wait_timeout_s: float  # 0: as long as the restore waits for pods


def _labels_match(labels: dict[str, str], sel: Obj | None) -> bool:
    """A ``metav1.LabelSelector`` against ``labels`` (None or empty: everything)."""
    if not sel:
        return True
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = str(e.get("key")), e.get("operator"), set(e.get("values") or [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(str(op), False)
        if not ok:
            return False
    return True


def _applicable(spec_hooks: Obj | None, pod: Obj) -> list[Obj]:
    """The ``spec.hooks.resources`` entries that take ``pod`` (its namespace as restored)."""
    m = pod.get("metadata") or {}
    out = []
    for res in (spec_hooks or {}).get("resources") or []:
        sel = Selection(list(res.get("includedNamespaces") or ["*"]), list(res.get("excludedNamespaces") or []),
                        list(res.get("includedResources") or ["*"]), list(res.get("excludedResources") or []))
        if sel.namespace(str(m.get("namespace"))) and sel.resource("", "pods", "Pod", ("po",)) \
                and _labels_match(m.get("labels") or {}, res.get("labelSelector")):
            out.append(res)
    return out


def add_init_hooks(pod: Obj, spec_hooks: Obj | None) -> None:
    """Add the pod's init restore hooks (annotations, else the applicable spec hooks) to its init containers.
    Raises ValueError for an init container without command, name or image (Velero's message)."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    added: list[Obj] = []
    if ann.get(_INIT + "container-image"):
        raw = ann.get(_INIT + "command") or ""
        command = json.loads(raw) if raw.strip().startswith("[") else [raw]
        added.append({"name": ann.get(_INIT + "container-name") or "restore-init-hook",
                      "image": ann[_INIT + "container-image"], "command": [str(c) for c in command]})
    else:
        for res in _applicable(spec_hooks, pod):
            for hook in res.get("postHooks") or []:
                for c in (hook.get("init") or {}).get("initContainers") or []:
                    if not c.get("command") or not c.get("name") or not c.get("image"):
                        raise ValueError("invalid InitContainer in restore hook, it doesn't have Command, Name or "
                                         "Image field")
                    added.append(dict(c))
    if not added:
        return
    spec = pod.setdefault("spec", {})
    inits = list(spec.get("initContainers") or [])
    first = [inits.pop(0)] if inits and inits[0].get("name") == RESTORE_WAIT else []
    spec["initContainers"] = [*first, *added, *inits]


def exec_hooks(pod: Obj, spec_hooks: Obj | None) -> list[ExecHook]:
    """The pod's post-restore exec hooks, in order (annotations, else the applicable spec hooks). Raises
    ValueError for a bad duration."""
    m = pod.get("metadata") or {}
    ann = m.get("annotations") or {}
    containers = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    first = containers[0] if containers else ""
    if ann.get(_EXEC + "command"):
        raw = ann[_EXEC + "command"]
        command = json.loads(raw) if raw.strip().startswith("[") else [raw]
        return [ExecHook("<from-annotation>", ann.get(_EXEC + "container") or first, tuple(str(c) for c in command),
                         ann.get(_EXEC + "on-error") or "Fail",
                         parse_duration(ann.get(_EXEC + "exec-timeout"), DEFAULT_EXEC_TIMEOUT).total_seconds(),
                         parse_duration(ann.get(_EXEC + "wait-timeout"), timedelta(0)).total_seconds())]
    out = []
    for res in _applicable(spec_hooks, pod):
        for hook in res.get("postHooks") or []:
            ex = hook.get("exec")
            if not ex:
                continue
            out.append(ExecHook(str(res.get("name") or "hook"), str(ex.get("container") or first),
                                tuple(str(c) for c in ex.get("command") or []), str(ex.get("onError") or "Fail"),
                                parse_duration(ex.get("execTimeout"), DEFAULT_EXEC_TIMEOUT).total_seconds(),
                                parse_duration(ex.get("waitTimeout"), timedelta(0)).total_seconds()))
    return out


async def _running(host: PodHost, ns: str, name: str, container: str, wait_s: float) -> bool:
    """Wait (up to ``wait_s``) until ``container`` of the pod runs."""
    deadline = time.monotonic() + wait_s
    while host.exec_context(ns, name, container) is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


async def run_exec_hooks(host: PodHost | None, pod: Obj, hooks: list[ExecHook], max_wait_s: float) -> list[str]:
    """Run ``hooks`` in the restored ``pod`` in order; the errors (Velero's wording). ``max_wait_s`` caps a
    hook's wait for its container (and is the wait of one whose ``waitTimeout`` is 0)."""
    m = pod["metadata"]
    errors: list[str] = []
    for h in hooks:
        wait_s = min(h.wait_timeout_s or max_wait_s, max_wait_s)
        if host is None or not await _running(host, m["namespace"], m["name"], h.container, wait_s):
            errors.append(f"hook {h.name} in container {h.container} in pod {m['namespace']}/{m['name']} expired "
                          "before executing")
            err: str | None = "expired"
        else:
            err = await run_hook(host, pod, Hook("post", h.command, h.container, h.on_error, h.exec_timeout_s,
                                                 h.name))
            if err is not None:
                errors.append(f"hook {h.name} in container {h.container} in pod {m['namespace']}/{m['name']} "
                              f"failed to execute, err: {err}")
        if err is not None and h.on_error != "Continue":
            break
    return errors
