"""Alertmanager API v2 bodies: JSON only (415 otherwise, as go-openapi answers), malformed JSON is a 400."""

from __future__ import annotations

import json

import httpx
import pytest

ALERTS = json.dumps([{"labels": {"alertname": "Injected"}}]).encode()
SILENCE = json.dumps({"matchers": [{"name": "a", "value": "b", "isRegex": False}], "startsAt": "2030-01-01T00:00:00Z",
                      "endsAt": "2030-01-02T00:00:00Z", "createdBy": "me", "comment": "c"}).encode()


@pytest.mark.parametrize(("path", "body"), [("/api/v2/alerts", ALERTS), ("/api/v2/silences", SILENCE)])
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                                   None])
async def test_only_json_bodies_are_accepted(client: httpx.AsyncClient, path: str, body: bytes,
                                             ctype: str | None) -> None:
    # What a browser may send cross-site without a preflight (and no type at all): refused, nothing stored.
    headers = {"Content-Type": ctype} if ctype else {}
    r = await client.post(path, content=body, headers=headers)
    assert r.status_code == 415
    media = (ctype or "application/octet-stream").split(";")[0]
    assert r.json() == f'unsupported media type "{media}", only [application/json] are allowed'
    assert (await client.get("/api/v2/alerts")).json() == []
    assert (await client.get("/api/v2/silences")).json() == []


async def test_json_with_parameters_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v2/alerts", content=ALERTS, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200
    assert [a["labels"] for a in (await client.get("/api/v2/alerts")).json()] == [{"alertname": "Injected"}]
    r = await client.post("/api/v2/silences", content=SILENCE, headers={"Content-Type": "Application/JSON"})
    assert r.status_code == 200 and r.json()["silenceID"]


@pytest.mark.parametrize("path", ["/api/v2/alerts", "/api/v2/silences"])
async def test_deeply_nested_json_is_a_400(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json().startswith("parsing body failed: ")
    r = await client.post(path, content=b'[{"labels": {', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
