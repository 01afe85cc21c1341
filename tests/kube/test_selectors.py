from __future__ import annotations

import re

import pytest

from pitwall.kube.errors import BadRequest
from pitwall.kube.selectors import FieldSelector, LabelSelector, match_label_selector_object, selector_string


@pytest.mark.parametrize(("sel", "labels", "want"), [
    ("", {}, True),
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "api"}, False),
    ("app!=web", {}, True),
    ("app!=web", {"app": "web"}, False),
    ("tier in (a, b)", {"tier": "b"}, True),
    ("tier in (a,b)", {}, False),
    ("tier notin (a,b)", {}, True),
    ("tier notin (a,b)", {"tier": "a"}, False),
    ("tier", {"tier": ""}, True),
    ("!tier", {"tier": "x"}, False),
    ("app=web,!canary,env in (prod)", {"app": "web", "env": "prod"}, True),
    ("app=web,!canary,env in (prod)", {"app": "web", "env": "prod", "canary": "1"}, False),
])
def test_label_selector(sel: str, labels: dict[str, str], want: bool) -> None:
    assert LabelSelector.parse(sel).matches(labels) is want


@pytest.mark.parametrize("bad", ["app in a", "app in (a", "a b", "!"])
def test_label_selector_errors(bad: str) -> None:
    with pytest.raises(BadRequest):
        LabelSelector.parse(bad)


def test_field_selector() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert FieldSelector.parse("status.phase=Running,spec.nodeName=n1", "Pod").matches(pod)
    assert not FieldSelector.parse("status.phase!=Running", "Pod").matches(pod)
    assert FieldSelector.parse("metadata.name==p", "ConfigMap").matches(pod)
    with pytest.raises(BadRequest, match=re.escape("field label not supported: status.phase")):
        FieldSelector.parse("status.phase=Running", "ConfigMap")


def test_label_selector_object() -> None:
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}
    assert match_label_selector_object(sel, {"app": "web", "tier": "a"})
    assert not match_label_selector_object(sel, {"app": "web"})
    assert selector_string(sel) == "app=web,tier in (a)"
