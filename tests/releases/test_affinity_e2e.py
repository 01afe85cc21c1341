"""Session affinity on a live `pitwall server` with real pods, through the mesh: at a 50/50 split, clients
without the cookie are split by weight and those answered by the canary get Flagger's cookie; a client that
sends it back reaches the canary on every request; after promotion the cookie is expired (``Max-Age=-1``) and
Flagger's own metrics answer PromQL on the server."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.releases import test_e2e
from tests.releases.test_e2e import API, _deployment, _set_version, _status, _story, _until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

server = test_e2e.server  # the live server fixture (one pitwall process per test)
VS = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/podinfo"


def _get(url: str, cookie: str = "") -> httpx.Response:
    """One request with no cookie jar: only the ``Cookie`` header given."""
    return httpx.get(url, headers={"Cookie": cookie} if cookie else {}, timeout=5)


def test_a_client_with_the_cookie_stays_on_the_canary(server: httpx.Client) -> None:
    c = server
    base = str(c.base_url).rstrip("/")
    assert c.post("/apis/apps/v1/namespaces/default/deployments", json=_deployment("v1", False)).status_code == 201
    # confirm-promotion halts (the load tester's gate): the split holds at 50/50 while we look
    halt = {"name": "hold", "type": "confirm-promotion", "url": f"{base}/flagger-loadtester/gate/halt"}
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                       "progressDeadlineSeconds": 120, "service": {"port": 80, "targetPort": 8080},
                       "analysis": {"interval": "2s", "threshold": 2, "maxWeight": 50, "stepWeight": 50,
                                    "sessionAffinity": {"cookieName": "flagger-cookie", "maxAge": 120},
                                    "webhooks": [halt]}}}
    assert c.post(API, json=canary).status_code == 201
    _until(lambda: _status(c).get("phase") == "Initialized", 90, "Initialized", lambda: _story(c))
    ip = c.get("/api/v1/namespaces/default/services/podinfo").json()["spec"]["clusterIP"]
    url = f"http://{ip}/"
    _until(lambda: _get(url).text == "v1", 60, "v1 answering through the apex")
    _set_version(c, "v2", fail=False)
    _until(lambda: [d["weight"] for d in c.get(VS).json()["spec"]["http"][-1]["route"]] == [50, 50], 60,
           "the 50/50 split", lambda: _story(c))
    cookie = str(_status(c)["sessionAffinityCookie"])
    assert cookie.startswith("flagger-cookie=")
    _until(lambda: _get(url).text == "v2", 30, "the canary answering")
    # cookie-less clients: split by weight; the canary's answers set the run's cookie, the primary's none
    answers = [_get(url) for _ in range(80)]
    from_canary = [r for r in answers if r.text == "v2"]
    assert all(r.status_code == 200 for r in answers)
    assert 20 <= len(from_canary) <= 60, f"{len(from_canary)} of 80 from the canary at weight 50"
    assert {r.headers.get("set-cookie") for r in from_canary} == {f"{cookie}; Max-Age=120"}
    assert all("set-cookie" not in r.headers for r in answers if r.text == "v1")
    # a client that got the cookie sends it back: the canary, every time (with other cookies beside it too)
    sticky = [_get(url, f"theme=dark; {cookie}").text for _ in range(40)]
    assert sticky == ["v2"] * 40
    # a stale value of the cookie is not the run's: split by weight again
    stale = {_get(url, "flagger-cookie=notthisrun").text for _ in range(40)}
    assert stale == {"v1", "v2"}
    # let it promote: the run's cookie is expired and everyone is on v2
    fresh = c.get(f"{API}/podinfo").json()
    fresh["spec"]["analysis"]["webhooks"] = []
    assert c.put(f"{API}/podinfo", json=fresh).status_code == 200
    _until(lambda: _status(c).get("phase") == "Succeeded", 90, "Succeeded", lambda: _story(c))
    assert _status(c)["previousSessionAffinityCookie"] == cookie
    deadline = time.monotonic() + 30
    while (r := _get(url, cookie)).headers.get("set-cookie") != f"{cookie}; Max-Age=-1":
        assert time.monotonic() < deadline, f"no expiry: {r.headers}"
        time.sleep(0.25)
    assert r.text == "v2"
    assert "set-cookie" not in _get(url).headers
    # Flagger's own metrics, in the server's metric store
    def value(q: str) -> float | None:
        res = c.get("/api/v1/query", params={"query": q}).json()["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    _until(lambda: value('flagger_canary_successes_total{job="flagger",name="podinfo",namespace="default",'
                         'deployment_strategy="canary",analysis_status="completed"}') == 1.0, 30, "a success counted")
    assert value('flagger_info{version="1.44.0",mesh_provider="istio"}') == 1.0
    assert (value('flagger_canary_duration_seconds_count{name="podinfo"}') or 0) >= 1
