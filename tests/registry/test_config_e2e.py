"""Consul config entries on a live `pitwall server` with real pods: py-consul writes a resolver, a 90/10
splitter and intentions; traffic from a pod goes through the service proxy as they say.

Pods get the first addresses of 127.42.0.0/16, as every other `pitwall server` on the machine hands out:
with other servers' pods running it can reach a foreign pod (as tests/traffic/test_mesh_e2e.py can)."""

from __future__ import annotations

import collections
from urllib.parse import urlparse

import consul
import httpx
import pytest

from tests.traffic.test_mesh_e2e import APP, SLEEP, Live, _deployment, _until, live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
__all__ = ["live"]  # the fixture, shared with the Istio e2e test


def test_consul_entries_shape_a_live_mesh(live: Live) -> None:
    ns = "/api/v1/namespaces/default"
    for sa in ("web", "sleep"):
        live.create(f"{ns}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    for name, labels, program, sa in (("web-v1", {"app": "web", "version": "v1"}, APP, "web"),
                                      ("web-v2", {"app": "web", "version": "v2"}, APP, "web"),
                                      ("sleep", {"app": "sleep"}, SLEEP, "sleep")):
        live.create("/apis/apps/v1/namespaces/default/deployments", _deployment(name, labels, program, sa))
    live.create(f"{ns}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                   "spec": {"selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    c = consul.Consul(host="127.0.0.1", port=urlparse(live.url).port)
    assert c.config.set("service-resolver", "web", {"Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}}})
    assert c.config.set("service-splitter", "web", {"Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                                                               {"Weight": 10, "ServiceSubset": "v2"}]})
    assert c.config.set("service-intentions", "web", {"Sources": [{"Name": "sleep", "Action": "allow"},
                                                                  {"Name": "*", "Action": "deny"}]})
    ip = live.get(f"{ns}/services/web")["spec"]["clusterIP"]
    caller = _until(lambda: str(live.get(f"{ns}/pods?labelSelector=app%3Dsleep")["items"][0]["status"]["podIP"]))

    def both_ready() -> bool:
        eps = live.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector="
                       "kubernetes.io%2Fservice-name%3Dweb")["items"]
        return sum(1 for s in eps for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")) == 2

    _until(both_ready)
    with httpx.Client(base_url=f"http://{ip}", timeout=10,
                      transport=httpx.HTTPTransport(local_address=caller)) as as_sleep:
        _until(lambda: as_sleep.get("/").status_code == 200)
        got: collections.Counter[str] = collections.Counter()
        for _ in range(300):
            r = as_sleep.get("/")
            assert r.status_code == 200, (r.text, dict(got))
            got[r.text.rsplit("-", 2)[0]] += 1  # the pod name without its ReplicaSet and pod suffixes
    assert set(got) == {"web-v1", "web-v2"}
    assert 12 <= got["web-v2"] <= 48  # 30 expected; binomial sd 5.2: 3.4 sd either side
    with httpx.Client(base_url=f"http://{ip}", timeout=10) as anon:  # no pod: only the `*` deny matches
        denied = anon.get("/")
        assert denied.status_code == 403 and denied.text == "RBAC: access denied"
