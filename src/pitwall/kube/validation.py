"""Validation of built-in kinds: enough that bad manifests get 422 with field paths.

Messages follow apimachinery's field errors (``Required value``, ``Invalid
value: X: ...``, ``Unsupported value: "x": supported values: ...``,
``Duplicate value``, ``field is immutable``), each a ``Cause`` with the
field path kubectl prints (``spec.template.spec.containers[0].image``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pitwall.kube.errors import Cause
from pitwall.kube.selectors import match_label_selector_object

__all__ = ["Errs", "validate_builtin", "validate_meta"]

Obj = dict[str, Any]

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"


def _go(v: Any) -> str:
    """A value as Go's %#v prints it in apimachinery's field errors."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict) and all(isinstance(x, str) for x in v.values()):
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


class Errs:
    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, path: str, detail: str = "") -> None:
        self.causes.append(Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_go(value)}: {detail}"))

    def unsupported(self, path: str, value: Any, supported: list[str]) -> None:
        sup = ", ".join(json.dumps(s) for s in supported)
        self.causes.append(Cause(path, "FieldValueNotSupported",
                                 f"Unsupported value: {_go(value)}: supported values: {sup}"))

    def duplicate(self, path: str, value: Any) -> None:
        self.causes.append(Cause(path, "FieldValueDuplicate", f"Duplicate value: {_go(value)}"))

    def forbidden(self, path: str, detail: str) -> None:
        self.causes.append(Cause(path, "FieldValueForbidden", f"Forbidden: {detail}"))

    def type_invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(path, "FieldValueTypeInvalid", f"Invalid value: {_go(value)}: {detail}"))


def _subdomain_msg() -> str:
    return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
            f"'{DNS1123_SUBDOMAIN}')")


def _label_msg() -> str:
    return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
            f"and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            f"'{DNS1123_LABEL}')")


def _dns1035_msg() -> str:
    return ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
            f"character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
            f"validation is '{DNS1035_LABEL}')")


def check_subdomain(e: Errs, path: str, v: str) -> None:
    if len(v) > 253:
        e.invalid(path, v, "must be no more than 253 characters")
    elif not re.fullmatch(DNS1123_SUBDOMAIN, v):
        e.invalid(path, v, _subdomain_msg())


def check_label(e: Errs, path: str, v: str) -> None:
    if len(v) > 63:
        e.invalid(path, v, "must be no more than 63 characters")
    elif not re.fullmatch(DNS1123_LABEL, v):
        e.invalid(path, v, _label_msg())


def _check_qualified(e: Errs, path: str, key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix:
        check_subdomain(e, path, prefix)
    if not name or len(name) > 63 or not re.fullmatch(_QNAME, name):
        e.invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                  "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
                  f"for validation is '{_QNAME}')")


def _check_labels(e: Errs, path: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        e.type_invalid(path, labels, "must be a map of strings")
        return
    for k, v in labels.items():
        _check_qualified(e, path, k)
        if not isinstance(v, str):
            e.type_invalid(f"{path}[{k}]", v, "must be a string")
        elif len(v) > 63 or not re.fullmatch(_LABEL_VALUE, v):
            e.invalid(path, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                      "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                      f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')")


def validate_meta(e: Errs, obj: Obj, name_rule: str, namespaced: bool) -> None:
    m = obj.get("metadata") or {}
    name = m.get("name", "")
    if not name:
        e.required("metadata.name", "name or generateName is required")
    elif name_rule == "label":
        check_label(e, "metadata.name", name)
    elif name_rule == "dns1035":
        if len(name) > 63 or not re.fullmatch(DNS1035_LABEL, name):
            e.invalid("metadata.name", name, _dns1035_msg())
    elif name_rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            e.invalid("metadata.name", name, "may not contain '/' or '%'")
    else:
        check_subdomain(e, "metadata.name", name)
    if namespaced and not m.get("namespace"):
        e.required("metadata.namespace")
    _check_labels(e, "metadata.labels", m.get("labels"))
    ann = m.get("annotations")
    if isinstance(ann, dict):
        for k, v in ann.items():
            _check_qualified(e, "metadata.annotations", k)
            if not isinstance(v, str):
                e.type_invalid(f"metadata.annotations[{k}]", v, "must be a string")
        if sum(len(k) + len(str(v)) for k, v in ann.items()) > 256 * 1024:
            e.causes.append(Cause("metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes"))
    elif ann is not None:
        e.type_invalid("metadata.annotations", ann, "must be a map of strings")


def _port(e: Errs, path: str, v: Any, allow_zero: bool = False) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not ((0 if allow_zero else 1) <= v <= 65535):
        e.invalid(path, v, "must be between 1 and 65535, inclusive")


_PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _containers(e: Errs, path: str, cs: Any, required: bool) -> None:
    if not cs:
        if required:
            e.required(path)
        return
    if not isinstance(cs, list):
        e.type_invalid(path, cs, "must be a list")
        return
    seen: set[str] = set()
    for i, c in enumerate(cs):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            e.type_invalid(p, c, "must be an object")
            continue
        name = c.get("name")
        if not name:
            e.required(f"{p}.name")
        else:
            check_label(e, f"{p}.name", str(name))
            if name in seen:
                e.duplicate(f"{p}.name", name)
            seen.add(str(name))
        if not c.get("image"):
            e.required(f"{p}.image")
        pol = c.get("imagePullPolicy")
        if pol is not None and pol not in ("Always", "IfNotPresent", "Never"):
            e.unsupported(f"{p}.imagePullPolicy", pol, ["Always", "IfNotPresent", "Never"])
        pnames: set[str] = set()
        for j, port in enumerate(c.get("ports") or []):
            pp = f"{p}.ports[{j}]"
            if not isinstance(port, dict):
                continue
            if "containerPort" not in port:
                e.required(f"{pp}.containerPort")
            else:
                _port(e, f"{pp}.containerPort", port["containerPort"])
            if "hostPort" in port and port["hostPort"] not in (None, 0):
                _port(e, f"{pp}.hostPort", port["hostPort"])
            proto = port.get("protocol")
            if proto is not None and proto not in _PROTOCOLS:
                e.unsupported(f"{pp}.protocol", proto, _PROTOCOLS)
            pn = port.get("name")
            if pn:
                if len(pn) > 15 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pn) or not re.search("[a-z]", pn):
                    e.invalid(f"{pp}.name", pn, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens "
                              "(-) and be no more than 15 characters")
                elif pn in pnames:
                    e.duplicate(f"{pp}.name", pn)
                pnames.add(pn)
        for j, env in enumerate(c.get("env") or []):
            if isinstance(env, dict) and not env.get("name"):
                e.required(f"{p}.env[{j}].name")
        res = c.get("resources") or {}
        if isinstance(res, dict):
            for kind in ("limits", "requests"):
                for rn, q in (res.get(kind) or {}).items():
                    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE]|u|n)?", str(q)):
                        e.invalid(f"{p}.resources.{kind}[{rn}]", q,
                                  "quantities must match the regular expression "
                                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


def validate_pod_spec(e: Errs, path: str, spec: Any, restart: list[str] | None = None) -> None:
    if not isinstance(spec, dict):
        e.required(path)
        return
    _containers(e, f"{path}.containers", spec.get("containers"), True)
    _containers(e, f"{path}.initContainers", spec.get("initContainers"), False)
    rp = spec.get("restartPolicy")
    allowed = restart or ["Always", "OnFailure", "Never"]
    if rp is not None and rp not in allowed:
        e.unsupported(f"{path}.restartPolicy", rp, allowed)
    dp = spec.get("dnsPolicy")
    dns = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
    if dp is not None and dp not in dns:
        e.unsupported(f"{path}.dnsPolicy", dp, dns)
    tg = spec.get("terminationGracePeriodSeconds")
    if tg is not None and (not isinstance(tg, int) or tg < 0):
        e.invalid(f"{path}.terminationGracePeriodSeconds", tg, "must be greater than or equal to 0")
    vnames: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        if not isinstance(v, dict):
            continue
        n = v.get("name")
        if not n:
            e.required(f"{path}.volumes[{i}].name")
        elif n in vnames:
            e.duplicate(f"{path}.volumes[{i}].name", n)
        else:
            check_label(e, f"{path}.volumes[{i}].name", str(n))
        vnames.add(str(n))


def _template(e: Errs, spec: Obj, restart: list[str] | None, selector_required: bool = True) -> None:
    sel = spec.get("selector")
    tpl = spec.get("template")
    if selector_required and not sel:
        e.required("spec.selector")
    elif isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions") and selector_required:
        e.invalid("spec.selector", sel, "empty selector is invalid for deployment")
    if not isinstance(tpl, dict):
        e.required("spec.template")
        return
    labels = (tpl.get("metadata") or {}).get("labels")
    _check_labels(e, "spec.template.metadata.labels", labels)
    if isinstance(sel, dict) and (sel.get("matchLabels") or sel.get("matchExpressions")) and \
            not match_label_selector_object(sel, labels or {}):
        e.invalid("spec.template.metadata.labels", labels or {}, "`selector` does not match template `labels`")
    validate_pod_spec(e, "spec.template.spec", tpl.get("spec"), restart)


def _nonneg(e: Errs, path: str, v: Any) -> None:
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        e.invalid(path, v, "must be greater than or equal to 0")


def _int_or_percent(e: Errs, path: str, v: Any) -> None:
    if v is None:
        return
    if isinstance(v, str):
        if not re.fullmatch(r"\d+%", v):
            e.invalid(path, v, "a valid percent string must be a numeric string followed by an ending '%' "
                      "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
    elif not isinstance(v, int) or v < 0:
        e.invalid(path, v, "must be greater than or equal to 0")


_SVC_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _service(e: Errs, obj: Obj) -> None:
    spec = obj.get("spec") or {}
    typ = spec.get("type", "ClusterIP")
    if typ not in _SVC_TYPES:
        e.unsupported("spec.type", typ, _SVC_TYPES)
    ports = spec.get("ports") or []
    if not ports and typ != "ExternalName" and spec.get("clusterIP") != "None":
        e.required("spec.ports")
    names: set[str] = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        pp = f"spec.ports[{i}]"
        if len(ports) > 1 and not p.get("name"):
            e.required(f"{pp}.name")
        n = p.get("name")
        if n:
            if n in names:
                e.duplicate(f"{pp}.name", n)
            names.add(n)
            check_label(e, f"{pp}.name", n)
        if "port" not in p:
            e.required(f"{pp}.port")
        else:
            _port(e, f"{pp}.port", p["port"])
        proto = p.get("protocol")
        if proto is not None and proto not in _PROTOCOLS:
            e.unsupported(f"{pp}.protocol", proto, _PROTOCOLS)
        tp = p.get("targetPort")
        if isinstance(tp, int):
            _port(e, f"{pp}.targetPort", tp)
        if "nodePort" in p and p["nodePort"] not in (None, 0):
            _port(e, f"{pp}.nodePort", p["nodePort"])
    sa = spec.get("sessionAffinity")
    if sa is not None and sa not in ("ClientIP", "None"):
        e.unsupported("spec.sessionAffinity", sa, ["ClientIP", "None"])
    _check_labels(e, "spec.selector", spec.get("selector"))
    if typ == "ExternalName" and not spec.get("externalName"):
        e.required("spec.externalName")


def _config_keys(e: Errs, obj: Obj, fields: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for f in fields:
        data = obj.get(f)
        if data is None:
            continue
        if not isinstance(data, dict):
            e.type_invalid(f, data, "must be a map")
            continue
        for k in data:
            if not re.fullmatch(_CONFIG_KEY, k) or len(k) > 253:
                e.invalid(f"{f}[{k}]", k, "a valid config key must consist of alphanumeric characters, '-', '_' or "
                          f"'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                          f"'{_CONFIG_KEY}')")
            if k in seen:
                e.invalid(f"{f}[{k}]", k, "duplicate of key present in data")
            seen.add(k)


def _validate_role_ref(e: Errs, kind: str, obj: Obj, old: Obj | None) -> None:
    """A binding's roleRef: a Role (RoleBindings only) or ClusterRole by name; never changed (upstream)."""
    ref = obj.get("roleRef")
    allowed = ["ClusterRole", "Role"] if kind == "RoleBinding" else ["ClusterRole"]
    if not isinstance(ref, dict):
        e.required("roleRef")
        return
    if ref.get("kind") not in allowed:
        e.unsupported("roleRef.kind", ref.get("kind"), allowed)
    if not ref.get("name"):
        e.required("roleRef.name")
    if old is not None and old.get("roleRef") != ref:
        e.invalid("roleRef", ref, "cannot change roleRef")


def _immutable(e: Errs, path: str, old: Any, new: Any) -> None:
    if old != new:
        e.invalid(path, new, "field is immutable")


def validate_builtin(kind: str, group: str, obj: Obj, old: Obj | None, namespaced: bool) -> list[Cause]:
    e = Errs()
    rbac = group == "rbac.authorization.k8s.io"
    rule = "path" if rbac else {"Namespace": "label", "Service": "dns1035", "Event": "path"}.get(kind, "subdomain")
    validate_meta(e, obj, rule, namespaced)
    if rbac and kind in ("RoleBinding", "ClusterRoleBinding"):
        _validate_role_ref(e, kind, obj, old)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if kind == "Pod" and group == "":
        validate_pod_spec(e, "spec", obj.get("spec"))
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        _nonneg(e, "spec.replicas", spec.get("replicas"))
        _template(e, spec, ["Always"])
        if kind == "Deployment":
            strat = spec.get("strategy") or {}
            st = strat.get("type")
            if st is not None and st not in ("Recreate", "RollingUpdate"):
                e.unsupported("spec.strategy.type", st, ["Recreate", "RollingUpdate"])
            ru = strat.get("rollingUpdate")
            if st == "Recreate" and ru:
                e.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
            if isinstance(ru, dict):
                _int_or_percent(e, "spec.strategy.rollingUpdate.maxSurge", ru.get("maxSurge"))
                _int_or_percent(e, "spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"))
                if ru.get("maxSurge") in (0, "0%") and ru.get("maxUnavailable") in (0, "0%"):
                    e.invalid("spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"),
                              "may not be 0 when `maxSurge` is 0")
            _nonneg(e, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
            _nonneg(e, "spec.minReadySeconds", spec.get("minReadySeconds"))
            pds = spec.get("progressDeadlineSeconds")
            if isinstance(pds, int) and pds <= int(spec.get("minReadySeconds") or 0):
                e.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds")
        if old is not None:
            _immutable(e, "spec.selector", (old.get("spec") or {}).get("selector"), spec.get("selector"))
    elif kind == "Job":
        _job(e, "spec", spec, old.get("spec") if old else None)
    elif kind == "CronJob":
        sched = spec.get("schedule")
        if not sched:
            e.required("spec.schedule")
        elif not _cron_ok(str(sched)):
            e.invalid("spec.schedule", sched, "unparseable cron expression")
        cp = spec.get("concurrencyPolicy")
        if cp is not None and cp not in ("Allow", "Forbid", "Replace"):
            e.unsupported("spec.concurrencyPolicy", cp, ["Allow", "Forbid", "Replace"])
        jt = spec.get("jobTemplate")
        if not isinstance(jt, dict) or not isinstance(jt.get("spec"), dict):
            e.required("spec.jobTemplate.spec")
        else:
            sub = Errs()
            _job(sub, "spec", jt["spec"], None, generated_selector=True)
            e.causes += [c.__class__(c.field.replace("spec.", "spec.jobTemplate.spec.", 1), c.reason, c.message)
                         for c in sub.causes]
    elif kind == "Service" and group == "":
        _service(e, obj)
        if old is not None:
            ocip = (old.get("spec") or {}).get("clusterIP")
            if ocip and spec.get("clusterIP") and spec.get("clusterIP") != ocip:
                _immutable(e, "spec.clusterIPs[0]", ocip, spec.get("clusterIP"))
    elif kind == "ConfigMap":
        _config_keys(e, obj, ("data", "binaryData"))
    elif kind == "Secret" and group == "":
        _config_keys(e, obj, ("data", "stringData"))
        if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
            e.forbidden("data", "field is immutable when `immutable` is set")
    elif kind == "HorizontalPodAutoscaler":
        ref = spec.get("scaleTargetRef") or {}
        if not ref.get("kind"):
            e.required("spec.scaleTargetRef.kind")
        if not ref.get("name"):
            e.required("spec.scaleTargetRef.name")
        mx, mn = spec.get("maxReplicas"), spec.get("minReplicas")
        if not isinstance(mx, int) or mx < 1:
            e.invalid("spec.maxReplicas", mx, "must be greater than or equal to 1")
        if isinstance(mn, int) and isinstance(mx, int) and mn > mx:
            e.invalid("spec.minReplicas", mn, "must be less than or equal to maxReplicas")
    elif kind == "EndpointSlice":
        at = obj.get("addressType")
        if not at:
            e.required("addressType")
        elif at not in ("IPv4", "IPv6", "FQDN"):
            e.unsupported("addressType", at, ["FQDN", "IPv4", "IPv6"])
    return e.causes


def _job(e: Errs, path: str, spec: Obj, old: Obj | None, generated_selector: bool = False) -> None:
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        _nonneg(e, f"{path}.{f}", spec.get(f))
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        e.required(f"{path}.template")
        return
    validate_pod_spec(e, f"{path}.template.spec", tpl.get("spec"), ["OnFailure", "Never"])
    rp = (tpl.get("spec") or {}).get("restartPolicy")
    if rp is None and isinstance(tpl.get("spec"), dict):
        e.unsupported(f"{path}.template.spec.restartPolicy", "Always", ["OnFailure", "Never"])
    if old is not None:
        _immutable(e, f"{path}.selector", old.get("selector"), spec.get("selector"))
        ot = (old.get("template") or {}).get("spec")
        if ot is not None and ot != (tpl.get("spec")) and not spec.get("suspend"):
            _immutable(e, f"{path}.template", old.get("template"), tpl)


_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron_ok(s: str) -> bool:
    s = s.strip()
    if s.startswith("TZ=") or s.startswith("CRON_TZ="):
        s = s.split(None, 1)[1] if " " in s else ""
    if s in _MACROS or s.startswith("@every "):
        return True
    fields = s.split()
    if len(fields) != 5:
        return False
    return all(re.fullmatch(r"[\d*?/,\-A-Za-z]+", f) for f in fields)
