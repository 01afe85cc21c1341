"""Chaos Mesh's Workflow: a tree of WorkflowNodes, one per template instance, run as upstream runs them.

The Workflow reconciler spawns the entry node (``<template>-<random>``,
label ``chaos-mesh.org/controlled-by: <workflow>``) and mirrors it into the
Workflow's status (``entryNode``, ``startTime``, ``endTime``, conditions
``Scheduled`` and ``Accomplished``). The node reconciler runs each node by
its template type:

- ``Serial``: one child at a time, in order; ``Parallel``: all children at
  once; both are accomplished when every child is finished;
- a chaos kind (``PodChaos``, ``NetworkChaos``, ...): creates the chaos
  object (``<node>-<random>``, owned by the node) and sets ``ChaosInjected``;
  it runs until the node's deadline, then the object is deleted (which
  recovers the fault);
- ``Suspend``: waits for its deadline;
- ``Task``: runs ``task.container`` as a Pod (restartPolicy Never), then
  evaluates ``conditionalBranches`` over ``{exitCode, stdout}`` and runs the
  chosen targets as children;
- ``Schedule``: creates a ``Schedule`` from the template's ``schedule``
  (owned by the node, so its spawned chaos goes with it) and sets
  ``ChaosInjected``; at the node's deadline the Schedule is deleted;
- ``StatusCheck``: creates a ``StatusCheck`` from ``statusCheck`` (run by
  ``chaos.statuscheck``); the node is ``Accomplished`` when it completes and,
  with ``abortWithStatusCheck``, ``Aborted`` when it completed without its
  success threshold met (reason ``StatusCheckNotExceedSuccessThreshold``).

A node is finished when ``Accomplished``, ``DeadlineExceed`` or ``Aborted``
is True. A node whose ``deadline`` passes gets ``DeadlineExceed``
(``NodeDeadlineExceed``) and so do its unfinished descendants
(``ParentNodeDeadlineExceed``). Deleting the Workflow deletes its nodes,
their chaos objects and pods (owner references).

Aborting, as upstream: an aborted StatusCheck node puts the annotation
``workflow.chaos-mesh.org/abort: "true"`` on its Workflow (a user may set it
too); the Workflow reconciler then sets ``Aborted`` (``WorkflowAborted``) on
the entry node, and an aborted Serial/Parallel/Task node passes ``Aborted``
(``ParentNodeAborted``) to its unfinished children, so every running chaos
object is deleted and its fault recovered. Removing the annotation clears
the entry node's ``Aborted``. pitwall also shows ``Aborted`` on the
Workflow's own conditions.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.chaos.branches import ExprError, eval_bool
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.faults import NodeHooks
from pitwall.chaos.model import API_VERSION, parse_time
from pitwall.chaos.schedule import EMBED_FIELDS, random_suffix
from pitwall.chaos.statuscheck import check_completed
from pitwall.controllers import record_event
from pitwall.core.durations import parse_duration_ms
from pitwall.kube import Conflict, KubeClient, KubeError, NotFoundError, fmt_time

__all__ = ["ABORT_ANNOTATION", "LABEL_CONTROLLED_BY", "LABEL_WORKFLOW", "WorkflowNodeReconciler",
           "WorkflowReconciler", "node_finished"]

Obj = dict[str, Any]
LABEL_CONTROLLED_BY = "chaos-mesh.org/controlled-by"
LABEL_WORKFLOW = "chaos-mesh.org/workflow"
ABORT_ANNOTATION = "workflow.chaos-mesh.org/abort"
COMPONENT = "workflow-controller"
# the kinds a node creates and deletes when it finishes
_OWNED = {"Schedule": "Schedule", "StatusCheck": "StatusCheck", **{k: k for k in EMBED_FIELDS}}
_FINISHED = ("Accomplished", "DeadlineExceed", "Aborted")


def node_finished(node: Obj) -> bool:
    """Chaos Mesh's WorkflowNodeFinished: Accomplished, DeadlineExceed or Aborted is True."""
    return any(_condition(node, t) == "True" for t in _FINISHED)


def _condition(obj: Obj, type_: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return ""


def _reason(obj: Obj, type_: str) -> str:
    return next((str(c.get("reason") or "") for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), "")


def workflow_aborted(wf: Obj) -> bool:
    """Chaos Mesh's WorkflowAborted: the abort annotation is "true"."""
    return ((wf.get("metadata") or {}).get("annotations") or {}).get(ABORT_ANNOTATION) == "true"


def _set_condition(status: Obj, type_: str, value: str, reason: str = "") -> None:
    conds = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    status["conditions"] = [*conds, {"type": type_, "status": value, "reason": reason}]


def _owner(kind: str, obj: Obj) -> Obj:
    m = obj["metadata"]
    return {"apiVersion": API_VERSION, "kind": kind, "name": m["name"], "uid": m.get("uid"), "controller": True,
            "blockOwnerDeletion": True}


def _by_age(objs: Sequence[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (o["metadata"].get("creationTimestamp") or "",
                                       int(o["metadata"].get("resourceVersion") or 0)))


def render_node(workflow: Obj, template_name: str, parent: Obj | None, now: datetime) -> Obj:
    """A WorkflowNode for ``template_name`` of ``workflow`` (child of ``parent``, else the entry)."""
    templates = {t.get("name"): t for t in (workflow.get("spec") or {}).get("templates") or []}
    wm = workflow["metadata"]
    if template_name not in templates:
        raise LookupError(f"workflow {wm['name']} do not contains template called {template_name}")
    t = templates[template_name]
    spec: Obj = {"templateName": template_name, "workflowName": wm["name"], "type": t.get("templateType"),
                 "startTime": fmt_time(now)}
    if t.get("deadline"):
        ms = parse_duration_ms(str(t["deadline"]))
        spec["deadline"] = fmt_time(datetime.fromtimestamp(now.timestamp() + ms / 1000, UTC))
    for field in ("children", "task", "conditionalBranches", "schedule", "statusCheck", "abortWithStatusCheck",
                  *EMBED_FIELDS.values()):
        if t.get(field) is not None:
            spec[field] = t[field]
    owner = parent if parent is not None else workflow
    return {"apiVersion": API_VERSION, "kind": "WorkflowNode",
            "metadata": {"name": f"{template_name}-{random_suffix()}", "namespace": wm["namespace"],
                         "labels": {LABEL_CONTROLLED_BY: owner["metadata"]["name"], LABEL_WORKFLOW: wm["name"]},
                         "ownerReferences": [_owner("WorkflowNode" if parent is not None else "Workflow", owner)]},
            "spec": spec}


class WorkflowReconciler:
    """Spawns each Workflow's entry node and reports it in the Workflow's status."""

    name = "workflow-entry"
    primary = (API_VERSION, "Workflow")
    secondary: Sequence[tuple[str, str]] = [(API_VERSION, "WorkflowNode")]

    def __init__(self, client: KubeClient, report: ChaosReport | None = None) -> None:
        self.client = client
        self.report = report  # an abort is a change event on the incident timeline

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        if kind == "Workflow":
            return [f"{m.get('namespace') or ''}/{m.get('name') or ''}"]
        wf = (m.get("labels") or {}).get(LABEL_WORKFLOW)
        return [f"{m.get('namespace')}/{wf}"] if wf else []

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            wf = await self.client.get(API_VERSION, "Workflow", name, ns)
        except NotFoundError:
            return None
        wf.setdefault("apiVersion", API_VERSION)
        wf.setdefault("kind", "Workflow")
        if wf["metadata"].get("deletionTimestamp"):
            return None
        entries = await self._entries(wf)
        if not entries:
            entry = str((wf.get("spec") or {}).get("entry") or "")
            try:
                made = await self.client.create(render_node(wf, entry, None, datetime.now(UTC)))
            except (LookupError, ValueError) as e:
                await record_event(self.client, wf, "Warning", "InvalidEntry",
                                   f"Invalid entry, template: {entry}: {e}", COMPONENT)
                return None
            await record_event(self.client, wf, "Normal", "EntryCreated", f"Entry node created: {made['metadata']['name']}",
                               COMPONENT)
            entries = [made]
        for extra in entries[1:]:  # as upstream: only the first entry node counts
            with contextlib.suppress(NotFoundError):
                await self.client.delete(API_VERSION, "WorkflowNode", extra["metadata"]["name"], ns)
        await self._status(wf, await self._abort(wf, entries[0]) or entries[0])
        return None

    async def _abort(self, wf: Obj, entry: Obj) -> Obj | None:
        """Upstream's AbortWorkflowReconciler: the annotation sets ``Aborted`` on the entry node; without it, an
        ``Aborted`` the annotation had set is cleared (a node that aborted itself keeps its own)."""
        aborted = workflow_aborted(wf)
        if aborted == (_condition(entry, "Aborted") == "True"):
            return None
        if not aborted and _reason(entry, "Aborted") != "WorkflowAborted":
            return None
        if aborted:
            await record_event(self.client, entry, "Warning", "WorkflowAborted",
                               f"workflow {wf['metadata']['name']} aborted", COMPONENT)
            if self.report is not None:
                m = wf["metadata"]
                await self.report.workflow_aborted(m["namespace"], m["name"], f"annotation {ABORT_ANNOTATION}")

        def edit(o: Obj) -> None:
            st = o.setdefault("status", {})
            _set_condition(st, "Aborted", "True" if aborted else "False", "WorkflowAborted" if aborted else "")
        return await self.client.modify(entry, edit, status=True)

    async def _entries(self, wf: Obj) -> list[Obj]:
        m = wf["metadata"]
        items = (await self.client.list(API_VERSION, "WorkflowNode", m["namespace"],
                                        label_selector=f"{LABEL_CONTROLLED_BY}={m['name']}")).items
        return _by_age(items)

    async def _status(self, wf: Obj, entry: Obj) -> None:
        for _ in range(5):
            st = dict(wf.get("status") or {})
            st["entryNode"] = entry["metadata"]["name"]
            st.setdefault("startTime", fmt_time(datetime.now(UTC)))
            _set_condition(st, "Scheduled", "True")
            done = node_finished(entry)
            _set_condition(st, "Accomplished", "True" if done else "False")
            if workflow_aborted(wf) or _condition(wf, "Aborted"):
                _set_condition(st, "Aborted", "True" if workflow_aborted(wf) else "False",
                               "WorkflowAborted" if workflow_aborted(wf) else "")
            if done and not st.get("endTime"):
                st["endTime"] = fmt_time(datetime.now(UTC))
                await record_event(self.client, wf, "Normal", "WorkflowAccomplished", "Workflow accomplished",
                                   COMPONENT)
            elif not done:
                st.pop("endTime", None)
            if st == (wf.get("status") or {}):
                return
            wf["status"] = st
            try:
                await self.client.update_status(wf)
                return
            except Conflict:
                wf = await self.client.get(API_VERSION, "Workflow", wf["metadata"]["name"], wf["metadata"]["namespace"])
                entry = await self.client.get(API_VERSION, "WorkflowNode", entry["metadata"]["name"],
                                              entry["metadata"]["namespace"])


class WorkflowNodeReconciler:
    """Runs each WorkflowNode by its template type (see the module's docstring)."""

    name = "workflow-node"
    primary = (API_VERSION, "WorkflowNode")

    def __init__(self, client: KubeClient, output: NodeHooks | None = None) -> None:
        self.client = client
        self.output = output
        self.secondary: Sequence[tuple[str, str]] = [(API_VERSION, "WorkflowNode"), ("v1", "Pod"),
                                                     *((API_VERSION, k) for k in _OWNED)]

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        keys = [f"{m.get('namespace') or ''}/{m.get('name') or ''}"] if kind == "WorkflowNode" else []
        keys += [f"{m.get('namespace')}/{r.get('name')}" for r in m.get("ownerReferences") or []
                 if r.get("kind") == "WorkflowNode"]
        return keys

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            node = await self.client.get(API_VERSION, "WorkflowNode", name, ns)
        except NotFoundError:
            return None
        node.setdefault("apiVersion", API_VERSION)
        node.setdefault("kind", "WorkflowNode")
        if node["metadata"].get("deletionTimestamp"):
            return None
        now = datetime.now(UTC)
        spec = node.get("spec") or {}
        kind = str(spec.get("type") or "")
        deadline = parse_time(spec["deadline"]) if spec.get("deadline") else None
        if not node_finished(node) and deadline is not None and now >= deadline:
            await self._exceed(node, "NodeDeadlineExceed")
            node = await self.client.get(API_VERSION, "WorkflowNode", name, ns)
        children = await self._children(node)
        if node_finished(node):
            await self._finish(node, kind, children)
            return None
        if kind in ("Serial", "Parallel"):
            await self._flow(node, kind, children)
        elif kind in EMBED_FIELDS or kind == "Schedule":
            await self._chaos(node, kind)
        elif kind == "StatusCheck":
            await self._status_check(node)
        elif kind == "Task":
            again = await self._task(node, children)
            if again is not None:
                return again
        elif kind != "Suspend":
            await record_event(self.client, node, "Warning", "Unsupported",
                               f"template type {kind!r} is not run by pitwall", COMPONENT)
        return max((deadline - now).total_seconds(), 0.05) if deadline is not None else None

    async def _children(self, node: Obj) -> list[Obj]:
        m = node["metadata"]
        items = (await self.client.list(API_VERSION, "WorkflowNode", m["namespace"],
                                        label_selector=f"{LABEL_CONTROLLED_BY}={m['name']}")).items
        return _by_age([o for o in items if any(r.get("uid") == m.get("uid")
                                                for r in o["metadata"].get("ownerReferences") or [])])

    async def _workflow(self, node: Obj) -> Obj:
        return await self.client.get(API_VERSION, "Workflow", node["spec"]["workflowName"], node["metadata"]["namespace"])

    async def _spawn(self, node: Obj, templates: Sequence[str]) -> None:
        if not templates:
            return
        wf = await self._workflow(node)
        made = [await self.client.create(render_node(wf, t, node, datetime.now(UTC))) for t in templates]
        await record_event(self.client, node, "Normal", "NodesCreated",
                           f"child nodes created, {', '.join(o['metadata']['name'] for o in made)}", COMPONENT)

    async def _flow(self, node: Obj, kind: str, children: list[Obj]) -> None:
        wanted = list(node["spec"].get("children") or [])
        active = [c for c in children if not node_finished(c)]
        if kind == "Serial":
            todo = wanted[len(children):len(children) + 1] if not active else []
        else:
            have = [c["spec"]["templateName"] for c in children]
            todo = [t for t in wanted if t not in have]
        await self._spawn(node, todo)
        done = len(children) + len(todo) == len(wanted) and not active and not todo
        await self._update(node, lambda st: self._flow_status(st, children, done))

    @staticmethod
    def _flow_status(st: Obj, children: list[Obj], done: bool) -> None:
        st["activeChildren"] = [{"name": c["metadata"]["name"]} for c in children if not node_finished(c)] or None
        st["finishedChildren"] = [{"name": c["metadata"]["name"]} for c in children if node_finished(c)] or None
        _set_condition(st, "Accomplished", "True" if done else "False")

    async def _owned(self, node: Obj, kind: str) -> list[Obj]:
        m = node["metadata"]
        items = (await self.client.list(API_VERSION, kind, m["namespace"],
                                        label_selector=f"{LABEL_CONTROLLED_BY}={m['name']}")).items
        return _by_age(items)

    def _child_object(self, node: Obj, kind: str, spec: Obj) -> Obj:
        m = node["metadata"]
        return {"apiVersion": API_VERSION, "kind": kind,
                "metadata": {"name": f"{m['name']}-{random_suffix()}", "namespace": m["namespace"],
                             "labels": {LABEL_CONTROLLED_BY: m["name"], LABEL_WORKFLOW: node["spec"]["workflowName"]},
                             "ownerReferences": [_owner("WorkflowNode", node)]},
                "spec": spec}

    async def _dedupe(self, kind: str, owned: list[Obj]) -> None:
        """As upstream: one object per node; later duplicates (a retried create) are deleted."""
        for extra in owned[1:]:
            with contextlib.suppress(NotFoundError):
                await self.client.delete(API_VERSION, kind, extra["metadata"]["name"], extra["metadata"]["namespace"])

    async def _chaos(self, node: Obj, kind: str) -> None:
        """A chaos kind's object from its embedded field, or a ``Schedule`` from ``schedule`` (as upstream's
        ChaosNodeReconciler: the node's ``chaosResource`` names either)."""
        owned = await self._owned(node, kind)
        await self._dedupe(kind, owned)
        if not owned:
            src = node["spec"].get("schedule") if kind == "Schedule" else node["spec"].get(EMBED_FIELDS[kind])
            try:
                made = await self.client.create(self._child_object(node, kind, dict(src or {})))
            except KubeError as e:  # a refused object (invalid spec) is reported on the node, as upstream does
                await record_event(self.client, node, "Warning", "ChaosCustomResourceCreateFailed",
                                   f"Failed to create chaos CR: {e}", COMPONENT)
                await self._update(node, lambda st: _set_condition(st, "ChaosInjected", "False"))
                return
            await record_event(self.client, node, "Normal", "ChaosCustomResourceCreated",
                               f"Chaos CR {made['metadata']['name']} created", COMPONENT)
            owned = [made]
        ref = {"kind": kind, "name": owned[0]["metadata"]["name"], "apiGroup": "chaos-mesh.org"}

        def status(st: Obj) -> None:
            st["chaosResource"] = ref
            _set_condition(st, "ChaosInjected", "True")
        await self._update(node, status)

    async def _status_check(self, node: Obj) -> None:
        """Upstream's StatusCheckReconciler for a node: create the StatusCheck, mirror its completion."""
        owned = await self._owned(node, "StatusCheck")
        await self._dedupe("StatusCheck", owned)
        if not owned:
            try:
                made = await self.client.create(self._child_object(node, "StatusCheck",
                                                                   dict(node["spec"].get("statusCheck") or {})))
            except KubeError as e:
                await record_event(self.client, node, "Warning", "StatusCheckCreatedFailed",
                                   f"Failed to create status check: {e}", COMPONENT)
                return
            await record_event(self.client, node, "Normal", "StatusCheckCreated",
                               f"Status check {made['metadata']['name']} created", COMPONENT)
            return
        sc = owned[0]
        done = check_completed(sc)
        abort = bool(node["spec"].get("abortWithStatusCheck")) and done and _condition(sc, "SuccessThresholdExceed") != "True"

        def status(st: Obj) -> None:
            _set_condition(st, "Accomplished", "True" if done else "False", "StatusCheckCompleted" if done else "")
            _set_condition(st, "Aborted", "True" if abort else "False",
                           "StatusCheckNotExceedSuccessThreshold" if abort else "")
        await self._update(node, status)

    async def _task(self, node: Obj, children: list[Obj]) -> float | None:
        m = node["metadata"]
        st = node.get("status") or {}
        if st.get("conditionalBranchesStatus") is None:
            pods = (await self.client.list("v1", "Pod", m["namespace"],
                                           label_selector=f"{LABEL_CONTROLLED_BY}={m['name']}")).items
            if not pods:
                await self._task_pod(node)
                return None
            env = self._collect(pods[0])
            if env is None:
                return 0.2  # running, or its output not yet all read
            await self._evaluate(node, env)
            node = await self.client.get(API_VERSION, "WorkflowNode", m["name"], m["namespace"])
        chosen = [b["target"] for b in node["status"]["conditionalBranchesStatus"].get("branches") or []
                  if b.get("evaluationResult") == "True"]
        have = [c["spec"]["templateName"] for c in children]
        todo = [t for t in chosen if t not in have]
        await self._spawn(node, todo)
        active = [c for c in children if not node_finished(c)]
        done = not todo and not active and len(children) >= len(chosen)
        await self._update(node, lambda s: self._flow_status(s, children, done))
        return None

    async def _task_pod(self, node: Obj) -> None:
        m = node["metadata"]
        task = node["spec"].get("task") or {}
        container = dict(task.get("container") or {})
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{m['name']}-{random_suffix()}", "namespace": m["namespace"],
                            "labels": {LABEL_CONTROLLED_BY: m["name"], LABEL_WORKFLOW: node["spec"]["workflowName"]},
                            "ownerReferences": [_owner("WorkflowNode", node)]},
               "spec": {"restartPolicy": "Never", "containers": [container],
                        **({"volumes": task["volumes"]} if task.get("volumes") else {})}}
        try:
            made = await self.client.create(pod)
        except KubeError as e:
            await record_event(self.client, node, "Warning", "TaskPodSpawnFailed", f"Failed to spawn task pod: {e}",
                               COMPONENT)
            return
        await record_event(self.client, node, "Normal", "TaskPodSpawned", f"Task pod {made['metadata']['name']} spawned",
                           COMPONENT)

    def _collect(self, pod: Obj) -> Obj | None:
        """``{exitCode, stdout}`` of a finished task pod (stdout trimmed, as upstream's collector), else None."""
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        term = (statuses[0].get("state") or {}).get("terminated") if statuses else None
        if not term:
            return None
        m = pod["metadata"]
        name = str(pod["spec"]["containers"][0].get("name") or "")
        out = self.output.container_output(m["namespace"], m["name"], name) if self.output else ""
        if out is None:
            return None
        return {"exitCode": int(term.get("exitCode") or 0), "stdout": out.strip()}

    async def _evaluate(self, node: Obj, env: Obj) -> None:
        branches = []
        for b in node["spec"].get("conditionalBranches") or []:
            try:
                result = "True" if eval_bool(str(b.get("expression") or ""), env) else "False"
            except ExprError:
                result = "Unknown"
            branches.append({"target": b.get("target"), "evaluationResult": result})
        chosen = [b["target"] for b in branches if b["evaluationResult"] == "True"]
        await record_event(self.client, node, "Normal", "ConditionalBranchesSelected",
                           f"selected branches: {chosen}", COMPONENT)

        def status(st: Obj) -> None:
            st["conditionalBranchesStatus"] = {"branches": branches, "context": [json.dumps(env)]}
        await self._update(node, status)

    async def _exceed(self, node: Obj, reason: str) -> None:
        """``DeadlineExceed`` on ``node`` and every unfinished descendant (``ParentNodeDeadlineExceed``)."""
        await self._update(node, lambda st: _set_condition(st, "DeadlineExceed", "True", reason))
        await record_event(self.client, node, "Normal", reason, "deadline exceed" if reason == "NodeDeadlineExceed"
                           else "parent node deadline exceed", COMPONENT)
        for child in await self._children(node):
            if not node_finished(child):
                await self._exceed(child, "ParentNodeDeadlineExceed")

    async def _finish(self, node: Obj, kind: str, children: list[Obj]) -> None:
        """A finished node deletes the chaos object, Schedule or StatusCheck it made (recovering the faults;
        Task pods stay for their logs) and, when aborted, passes the abort on (upstream's AbortNodeReconciler)."""
        if _condition(node, "Aborted") == "True":
            if kind == "StatusCheck":
                await self._abort_workflow(node)
            else:
                await self._abort_children(node, children)
        if kind not in _OWNED:
            return
        m = node["metadata"]
        reason, what = ("StatusCheckDeleted", "Status check") if kind == "StatusCheck" else \
            ("ChaosCustomResourceDeleted", "Chaos CR")
        for o in await self._owned(node, kind):
            with contextlib.suppress(NotFoundError):
                await self.client.delete(API_VERSION, kind, o["metadata"]["name"], m["namespace"])
                await record_event(self.client, node, "Normal", reason, f"{what} {o['metadata']['name']} deleted",
                                   COMPONENT)

    async def _abort_workflow(self, node: Obj) -> None:
        try:
            wf = await self._workflow(node)
        except NotFoundError:
            return
        if workflow_aborted(wf):
            return

        def edit(o: Obj) -> None:
            o["metadata"].setdefault("annotations", {})[ABORT_ANNOTATION] = "true"
        await self.client.modify(wf, edit)
        await record_event(self.client, wf, "Warning", "WorkflowAborted",
                           f"status check node {node['metadata']['name']} aborted the workflow", COMPONENT)

    async def _abort_children(self, node: Obj, children: list[Obj]) -> None:
        for child in children:
            if node_finished(child):
                continue
            await self._update(child, lambda st: _set_condition(st, "Aborted", "True", "ParentNodeAborted"))
            await record_event(self.client, child, "Warning", "ParentNodeAborted",
                               f"parent node {node['metadata']['name']} aborted", COMPONENT)

    async def _update(self, node: Obj, change: Any) -> None:
        def edit(o: Obj) -> bool:
            st = copy.deepcopy(o.get("status") or {})
            change(st)
            st = {k: v for k, v in st.items() if v is not None}
            if st == (o.get("status") or {}):
                return False
            o["status"] = st
            return True

        await self.client.modify(node, edit, status=True)
