from __future__ import annotations

import pytest

from pitwall.kube.errors import BadRequest, Conflict, UnsupportedMedia
from pitwall.kube.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC, apply_patch, json_patch, merge_patch
from pitwall.kube.registry import BUILTIN, ResourceType

DEP = next(rt for rt in BUILTIN if rt.kind == "Deployment")


def _dep() -> dict:  # type: ignore[type-arg]
    return {"spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:1"}],
        "volumes": [{"name": "v", "emptyDir": {}}]}}}}


def test_json_patch() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}, {"op": "remove", "path": "/b/c"},
                           {"op": "copy", "from": "/a/0", "path": "/d"}, {"op": "move", "from": "/d", "path": "/e"},
                           {"op": "replace", "path": "/a/1", "value": 9}, {"op": "test", "path": "/e", "value": 1}])
    assert out == {"a": [1, 9, 3], "b": {}, "e": 1}
    assert doc == {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(Conflict):
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    with pytest.raises(BadRequest):
        json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "l": [1]}, {"a": None, "b": {"c": 3}, "l": [2]}) == \
        {"b": {"c": 3, "d": 2}, "l": [2]}


def test_strategic_merge_by_name() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2",
                                                            "env": [{"name": "Y", "value": "2"}]}]}}}}
    out = apply_patch(DEP, STRATEGIC, _dep(), patch)
    cs = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["a", "b"]
    assert cs[0]["image"] == "a:2" and [e["name"] for e in cs[0]["env"]] == ["X", "Y"]
    assert cs[0]["ports"] == [{"containerPort": 80}]


def test_strategic_directives() -> None:
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "b", "$patch": "delete"}],
                                             "$setElementOrder/containers": [{"name": "a"}]}}}}
    out = apply_patch(DEP, STRATEGIC, _dep(), delete)
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["a"]
    replace = {"spec": {"template": {"spec": {"volumes": [{"name": "w", "emptyDir": {}}, {"$patch": "replace"}]}}}}
    out = apply_patch(DEP, STRATEGIC, _dep(), replace)
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "w", "emptyDir": {}}]
    retain = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    cur = _dep()
    cur["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    assert apply_patch(DEP, STRATEGIC, cur, retain)["spec"]["strategy"] == {"type": "Recreate"}


def test_patch_types() -> None:
    assert apply_patch(DEP, MERGE_PATCH, _dep(), {"spec": {"replicas": 3}})["spec"]["replicas"] == 3
    assert apply_patch(DEP, JSON_PATCH, _dep(), [{"op": "replace", "path": "/spec/replicas", "value": 2}])[
        "spec"]["replicas"] == 2
    cr = ResourceType("x.io", "v1", "Thing", "things", "thing", True, crd={"name": "v1"})
    with pytest.raises(UnsupportedMedia):
        apply_patch(cr, STRATEGIC, {}, {})
    with pytest.raises(UnsupportedMedia):
        apply_patch(DEP, "text/plain", {}, {})
