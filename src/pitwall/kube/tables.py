"""``Table`` output (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``): kubectl get's columns.

Each built-in kind has the columns kube-apiserver's printers give it
(priority 1 columns appear with ``-o wide``); custom kinds use their CRD's
``additionalPrinterColumns`` (JSONPath), else NAME and AGE.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from pitwall.kube.convert import hpa_v2
from pitwall.kube.meta import age, human_duration, parse_time
from pitwall.kube.registry import ResourceType
from pitwall.kube.selectors import selector_string

__all__ = ["table"]

Obj = dict[str, Any]
Col = tuple[str, str, int, Callable[[Obj], Any], str]  # name, type, priority, cell, description

_NAME_DESC = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
_AGE_DESC = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"


def _g(obj: Any, *path: str, default: Any = None) -> Any:
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(p)
    return default if cur is None else cur


def _name(o: Obj) -> str:
    return str(_g(o, "metadata", "name", default=""))


def _age(o: Obj) -> str:
    return age(_g(o, "metadata", "creationTimestamp"))


def _none(v: Any) -> str:
    return str(v) if v not in (None, "", []) else "<none>"


def _containers(o: Obj, tpl: tuple[str, ...] = ("spec", "template", "spec")) -> list[Obj]:
    return [c for c in _g(o, *tpl, "containers", default=[]) if isinstance(c, dict)]


def _pod_status(o: Obj) -> str:
    st = o.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for cs in st.get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode", 0) == 0 and state.get("terminated"):
            continue
        if state.get("waiting", {}).get("reason") not in (None, "PodInitializing"):
            return "Init:" + str(state["waiting"]["reason"])
    for cs in reversed(st.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif state.get("terminated"):
            t = state["terminated"]
            reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode', 0)}"
    if _g(o, "metadata", "deletionTimestamp") and reason != "Unknown":
        reason = "Terminating"
    return str(reason)


def _pod_ready(o: Obj) -> str:
    total = len(_containers(o, ("spec",)))
    ready = sum(1 for cs in _g(o, "status", "containerStatuses", default=[]) if cs.get("ready"))
    return f"{ready}/{total}"


def _pod_restarts(o: Obj) -> str:
    css = _g(o, "status", "containerStatuses", default=[])
    n = sum(int(cs.get("restartCount") or 0) for cs in css)
    last: dt.datetime | None = None
    for cs in css:
        t = parse_time(_g(cs, "lastState", "terminated", "finishedAt"))
        if t and (last is None or t > last):
            last = t
    if n and last:
        return f"{n} ({human_duration((dt.datetime.now(dt.UTC) - last).total_seconds())} ago)"
    return str(n)


def _ports(o: Obj) -> str:
    out = []
    for p in _g(o, "spec", "ports", default=[]):
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(o: Obj) -> str:
    typ = _g(o, "spec", "type", default="ClusterIP")
    ext = list(_g(o, "spec", "externalIPs", default=[]))
    if typ == "ExternalName":
        return str(_g(o, "spec", "externalName", default="<none>"))
    if typ == "LoadBalancer":
        ing = [i.get("ip") or i.get("hostname") for i in _g(o, "status", "loadBalancer", "ingress", default=[])]
        return ",".join([*ing, *ext]) or "<pending>"
    return ",".join(ext) or "<none>"


def _endpoints(o: Obj) -> str:
    out = []
    for sub in o.get("subsets") or []:
        ports = sub.get("ports") or [{}]
        for a in sub.get("addresses") or []:
            for p in ports:
                out.append(f"{a.get('ip')}:{p['port']}" if p.get("port") else str(a.get("ip")))
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def _ingress_hosts(o: Obj) -> str:
    """kubectl's formatHosts: the first three rule hosts, then how many more rules; ``*`` when none."""
    rules = _g(o, "spec", "rules", default=[])
    hosts = [r["host"] for r in rules[:3] if r.get("host")]
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - 3} more..." if len(rules) > 3 else "")


def _ingress_address(o: Obj) -> str:
    out = ",".join(i.get("ip") or i.get("hostname") or "" for i in _g(o, "status", "loadBalancer", "ingress",
                                                                        default=[]))
    return out if len(out) <= 16 else out[:13] + "..."


def _ingress_class_params(o: Obj) -> str:
    p = _g(o, "spec", "parameters")
    if not p:
        return "<none>"
    kind = f"{p.get('kind', '')}.{p['apiGroup']}" if p.get("apiGroup") else str(p.get("kind", ""))
    return f"{kind}/{p.get('name', '')}"


def _job_duration(o: Obj) -> str:
    start = parse_time(_g(o, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_g(o, "status", "completionTime")) or dt.datetime.now(dt.UTC)
    return human_duration((end - start).total_seconds())


def _job_status(o: Obj) -> str:
    conds = {c.get("type"): c.get("status") for c in _g(o, "status", "conditions", default=[])}
    if conds.get("Complete") == "True":
        return "Complete"
    if conds.get("Failed") == "True":
        return "Failed"
    if _g(o, "metadata", "deletionTimestamp"):
        return "Terminating"
    if conds.get("Suspended") == "True":
        return "Suspended"
    if conds.get("FailureTarget") == "True":
        return "FailureTarget"
    if conds.get("SuccessCriteriaMet") == "True":
        return "SuccessCriteriaMet"
    return "Running"


_QTY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_BIN = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DEC = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DEC_SUFFIX = {v: k for k, v in _DEC.items()}


def _quantity(q: Any) -> str:
    """A quantity as resource.Quantity's ``String()`` prints it (canonical: ``0.5`` -> ``500m``, ``2000`` ->
    ``2k``, ``2048Ki`` -> ``2Mi``); ``<nil>`` when absent, as Go prints a nil *Quantity."""
    from decimal import ROUND_CEILING, Decimal

    if q is None:
        return "<nil>"
    m = _QTY.match(str(q).strip())
    if not m:
        return str(q)
    num, exp, suffix = Decimal(m.group(1)), m.group(2), m.group(3) or ""
    if suffix in _BIN:
        value = num * (Decimal(1024) ** _BIN[suffix])
        if value == value.to_integral_value() and abs(value) >= 1024:
            n, k = int(value), 0
            while k < 6 and n % 1024 == 0:
                n, k = n // 1024, k + 1
            return f"{n}{'' if k == 0 else list(_BIN)[k - 1]}"
        suffix = ""
        num = value
    else:
        num = num.scaleb(int(exp[1:]) if exp else _DEC[suffix])
    nanos = (num * 10 ** 9).to_integral_value(rounding=ROUND_CEILING)  # upstream rounds up to nano units
    if nanos == 0:
        return "0"
    n, k = int(nanos), -9
    while k < 18 and n % 1000 == 0:
        n, k = n // 1000, k + 3
    return f"{n}{_DEC_SUFFIX[k]}"


def _hpa_metric(spec: Obj, status: Obj | None) -> str:
    """One metric as kubectl's printer shows it (``formatHPAMetrics``): current/target."""
    typ = spec.get("type")
    if typ in ("External", "Object"):
        key = typ.lower()
        tgt = _g(spec, key, "target", default={}) or {}
        cur = (status or {}).get(key) if isinstance(status, dict) else None
        if tgt.get("averageValue") is not None:
            current = "<unknown>"
            if isinstance(cur, dict) and _g(cur, "current", "averageValue") is not None:
                current = _quantity(_g(cur, "current", "averageValue"))
            return f"{current}/{_quantity(tgt['averageValue'])} (avg)"
        current = _quantity(_g(cur, "current", "value")) if isinstance(cur, dict) else "<unknown>"
        return f"{current}/{_quantity(tgt.get('value'))}"
    if typ == "Pods":
        cur = (status or {}).get("pods") if isinstance(status, dict) else None
        current = _quantity(_g(cur, "current", "averageValue")) if isinstance(cur, dict) else "<unknown>"
        return f"{current}/{_quantity(_g(spec, 'pods', 'target', 'averageValue'))}"
    if typ in ("Resource", "ContainerResource"):
        key = "resource" if typ == "Resource" else "containerResource"
        src = spec.get(key) or {}
        tgt = src.get("target") or {}
        cur = (status or {}).get(key) if isinstance(status, dict) else None
        name = src.get("name", "")
        if tgt.get("averageValue") is not None:
            current = _quantity(_g(cur, "current", "averageValue")) if isinstance(cur, dict) else "<unknown>"
            return f"{name}: {current}/{_quantity(tgt['averageValue'])}"
        current = "<unknown>"
        if isinstance(cur, dict) and _g(cur, "current", "averageUtilization") is not None:
            current = f"{_g(cur, 'current', 'averageUtilization')}%"
        target = f"{tgt['averageUtilization']}%" if tgt.get("averageUtilization") is not None else "<auto>"
        return f"{name}: {current}/{target}"
    return "<unknown type>"


def _hpa_targets(o: Obj) -> str:
    if o.get("apiVersion") == "autoscaling/v1":  # the v1 view: its metrics as the stored v2 object has them
        o = hpa_v2(o)
    specs = _g(o, "spec", "metrics", default=[]) or []
    if not specs:
        return "<none>"
    current = _g(o, "status", "currentMetrics", default=[]) or []
    out = [_hpa_metric(m if isinstance(m, dict) else {}, current[i] if i < len(current) else None)
           for i, m in enumerate(specs)]
    return ", ".join(out[:2]) + (f" + {len(out) - 2} more..." if len(out) > 2 else "")


def _node_status(o: Obj) -> str:
    ready = next((c.get("status") for c in _g(o, "status", "conditions", default=[]) if c.get("type") == "Ready"), None)
    out = "Ready" if ready == "True" else ("NotReady" if ready == "False" else "Unknown")
    if _g(o, "spec", "unschedulable"):
        out += ",SchedulingDisabled"
    return out


def _addr(o: Obj, typ: str) -> str:
    return ",".join(a.get("address", "") for a in _g(o, "status", "addresses", default=[]) if a.get("type") == typ) \
        or "<none>"


def _images(o: Obj, tpl: tuple[str, ...]) -> str:
    return ",".join(str(c.get("image", "")) for c in _containers(o, tpl))


def _cnames(o: Obj, tpl: tuple[str, ...]) -> str:
    return ",".join(str(c.get("name", "")) for c in _containers(o, tpl))


_T = ("spec", "template", "spec")
_JT = ("spec", "jobTemplate", "spec", "template", "spec")

_COLUMNS: dict[tuple[str, str], list[Col]] = {
    ("", "Pod"): [
        ("Ready", "string", 0, _pod_ready, "The aggregate readiness state of this pod for accepting traffic."),
        ("Status", "string", 0, _pod_status, "The aggregate status of the containers in this pod."),
        ("Restarts", "string", 0, _pod_restarts, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("IP", "string", 1, lambda o: _none(_g(o, "status", "podIP")), "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
        ("Node", "string", 1, lambda o: _none(_g(o, "spec", "nodeName")), "NodeName is a request to schedule this pod onto a specific node."),
        ("Nominated Node", "string", 1, lambda o: _none(_g(o, "status", "nominatedNodeName")), "nominatedNodeName is set only when this pod preempts other pods on the node."),
        ("Readiness Gates", "string", 1, lambda o: _none(",".join(g.get("conditionType", "") for g in _g(o, "spec", "readinessGates", default=[]))), "If specified, all readiness gates will be evaluated for pod readiness."),
    ],
    ("apps", "Deployment"): [
        ("Ready", "string", 0, lambda o: f"{_g(o, 'status', 'readyReplicas', default=0)}/{_g(o, 'spec', 'replicas', default=0)}", "Number of the pod with ready state"),
        ("Up-to-date", "string", 0, lambda o: _g(o, "status", "updatedReplicas", default=0), "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        ("Available", "string", 0, lambda o: _g(o, "status", "availableReplicas", default=0), "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Containers", "string", 1, lambda o: _cnames(o, _T), "Names of each container in the template."),
        ("Images", "string", 1, lambda o: _images(o, _T), "Images referenced by each container in the template."),
        ("Selector", "string", 1, lambda o: selector_string(_g(o, "spec", "selector")), "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
    ],
    ("apps", "ReplicaSet"): [
        ("Desired", "integer", 0, lambda o: _g(o, "spec", "replicas", default=0), "Replicas is the number of desired replicas."),
        ("Current", "integer", 0, lambda o: _g(o, "status", "replicas", default=0), "Replicas is the most recently observed number of replicas."),
        ("Ready", "integer", 0, lambda o: _g(o, "status", "readyReplicas", default=0), "The number of ready replicas for this replica set."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Containers", "string", 1, lambda o: _cnames(o, _T), "Names of each container in the template."),
        ("Images", "string", 1, lambda o: _images(o, _T), "Images referenced by each container in the template."),
        ("Selector", "string", 1, lambda o: selector_string(_g(o, "spec", "selector")), "Selector is a label query over pods that should match the replica count."),
    ],
    ("apps", "StatefulSet"): [
        ("Ready", "string", 0, lambda o: f"{_g(o, 'status', 'readyReplicas', default=0)}/{_g(o, 'spec', 'replicas', default=0)}", "Number of the pod with ready state"),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Containers", "string", 1, lambda o: _cnames(o, _T), "Names of each container in the template."),
        ("Images", "string", 1, lambda o: _images(o, _T), "Images referenced by each container in the template."),
    ],
    ("", "Service"): [
        ("Type", "string", 0, lambda o: _g(o, "spec", "type", default="ClusterIP"), "Type of the service."),
        ("Cluster-IP", "string", 0, lambda o: _none(_g(o, "spec", "clusterIP")), "Cluster IP of the service."),
        ("External-IP", "string", 0, _external_ip, "External IP of the service."),
        ("Port(s)", "string", 0, _ports, "Port(s) of the service."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Selector", "string", 1, lambda o: _none(",".join(f"{k}={v}" for k, v in sorted((_g(o, "spec", "selector", default={})).items()))), "Route service traffic to pods with label keys and values matching this selector."),
    ],
    ("networking.k8s.io", "Ingress"): [
        ("Class", "string", 0, lambda o: _none(_g(o, "spec", "ingressClassName")), "The name of the IngressClass resource that should be used for additional configuration"),
        ("Hosts", "string", 0, _ingress_hosts, "Hosts that incoming requests are matched against before the ingress rule"),
        ("Address", "string", 0, _ingress_address, "Address is a list containing ingress points for the load-balancer"),
        ("Ports", "string", 0, lambda o: "80, 443" if _g(o, "spec", "tls") else "80", "Ports of TLS configurations that open"),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("networking.k8s.io", "IngressClass"): [
        ("Controller", "string", 0, lambda o: _g(o, "spec", "controller", default=""), "Controller that is responsible for handling this class"),
        ("Parameters", "string", 0, _ingress_class_params, "A reference to a resource with additional parameters"),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "Endpoints"): [
        ("Endpoints", "string", 0, _endpoints, "Endpoints of the service."),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("discovery.k8s.io", "EndpointSlice"): [
        ("AddressType", "string", 0, lambda o: o.get("addressType", ""), "The IP protocol for this slice"),
        ("Ports", "string", 0, lambda o: _none(",".join(str(p.get("port", "")) for p in o.get("ports") or [])), "Ports of the slice"),
        ("Endpoints", "string", 0, lambda o: _none(",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses") or [])), "Addresses of the endpoints"),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "ConfigMap"): [
        ("Data", "string", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}), "Data contains the configuration data."),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "Secret"): [
        ("Type", "string", 0, lambda o: o.get("type", "Opaque"), "The type of the secret"),
        ("Data", "string", 0, lambda o: len(o.get("data") or {}), "The number of entries in the secret's data"),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "ServiceAccount"): [
        ("Secrets", "string", 0, lambda o: len(o.get("secrets") or []), "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "Node"): [
        ("Status", "string", 0, lambda o: _node_status(o), "The status of the node"),
        ("Roles", "string", 0, lambda o: ",".join(sorted(k.split("/", 1)[1] for k in _g(o, "metadata", "labels", default={})
                                                         if k.startswith("node-role.kubernetes.io/"))) or "<none>",
         "The roles of the node"),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Version", "string", 0, lambda o: _g(o, "status", "nodeInfo", "kubeletVersion", default=""), "Kubelet Version reported by the node."),
        ("Internal-IP", "string", 1, lambda o: _addr(o, "InternalIP"), "List of internal IPs."),
        ("External-IP", "string", 1, lambda o: _addr(o, "ExternalIP"), "List of external IPs."),
        ("OS-Image", "string", 1, lambda o: _g(o, "status", "nodeInfo", "osImage", default="<unknown>"), "OS Image reported by the node."),
        ("Kernel-Version", "string", 1, lambda o: _g(o, "status", "nodeInfo", "kernelVersion", default="<unknown>"), "Kernel Version reported by the node."),
        ("Container-Runtime", "string", 1, lambda o: _g(o, "status", "nodeInfo", "containerRuntimeVersion", default="<unknown>"), "Container Runtime Version reported by the node."),
    ],
    ("coordination.k8s.io", "Lease"): [
        ("Holder", "string", 0, lambda o: _g(o, "spec", "holderIdentity", default=""), "The holder of the lease."),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("", "Namespace"): [
        ("Status", "string", 0, lambda o: _g(o, "status", "phase", default="Active"), "The status of the namespace"),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("batch", "Job"): [
        ("Status", "string", 0, _job_status, "Status of the job."),
        ("Completions", "string", 0, lambda o: f"{_g(o, 'status', 'succeeded', default=0)}/{_g(o, 'spec', 'completions', default=1)}", "The completion status of the job."),
        ("Duration", "string", 0, _job_duration, "Time required to complete the job."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Containers", "string", 1, lambda o: _cnames(o, _T), "Names of each container in the template."),
        ("Images", "string", 1, lambda o: _images(o, _T), "Images referenced by each container in the template."),
        ("Selector", "string", 1, lambda o: selector_string(_g(o, "spec", "selector")), "A label query over pods that should match the pod count."),
    ],
    ("batch", "CronJob"): [
        ("Schedule", "string", 0, lambda o: _g(o, "spec", "schedule", default=""), "The schedule in Cron format."),
        ("Timezone", "string", 0, lambda o: _none(_g(o, "spec", "timeZone")), "The time zone of the schedule."),
        ("Suspend", "boolean", 0, lambda o: bool(_g(o, "spec", "suspend", default=False)), "Whether the cron job is suspended."),
        ("Active", "integer", 0, lambda o: len(_g(o, "status", "active", default=[])), "Number of active jobs."),
        ("Last Schedule", "string", 0, lambda o: age(_g(o, "status", "lastScheduleTime")) if _g(o, "status", "lastScheduleTime") else "<none>", "Information when was the last time the job was successfully scheduled."),
        ("Age", "string", 0, _age, _AGE_DESC),
        ("Containers", "string", 1, lambda o: _cnames(o, _JT), "Names of each container in the template."),
        ("Images", "string", 1, lambda o: _images(o, _JT), "Images referenced by each container in the template."),
        ("Selector", "string", 1, lambda o: selector_string(_g(o, "spec", "jobTemplate", "spec", "selector")) or "<none>", "A label query over pods."),
    ],
    ("autoscaling", "HorizontalPodAutoscaler"): [
        ("Reference", "string", 0, lambda o: f"{_g(o, 'spec', 'scaleTargetRef', 'kind', default='')}/{_g(o, 'spec', 'scaleTargetRef', 'name', default='')}", "Reference to the scaled object."),
        ("Targets", "string", 0, _hpa_targets, "Current and target metric values."),
        ("MinPods", "string", 0, lambda o: _g(o, "spec", "minReplicas", default="<unset>"), "Lower limit for the number of pods."),
        ("MaxPods", "integer", 0, lambda o: _g(o, "spec", "maxReplicas", default=0), "Upper limit for the number of pods."),
        ("Replicas", "integer", 0, lambda o: _g(o, "status", "currentReplicas", default=0), "Current number of replicas."),
        ("Age", "string", 0, _age, _AGE_DESC),
    ],
    ("apiextensions.k8s.io", "CustomResourceDefinition"): [
        ("Created At", "date", 0, lambda o: _g(o, "metadata", "creationTimestamp", default=""), _AGE_DESC),
    ],
}


def _event_columns() -> list[Col]:
    def last_seen(o: Obj) -> str:
        t = o.get("lastTimestamp") or _g(o, "series", "lastObservedTime") or o.get("eventTime") or \
            _g(o, "metadata", "creationTimestamp")
        return age(t)

    def obj_ref(o: Obj) -> str:
        ref = o.get("involvedObject") or o.get("regarding") or {}
        return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"

    return [
        ("Last Seen", "string", 0, last_seen, "Time when this Event was last seen"),
        ("Type", "string", 0, lambda o: o.get("type", ""), "Type of this event (Normal, Warning), new types could be added in the future."),
        ("Reason", "string", 0, lambda o: o.get("reason", ""), "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        ("Object", "string", 0, obj_ref, "The object that this event is about."),
        ("Subobject", "string", 1, lambda o: (o.get("involvedObject") or o.get("regarding") or {}).get("fieldPath", ""), "The field path of the object."),
        ("Source", "string", 1, lambda o: ", ".join(x for x in (_g(o, "source", "component") or o.get("reportingController"), _g(o, "source", "host")) if x), "The component reporting this event."),
        ("Message", "string", 0, lambda o: o.get("message") or o.get("note") or "", "A human-readable description of the status of this operation."),
        ("First Seen", "string", 1, lambda o: age(o.get("firstTimestamp") or o.get("eventTime")), "The time at which the event was first recorded."),
        ("Count", "string", 1, lambda o: o.get("count") or _g(o, "series", "count") or 1, "The number of times this event has occurred."),
        ("Name", "string", 1, _name, _NAME_DESC),
    ]


def _jsonpath(obj: Obj, path: str) -> Any:
    """The small JSONPath subset printer columns use: ``.a.b``, ``.a[0].b``, ``.a[*].b``, ``.a[?(@.k=="v")].b``."""
    cur: list[Any] = [obj]
    for tok in re.findall(r"\.([^.\[]+)|\[([^\]]+)\]", path.strip().lstrip("{").rstrip("}")):
        name, idx = tok
        nxt: list[Any] = []
        for c in cur:
            if name:
                if isinstance(c, dict) and name in c:
                    nxt.append(c[name])
            elif isinstance(c, list):
                if idx == "*":
                    nxt.extend(c)
                elif idx.startswith("?("):
                    m = re.fullmatch(r"\?\(@\.([\w.]+)\s*==\s*['\"]?([^'\"]*)['\"]?\)", idx)
                    if m:
                        nxt.extend(e for e in c if isinstance(e, dict) and str(_g(e, *m.group(1).split("."))) == m.group(2))
                else:
                    with contextlib.suppress(ValueError, IndexError):
                        nxt.append(c[int(idx)])
        cur = nxt
    if not cur:
        return None
    return cur[0] if len(cur) == 1 else cur


def _crd_columns(rt: ResourceType) -> list[Col]:
    cols: list[Col] = []
    for c in (rt.crd or {}).get("additionalPrinterColumns") or []:
        path, typ = str(c.get("jsonPath", "")), str(c.get("type", "string"))

        def cell(o: Obj, path: str = path, typ: str = typ) -> Any:
            v = _jsonpath(o, path)
            if typ == "date" and isinstance(v, str):
                return age(v)
            if isinstance(v, (dict, list)):
                import json

                return json.dumps(v, separators=(",", ":"))
            return v if v is not None else None

        cols.append((str(c.get("name", "")), "string" if typ == "date" else typ, int(c.get("priority") or 0), cell,
                     str(c.get("description", ""))))
    if not any(c[0].lower() == "age" for c in cols):
        cols.append(("Age", "date", 0, _age, _AGE_DESC))
    return cols


def columns(rt: ResourceType) -> list[Col]:
    if rt.crd is not None:
        return _crd_columns(rt)
    if rt.kind == "Event":
        return _event_columns()
    return _COLUMNS.get((rt.group, rt.kind), [("Age", "date", 0, _age, _AGE_DESC)])


def _partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(rt: ResourceType, objs: list[Obj], *, include_object: str = "Metadata", resource_version: str = "",
          continue_token: str = "", with_columns: bool = True) -> Obj:
    cols = columns(rt)
    has_name = rt.kind != "Event"
    defs = ([{"name": "Name", "type": "string", "format": "name", "description": _NAME_DESC, "priority": 0}]
            if has_name else [])
    defs += [{"name": n, "type": t, "format": "", "description": d, "priority": p} for n, t, p, _, d in cols]
    rows = []
    for o in objs:
        cells: list[Any] = [_name(o)] if has_name else []
        cells += [f(o) for _, _, _, f, _ in cols]
        row: Obj = {"cells": cells}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = _partial(o)
        rows.append(row)
    md: Obj = {"resourceVersion": resource_version}
    if continue_token:
        md["continue"] = continue_token
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
            "columnDefinitions": defs if with_columns else [], "rows": rows}
