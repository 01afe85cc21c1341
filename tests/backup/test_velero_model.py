"""Velero's selection and hook rules as the controllers apply them (no server)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pitwall.backup.velero import Selection, hooks_for_pod, parse_duration, resource_dir, selector_string

pytestmark = pytest.mark.timeout(10)


def test_go_durations_as_velero_writes_them() -> None:
    assert parse_duration("720h0m0s", timedelta(0)) == timedelta(hours=720)
    assert parse_duration("1m30s", timedelta(0)) == timedelta(seconds=90)
    assert parse_duration(None, timedelta(hours=1)) == timedelta(hours=1)
    for bad in ("5", "1d", "soon", "1h junk"):
        with pytest.raises(ValueError):
            parse_duration(bad, timedelta(0))


def test_namespaces_and_resources_select_as_velero() -> None:
    sel = Selection.of({"includedNamespaces": ["shop-*"], "excludedNamespaces": ["shop-test"],
                        "includedResources": ["deployments.apps", "cm", "secrets"], "excludedResources": ["secrets"]})
    assert sel.namespace("shop-eu") and not sel.namespace("shop-test") and not sel.namespace("billing")
    assert sel.resource("apps", "deployments", "Deployment")
    assert not sel.resource("", "deployments", "Deployment")  # a group-qualified name names that group only
    assert sel.resource("", "configmaps", "ConfigMap", ("cm",))
    assert not sel.resource("", "secrets", "Secret")  # excluded wins
    everything = Selection.of({})
    assert everything.namespace("any") and everything.resource("x.io", "widgets", "Widget")
    assert resource_dir("apps", "deployments") == "deployments.apps" and resource_dir("", "pods") == "pods"


def test_label_selectors() -> None:
    assert selector_string(None) is None
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["db", "cache"]}, {"key": "skip", "operator": "DoesNotExist"}]}) \
        == "a=1,b=2,tier in (db,cache),!skip"


def _pod(ann: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"name": "p", "namespace": "shop", "annotations": ann, "labels": labels or {}}}


def test_annotation_hooks_win_over_spec_hooks() -> None:
    spec_hooks = {"resources": [{"name": "dump", "includedNamespaces": ["shop"],
                                 "labelSelector": {"matchLabels": {"app": "db"}},
                                 "pre": [{"exec": {"command": ["pg_dump"], "onError": "Continue", "timeout": "2m"}}],
                                 "post": [{"exec": {"command": ["true"]}}]}]}
    from_spec = hooks_for_pod(_pod({}, {"app": "db"}), spec_hooks)
    assert [(h.phase, h.command, h.on_error, h.timeout_s, h.source) for h in from_spec] == [
        ("pre", ("pg_dump",), "Continue", 120.0, "dump"), ("post", ("true",), "Fail", 30.0, "dump")]
    assert hooks_for_pod(_pod({}, {"app": "web"}), spec_hooks) == []
    own = hooks_for_pod(_pod({"pre.hook.backup.velero.io/command": '["sqlite3", "app.db", ".backup b"]',
                              "pre.hook.backup.velero.io/container": "app"}, {"app": "db"}), spec_hooks)
    assert [(h.phase, h.command, h.container, h.on_error, h.source) for h in own] == [
        ("pre", ("sqlite3", "app.db", ".backup b"), "app", "Fail", "annotation")]
    # a plain string is one argument, as Velero reads it
    assert hooks_for_pod(_pod({"post.hook.backup.velero.io/command": "/bin/sync"}), None)[0].command == ("/bin/sync",)
    with pytest.raises(ValueError):
        hooks_for_pod(_pod({"pre.hook.backup.velero.io/command": "x", "pre.hook.backup.velero.io/timeout": "1d"}),
                      None)
