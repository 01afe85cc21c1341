"""Session affinity (``analysis.sessionAffinity``): the VirtualService Flagger's Istio router writes at each
step, the cookies kept in the Canary's status, and their expiry once the run ends."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases.affinity import Affinity, build_cookie, sticky_routes
from tests.releases.harness import NET, Answers, Driver, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)

ANALYSIS = {"interval": "10s", "threshold": 2, "maxWeight": 40, "stepWeight": 20,
            "sessionAffinity": {"cookieName": "flagger-cookie"}}


async def _vs(d: Driver) -> list[dict[str, Any]]:
    http: list[dict[str, Any]] = (await d.client.get(NET, "VirtualService", "podinfo", "default"))["spec"]["http"]
    return http


async def _progress_to_weight(d: Driver, analysis: dict[str, Any], weight: int) -> dict[str, Any]:
    await d.client.create(deployment())
    await d.client.create(canary(analysis))
    for _ in range(5):
        if (await d.tick()).get("status", {}).get("phase") == "Initialized":
            break
    await set_image(d.kube, "v2")
    for _ in range(6):
        cd = await d.tick()
        if cd["status"]["canaryWeight"] == weight:
            return cd
    raise AssertionError(f"weight {weight} not reached: {cd['status']}")


async def test_cookie_routes_while_progressing_and_expiry_after_promotion(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    cd = await _progress_to_weight(d, ANALYSIS, 20)
    cookie = cd["status"]["sessionAffinityCookie"]
    assert re.fullmatch(r"flagger-cookie=[A-Za-z]{10}", cookie)
    sticky, weighted = await _vs(d)
    value = cookie.split("=")[1]
    assert sticky["match"] == [{"headers": {"Cookie": {"regex": f".*flagger-cookie.*{value}.*"}}}]
    assert sticky["route"] == [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                               {"destination": {"host": "podinfo-canary"}, "weight": 100}]
    assert "match" not in weighted
    assert weighted["route"] == [
        {"destination": {"host": "podinfo-primary"}, "weight": 80},
        {"destination": {"host": "podinfo-canary"}, "weight": 20,
         "headers": {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=86400"}}}}]
    # the next step keeps the run's cookie and reads its weight from the cookie-setting route
    cd = await d.tick()
    assert cd["status"]["canaryWeight"] == 40 and cd["status"]["sessionAffinityCookie"] == cookie
    assert [x["weight"] for x in (await _vs(d))[1]["route"]] == [60, 40]
    for _ in range(6):
        cd = await d.tick()
        if cd["status"]["phase"] == "Succeeded":
            break
    assert cd["status"]["phase"] == "Succeeded"
    st = cd["status"]
    assert "sessionAffinityCookie" not in st and st["previousSessionAffinityCookie"] == cookie
    expire, weighted = await _vs(d)
    assert expire["match"] == sticky["match"]
    assert expire["headers"] == {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=-1"}}}
    assert expire["route"] == weighted["route"] == [{"destination": {"host": "podinfo-primary"}, "weight": 100},
                                                    {"destination": {"host": "podinfo-canary"}, "weight": 0}]
    # a new run draws a new cookie; the old one is still expired until then
    await set_image(d.kube, "v3")
    for _ in range(4):
        cd = await d.tick()
        if cd["status"]["canaryWeight"] == 20:
            break
    assert cd["status"]["sessionAffinityCookie"] not in ("", cookie)
    assert cd["status"]["previousSessionAffinityCookie"] == cookie


async def test_primary_cookie_and_cookie_attributes(mesh_kube: KubeAPI) -> None:
    aff = {"cookieName": "canary", "primaryCookieName": "stable", "maxAge": 600, "path": "/", "httpOnly": True,
           "sameSite": "Lax", "secure": True, "domain": "example.com"}
    d = Driver(mesh_kube, Answers())
    cd = await _progress_to_weight(d, {**ANALYSIS, "sessionAffinity": aff}, 20)
    st = cd["status"]
    to_canary, to_primary, weighted = await _vs(d)
    assert re.fullmatch(r"stable=[A-Za-z]{10}", st["primarySessionAffinityCookie"])
    assert to_primary["match"][0]["headers"]["Cookie"]["regex"] == \
        ".*stable.*{}.*".format(st["primarySessionAffinityCookie"].split("=")[1])
    assert [x["weight"] for x in to_primary["route"]] == [100, 0]
    assert [x["weight"] for x in to_canary["route"]] == [0, 100]
    attrs = "; Domain=example.com; HttpOnly; Path=/; SameSite=Lax; Secure"
    p, c = weighted["route"]
    assert c["headers"]["response"]["add"]["Set-Cookie"] == f"{st['sessionAffinityCookie']}; Max-Age=600{attrs}"
    # the primary's cookie lives one analysis interval (Flagger's choice)
    assert p["headers"]["response"]["add"]["Set-Cookie"] == f"{st['primarySessionAffinityCookie']}; Max-Age=10{attrs}"


async def test_rollback_expires_the_cookie(mesh_kube: KubeAPI) -> None:
    answers = Answers()
    d = Driver(mesh_kube, answers)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    cd = await _progress_to_weight(d, {**ANALYSIS, "metrics": metrics}, 20)
    cookie = cd["status"]["sessionAffinityCookie"]
    answers.success_rate = 50.0
    for _ in range(5):
        cd = await d.tick()
        if cd["status"]["phase"] == "Failed":
            break
    assert cd["status"]["phase"] == "Failed"
    assert cd["status"]["previousSessionAffinityCookie"] == cookie
    expire, _ = await _vs(d)
    assert expire["headers"]["response"]["add"]["Set-Cookie"] == f"{cookie}; Max-Age=-1"


def test_service_match_is_merged_into_the_cookie_match() -> None:
    weighted = {"match": [{"uri": {"prefix": "/api"}}], "timeout": "5s",
                "route": [{"destination": {"host": "p", "port": {"number": 80}}, "weight": 50},
                          {"destination": {"host": "c", "port": {"number": 80}}, "weight": 50}]}

    def merge(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**weighted["match"][0], **c} for c in conds]  # type: ignore[index]

    http, state = sticky_routes({"cookieName": "k"}, weighted, 50, Affinity(canary="k=abc"), hosts=("p", "c"),
                                interval_s=60, merge=merge)
    assert state == Affinity(canary="k=abc")
    assert http[0]["match"] == [{"uri": {"prefix": "/api"}, "headers": {"Cookie": {"regex": ".*k.*abc.*"}}}]
    assert http[0]["timeout"] == "5s" and http[0]["route"][1] == {"destination": {"host": "c", "port": {"number": 80}},
                                                                  "weight": 100}
    assert "headers" not in weighted["route"][1]  # the input is not changed
    assert build_cookie({}, "k=abc", 5) == "k=abc; Max-Age=5"
