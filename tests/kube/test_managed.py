from __future__ import annotations

import pytest

from pitwall.kube.errors import Conflict
from pitwall.kube.managed import apply_config, fields_v1, leaves, paths_of, track_update
from pitwall.kube.patch import schema_of
from pitwall.kube.registry import BUILTIN

DEP = next(rt for rt in BUILTIN if rt.kind == "Deployment")
CM = next(rt for rt in BUILTIN if rt.kind == "ConfigMap")


def _cfg(image: str, extra_env: bool = True) -> dict:  # type: ignore[type-arg]
    env = [{"name": "A", "value": "1"}] + ([{"name": "B", "value": "2"}] if extra_env else [])
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image, "env": env}]}}}}


def test_fields_v1_round_trip() -> None:
    paths = set(leaves(_cfg("x"), schema_of(DEP)))
    fv = fields_v1(paths)
    c = fv["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c"}']
    assert "." in c and "f:image" in c and 'k:{"name":"B"}' in c["f:env"]
    assert paths_of(fv) == paths


def test_apply_owns_and_removes() -> None:
    live = apply_config(DEP, None, _cfg("x"), "mgr", False)
    assert [e["manager"] for e in live["metadata"]["managedFields"]] == ["mgr"]
    out = apply_config(DEP, live, _cfg("y", extra_env=False), "mgr", False)
    c = out["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "y" and [e["name"] for e in c["env"]] == ["A"]


def test_apply_conflicts_with_other_manager() -> None:
    live = apply_config(DEP, None, _cfg("x"), "first", False)
    with pytest.raises(Conflict, match='conflict with "first"'):
        apply_config(DEP, live, _cfg("y"), "second", False)
    out = apply_config(DEP, live, _cfg("y"), "second", True)
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "y"
    shared = apply_config(DEP, live, _cfg("x"), "second", False)  # same values: co-owned, no conflict
    assert {e["manager"] for e in shared["metadata"]["managedFields"]} == {"first", "second"}


def test_update_takes_fields() -> None:
    old = {"metadata": {"name": "c"}, "data": {"a": "1"}}
    new = {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    track_update(CM, old, None, "creator")
    new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
    track_update(CM, new, old, "editor")
    owners = {e["manager"]: e["fieldsV1"] for e in new["metadata"]["managedFields"]}
    assert owners["creator"] == {"f:data": {"f:a": {}}} and owners["editor"] == {"f:data": {"f:b": {}}}
