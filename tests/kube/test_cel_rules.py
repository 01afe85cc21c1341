"""CRD validation rules (``x-kubernetes-validations``): the in-process client and the real kubectl."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.kube import KubeAPI
from pitwall.kube.cel import validate_rules
from pitwall.kube.errors import Cause, Invalid
from pitwall.traffic.gateway.crds import gateway_api_crds
from pitwall.traffic.istio_crds import istio_crds
from tests.conftest import SHARED
from tests.kube.conftest import KubeServer
from tests.kube_fixture import started_kube

pytestmark = pytest.mark.timeout(180)

CRD_FIXTURES = SHARED / "conformance" / "wave2" / "istio" / "pkg" / "config" / "validation" / "testdata" / "crds"
needs_wave2 = pytest.mark.skipif(not CRD_FIXTURES.is_dir(), reason="../shared/conformance/wave2 is not beside the repo")

# Istio's *-invalid.yaml docs that only its CEL rules reject (the rest are schema errors, tested elsewhere)
CEL_REJECTED = {
    ("authz-invalid.yaml", "service-account-and-namespace"),
    ("authz-invalid.yaml", "service-account-and-namespace-principal"),
    ("peerauth-invalid.yaml", "bad-port"), ("peerauth-invalid.yaml", "port-level-global"),
    ("peerauth-invalid.yaml", "zero-port"), ("peerauth-invalid.yaml", "high-port"),
    ("reqauth-invalid.yaml", "multi-refs"), ("reqauth-invalid.yaml", "ref-and-selector"),
    ("reqauth-invalid.yaml", "bad-target-namespace"), ("reqauth-invalid.yaml", "invalid-jwks"),
    ("reqauth-invalid.yaml", "bad-timeout"),
    ("serviceentry-invalid.yaml", "bad-selector-value"), ("serviceentry-invalid.yaml", "selector-and-endpoints"),
    ("serviceentry-invalid.yaml", "bad-host-wildcard"), ("serviceentry-invalid.yaml", "bad-cidr-resolution"),
    ("serviceentry-invalid.yaml", "duplicate-ports-number"), ("serviceentry-invalid.yaml", "bad-port"),
    ("serviceentry-invalid.yaml", "bad-port-target"), ("serviceentry-invalid.yaml", "none-with-endpoints"),
    ("serviceentry-invalid.yaml", "dns-rr-with-multiple-endpoints"),
}


def _rule(rule: str, **kw: Any) -> dict[str, Any]:
    return {"rule": rule, **kw}


WIDGET_SPEC: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-validations": [
        _rule("self.minReplicas <= self.maxReplicas", message="minReplicas must not exceed maxReplicas",
              fieldPath=".minReplicas"),
        _rule("self.size > 0", messageExpression="'size ' + string(self.size) + ' is not positive'",
              reason="FieldValueForbidden"),
        _rule("!has(self.mode) || self.mode != 'legacy'", reason="FieldValueRequired"),
    ],
    "properties": {
        "name": {"type": "string", "x-kubernetes-validations": [_rule("self == oldSelf", message="name is immutable")]},
        "minReplicas": {"type": "integer"},
        "maxReplicas": {"type": "integer"},
        "size": {"type": "integer"},
        "mode": {"type": "string"},
        "timeout": {"type": "string", "x-kubernetes-validations": [
            _rule("duration(self) >= duration('1ms')", message="must be a valid duration greater than 1ms")]},
        "tags": {"type": "object", "additionalProperties": {"type": "string"},
                 "x-kubernetes-validations": [_rule("self.all(k, k.startsWith('x-'))")]},
        "ports": {"type": "array", "items": {"type": "integer"},
                  "x-kubernetes-validations": [_rule("self.all(p, self.exists_one(q, p == q))",
                                                     reason="FieldValueDuplicate")]},
        "endpoint": {"type": "string", "x-kubernetes-validations": [
            _rule('url(self).getScheme() in ["http", "https"]', message="endpoint must be http(s)")]},
    },
}


def widget_crd(spec_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": copy.deepcopy(spec_schema or WIDGET_SPEC)}}}}]},
    }


def widget(obj_name: str = "w", **spec: Any) -> dict[str, Any]:
    base = {"name": "first", "minReplicas": 1, "maxReplicas": 3, "size": 2}
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": obj_name, "namespace": "default"},
            "spec": {**base, **spec}}


async def _causes(api: KubeAPI, obj: dict[str, Any], *, update: bool = False) -> list[dict[str, str]]:
    with pytest.raises(Invalid) as ei:
        await (api.client.update(obj) if update else api.client.create(obj))
    return [c.as_dict() for c in ei.value.causes]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, istio_crds(), gateway_api_crds()) as a:
        yield a


VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "reviews", "namespace": "default"},
      "spec": {"hosts": ["reviews"], "http": [{"timeout": "0.5ms",
                                               "route": [{"destination": {"host": "reviews"}}]}]}}


async def test_virtualservice_timeout_below_1ms_is_rejected_with_istios_message(api: KubeAPI) -> None:
    assert await _causes(api, copy.deepcopy(VS)) == [{
        "field": "spec.http[0].timeout", "reason": "FieldValueInvalid",
        "message": 'Invalid value: "string": must be a valid duration greater than 1ms'}]
    ok = copy.deepcopy(VS)
    ok["spec"]["http"][0]["timeout"] = "1h30m"  # Go's duration syntax
    await api.client.create(ok)
    assert (await api.client.get("networking.istio.io/v1", "VirtualService", "reviews", "default"))["spec"] == ok["spec"]


async def test_authorizationpolicy_selector_and_targetref_are_exclusive(api: KubeAPI) -> None:
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "both", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "targetRef": {"group": "", "kind": "Service", "name": "web"}}}
    causes = await _causes(api, ap)
    assert {"field": "spec", "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": only one of targetRefs or selector can be set'} in causes
    del ap["spec"]["targetRef"]
    await api.client.create(ap)


async def test_httproute_gateway_api_rules(api: KubeAPI) -> None:
    redirect = {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "default"},
             "spec": {"rules": [{"filters": [redirect, redirect]}]}}
    causes = await _causes(api, route)
    assert {"field": "spec.rules[0].filters", "reason": "FieldValueInvalid",
            "message": 'Invalid value: "array": RequestRedirect filter cannot be repeated'} in causes
    route["spec"]["rules"][0]["filters"] = [redirect]
    route["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "no-slash"}}]
    causes = await _causes(api, route)
    assert [c["field"] for c in causes] == ["spec.rules[0].matches[0].path"]
    assert "must be an absolute path and start with '/'" in causes[0]["message"]
    route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/shop"
    await api.client.create(route)


async def test_user_crd_messages_reasons_and_field_paths(api: KubeAPI) -> None:
    await api.client.create(widget_crd())
    await api.client.create(widget("ok", tags={"x-team": "a"}, ports=[80, 443], endpoint="https://example.com/x",
                                   timeout="250ms"))
    assert await _causes(api, widget(minReplicas=5)) == [{
        "field": "spec.minReplicas", "reason": "FieldValueInvalid",
        "message": 'Invalid value: "object": minReplicas must not exceed maxReplicas'}]
    assert await _causes(api, widget(size=0)) == [{
        "field": "spec", "reason": "FieldValueForbidden", "message": "Forbidden: size 0 is not positive"}]
    assert await _causes(api, widget(mode="legacy")) == [{
        "field": "spec", "reason": "FieldValueRequired",
        "message": "Required value: failed rule: !has(self.mode) || self.mode != 'legacy'"}]
    assert await _causes(api, widget(tags={"team": "a"})) == [{
        "field": "spec.tags", "reason": "FieldValueInvalid",
        "message": "Invalid value: \"object\": failed rule: self.all(k, k.startsWith('x-'))"}]
    assert await _causes(api, widget(ports=[80, 80])) == [{
        "field": "spec.ports", "reason": "FieldValueDuplicate", "message": 'Duplicate value: "array"'}]
    assert await _causes(api, widget(endpoint="ftp://example.com")) == [{
        "field": "spec.endpoint", "reason": "FieldValueInvalid",
        "message": 'Invalid value: "string": endpoint must be http(s)'}]
    # an evaluation error names the error and the rule's message, as the apiserver does
    assert await _causes(api, widget(timeout="5 minutes")) == [{
        "field": "spec.timeout", "reason": "FieldValueInvalid",
        "message": "Invalid value: \"string\": type conversion error from 'string' to 'google.protobuf.Duration' "
                   "evaluating rule: must be a valid duration greater than 1ms"}]
    assert [w["metadata"]["name"] for w in (await api.client.list("example.com/v1", "Widget", "default")).items] == ["ok"]


async def test_transition_rule_makes_a_field_immutable(api: KubeAPI) -> None:
    await api.client.create(widget_crd())
    created = await api.client.create(widget("w"))  # no old value: the oldSelf rule is not run
    changed = copy.deepcopy(created)
    changed["spec"]["name"] = "second"
    assert await _causes(api, changed, update=True) == [{
        "field": "spec.name", "reason": "FieldValueInvalid", "message": 'Invalid value: "string": name is immutable'}]
    stored = await api.client.get("example.com/v1", "Widget", "w", "default")
    assert stored["spec"]["name"] == "first"
    other = copy.deepcopy(stored)
    other["spec"]["maxReplicas"] = 9  # the name is unchanged: the transition rule passes
    assert (await api.client.update(other))["spec"]["maxReplicas"] == 9


async def test_optional_old_self_runs_on_create_too(api: KubeAPI) -> None:
    spec = {"type": "object", "properties": {"name": {"type": "string", "x-kubernetes-validations": [
        _rule("!oldSelf.hasValue() || self == oldSelf.value()", optionalOldSelf=True, message="immutable"),
        _rule("oldSelf.hasValue() || self != 'reserved'", optionalOldSelf=True, message="reserved on create")]}}}
    await api.client.create(widget_crd(spec))
    assert await _causes(api, widget("r", name="reserved")) == [{
        "field": "spec.name", "reason": "FieldValueInvalid", "message": 'Invalid value: "string": reserved on create'}]
    created = await api.client.create(widget("w"))
    created["spec"]["name"] = "other"
    assert (await _causes(api, created, update=True))[0]["message"] == 'Invalid value: "string": immutable'


async def test_a_rule_that_does_not_compile_rejects_the_crd(api: KubeAPI) -> None:
    spec = {"type": "object", "properties": {"size": {"type": "integer"}},
            "x-kubernetes-validations": [_rule("self.size >"), _rule("self.size > 0", reason="Bogus")]}
    causes = await _causes(api, widget_crd(spec))
    assert [(c["field"], c["reason"]) for c in causes] == [
        ("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule",
         "FieldValueInvalid"),
        ("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].reason",
         "FieldValueNotSupported")]
    assert causes[0]["message"].startswith('Invalid value: apiextensions.ValidationRule{Rule:"self.size >", ')
    assert "compilation failed" in causes[0]["message"]
    crds = await api.client.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert "widgets.example.com" not in {c["metadata"]["name"] for c in crds.items}


async def test_transition_rules_only_where_old_values_correlate(api: KubeAPI) -> None:
    spec = {"type": "object", "properties": {
        "names": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
            _rule("self == oldSelf")]}},
        "byName": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                   "items": {"type": "object", "required": ["name"], "properties": {
                       "name": {"type": "string"},
                       "port": {"type": "integer", "x-kubernetes-validations": [
                           _rule("self == oldSelf", message="port is immutable")]}}}},
        "size": {"type": "integer", "x-kubernetes-validations": [_rule("self > 0", optionalOldSelf=True)]}}}
    causes = await _causes(api, widget_crd(spec))
    root = "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
    assert causes == [
        {"field": f"{root}.properties[names].items.x-kubernetes-validations[0].rule", "reason": "FieldValueInvalid",
         "message": 'Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of '
                    f"the schema within {root}.properties[names].items"},
        {"field": f"{root}.properties[size].x-kubernetes-validations[0].optionalOldSelf",
         "reason": "FieldValueInvalid", "message": "Invalid value: true: may not be set if oldSelf is not used in rule"}]
    del spec["properties"]["names"], spec["properties"]["size"]
    await api.client.create(widget_crd(spec))  # a map list's items correlate by key
    w = await api.client.create(widget("w", byName=[{"name": "a", "port": 80}]))
    w["spec"]["byName"] = [{"name": "b", "port": 81}, {"name": "a", "port": 80}]
    w = await api.client.update(w)  # a new key has no old value; "a" kept its port
    w["spec"]["byName"][1]["port"] = 8080
    assert await _causes(api, w, update=True) == [{
        "field": "spec.byName[1].port", "reason": "FieldValueInvalid",
        "message": 'Invalid value: "integer": port is immutable'}]


def test_evaluation_is_capped_by_the_request_budget() -> None:
    """A rule quadratic in a list's size stops at the step budget instead of spinning."""
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"xs": {
        "type": "array", "items": {"type": "integer"},
        "x-kubernetes-validations": [_rule("self.all(a, self.all(b, a + b >= 0))")]}}}}}
    obj = {"metadata": {"name": "x"}, "spec": {"xs": list(range(200))}}
    assert validate_rules(schema, obj, None, budget=3_000) == [Cause(
        "spec.xs", "FieldValueInvalid", 'Invalid value: "array": validation failed due to running out of cost '
        "budget, no further validation rules will be run")]
    small = {"metadata": {"name": "x"}, "spec": {"xs": [1, 2, 3]}}
    assert validate_rules(schema, small, None, budget=3_000) == []


def test_an_evaluation_error_is_worded_as_cel_go_words_it() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string"}},
        "x-kubernetes-validations": [_rule("self.a == self.b", message="a must equal b")]}}}
    assert validate_rules(schema, {"metadata": {"name": "x"}, "spec": {"a": "1"}}, None) == [Cause(
        "spec", "FieldValueInvalid", 'Invalid value: "object": no such key: b evaluating rule: a must equal b')]


def test_a_stored_rule_that_does_not_compile_rejects_writes_not_the_server() -> None:
    """A CRD stored before rules were checked: its objects get the apiserver's ``rule compile error``."""
    schema = {"type": "object", "properties": {"spec": {"type": "object",
                                                        "x-kubernetes-validations": [_rule("self.a ==")]}}}
    causes = validate_rules(schema, {"metadata": {"name": "x"}, "spec": {"a": 1}}, None)
    assert [(c.field, c.reason) for c in causes] == [("spec", "FieldValueInvalid")]
    assert causes[0].message.startswith('Invalid value: "object": rule compile error: ')


def test_escaped_property_names_and_map_key_paths() -> None:
    """``namespace`` is ``__namespace__`` and ``a-b`` is ``a__dash__b`` in CEL; map keys print as ``[key]``."""
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "namespace": {"type": "string"}, "max-size": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {
            "type": "string", "x-kubernetes-validations": [_rule("!self.contains('*')", message="no wildcard")]}}},
        "x-kubernetes-validations": [_rule("self.__namespace__ == 'a' && self.max__dash__size < 3")]}}}
    ok = {"metadata": {"name": "x"}, "spec": {"namespace": "a", "max-size": 2, "labels": {"k": "v"}}}
    assert validate_rules(schema, ok, None) == []
    bad = {"metadata": {"name": "x"}, "spec": {"namespace": "b", "max-size": 2, "labels": {"k.io/x": "*"}}}
    assert [(c.field, c.message) for c in validate_rules(schema, bad, None)] == [
        ("spec", "Invalid value: \"object\": failed rule: self.__namespace__ == 'a' && self.max__dash__size < 3"),
        ("spec.labels[k.io/x]", 'Invalid value: "string": no wildcard')]


def _fixture_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@needs_wave2
async def test_istio_crd_fixtures_cel_errors_as_upstream_expects(api: KubeAPI) -> None:
    """Each invalid doc only CEL catches is rejected naming upstream's ``_err`` (the valid docs go through
    kubectl below: PyYAML reads ``[1.2.3.4, 001:db8::]`` otherwise than Go does)."""
    seen: set[tuple[str, str]] = set()
    for f in sorted(CRD_FIXTURES.glob("*-invalid.yaml")):
        for doc in _fixture_docs(f):
            if (f.name, doc["metadata"]["name"]) not in CEL_REJECTED:
                continue
            want = str(doc.pop("_err")).strip()
            doc["metadata"]["namespace"] = "default"
            with pytest.raises(Invalid) as ei:
                await api.client.create(doc)
            assert want in str(ei.value), (f.name, doc["metadata"]["name"], str(ei.value))
            seen.add((f.name, doc["metadata"]["name"]))
    assert seen == CEL_REJECTED


# ---- the real kubectl --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    s = KubeServer(tmp_path_factory.mktemp("kube"))
    s.kube.add_builtin_crds(istio_crds())
    s.start()
    try:
        yield s
    finally:
        s.stop()


@needs_wave2
@pytest.mark.slow
def test_kubectl_applies_istios_valid_fixtures(server: KubeServer) -> None:
    k = server.kubectl
    k("create", "namespace", "istio-system")
    files = sorted(CRD_FIXTURES.glob("*-valid.yaml"))
    assert len(files) == 5
    for f in files:  # several docs of one name: the later ones update the earlier, rules run on each
        assert "created" in k("apply", "-f", str(f)).stdout
        k("delete", "--ignore-not-found", "-f", str(f))


@pytest.mark.slow
def test_kubectl_sees_the_apiservers_cel_errors(server: KubeServer) -> None:
    k = server.kubectl
    p = k("apply", "-f", "-", input=json.dumps(VS), check=False)
    assert p.returncode == 1
    assert ('The VirtualService "reviews" is invalid: spec.http[0].timeout: Invalid value: "string": '
            "must be a valid duration greater than 1ms") in p.stderr
    assert k("get", "virtualservices", "-o", "name").stdout == ""

    k("apply", "-f", "-", input=json.dumps(widget_crd()))
    k("apply", "-f", "-", input=json.dumps(widget("w")))
    changed = widget("w", name="second")
    p = k("apply", "-f", "-", input=json.dumps(changed), check=False)
    assert p.returncode == 1
    assert 'The Widget "w" is invalid: spec.name: Invalid value: "string": name is immutable' in p.stderr
    p = k("apply", "-f", "-", input=json.dumps(widget("v", minReplicas=9)), check=False)
    assert 'spec.minReplicas: Invalid value: "object": minReplicas must not exceed maxReplicas' in p.stderr

    bad = widget_crd({"type": "object", "x-kubernetes-validations": [_rule("self.size >")]})
    bad["metadata"]["name"] = "gadgets.example.com"
    bad["spec"]["names"] = {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"}
    p = k("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode == 1
    assert ("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: "
            'Invalid value: apiextensions.ValidationRule{Rule:"self.size >"') in p.stderr
    assert "compilation failed" in p.stderr
