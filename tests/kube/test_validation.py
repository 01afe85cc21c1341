from __future__ import annotations

from typing import Any

from pitwall.kube.crd import prune_and_default, validate_crd
from pitwall.kube.validation import validate_builtin


def _pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def _fields(causes: list[Any]) -> list[tuple[str, str]]:
    return [(c.field, c.message) for c in causes]


def test_pod_spec_errors() -> None:
    causes = validate_builtin("Pod", "", _pod(containers=[
        {"name": "Bad_Name", "image": "x", "ports": [{"containerPort": 80, "protocol": "ICMP"}]},
        {"name": "b", "image": "y", "env": [{"value": "1"}]}], restartPolicy="Sometimes"), None, True)
    assert _fields(causes) == [
        ("spec.containers[0].name", "Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower "
         "case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. "
         "'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        ("spec.containers[0].ports[0].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
        ("spec.containers[1].env[0].name", "Required value"),
        ("spec.restartPolicy", 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
    ]
    assert _fields(validate_builtin("Pod", "", _pod(), None, True)) == [("spec.containers", "Required value")]


def test_deployment_selector_and_immutability() -> None:
    dep = {"metadata": {"name": "d", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "a"}}, "replicas": -1,
                    "template": {"metadata": {"labels": {"app": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert _fields(validate_builtin("Deployment", "apps", dep, None, True)) == [
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.template.metadata.labels",
         'Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`')]
    ok = {**dep, "spec": {**dep["spec"], "replicas": 1, "template": {**dep["spec"]["template"],
                                                                     "metadata": {"labels": {"app": "a"}}}}}
    assert validate_builtin("Deployment", "apps", ok, None, True) == []
    moved = {**ok, "spec": {**ok["spec"], "selector": {"matchLabels": {"app": "x"}}}}
    assert any(f == "spec.selector" and m.endswith("field is immutable")
               for f, m in _fields(validate_builtin("Deployment", "apps", moved, ok, True)))


def test_service_and_configmap() -> None:
    svc = {"metadata": {"name": "9svc", "namespace": "d"}, "spec": {"ports": [{"port": 80}, {"port": 70000}]}}
    fields = [f for f, _ in _fields(validate_builtin("Service", "", svc, None, True))]
    assert fields == ["metadata.name", "spec.ports[0].name", "spec.ports[1].name", "spec.ports[1].port"]
    cm = {"metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v"}}
    assert [f for f, _ in _fields(validate_builtin("ConfigMap", "", cm, None, True))] == ["data[bad key]"]


def test_crd_definition_checks() -> None:
    crd = {"metadata": {"name": "wrong"}, "spec": {"group": "nodot", "names": {"plural": "xs", "kind": "X"},
                                                   "scope": "Galaxy", "versions": []}}
    fields = [f for f, _ in _fields(validate_crd(crd))]
    assert fields == ["spec.group", "metadata.name", "spec.scope", "spec.versions"]


def test_prune_nulls_and_defaults() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "string", "default": "x"}, "b": {"type": "string", "nullable": True}, "c": {"type": "string"}}}}}
    out = prune_and_default({"spec": {"b": None, "c": None, "zzz": 1}}, schema, root=True)
    assert out == {"spec": {"a": "x", "b": None}}
