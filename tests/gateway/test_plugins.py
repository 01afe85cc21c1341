"""Kong's plugins through the gateway with httpx: status codes, headers and bodies as Kong's docs define them."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pitwall.core.labels import labels_get
from pitwall.traffic.gateway import stats as stats_module
from pitwall.traffic.gateway.plugins.ratelimit import COUNTERS
from pitwall.traffic.gateway.stats import GatewayStats
from tests.gateway.conftest import StartGateway, Upstreams, svc

pytestmark = pytest.mark.timeout(60)

V3 = "3.0"
ALICE = {"username": "alice", "custom_id": "a-1", "keyauth_credentials": [{"key": "alice-key"}],
         "basicauth_credentials": [{"username": "alice", "password": "s3cret"}],
         "jwt_secrets": [{"key": "alice-iss", "secret": "alice-jwt-secret-0123456789abcdef"}],
         "acls": [{"group": "gold"}, {"group": "staff"}]}
BOB = {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}], "acls": [{"group": "free"}]}


def config(port: int, plugins: list[dict[str, Any]], consumers: list[dict[str, Any]] | None = None,
           **route: Any) -> dict[str, Any]:
    return {"_format_version": V3, "consumers": consumers if consumers is not None else [ALICE, BOB],
            "services": [svc(port, routes=[{"name": "r", "paths": ["/"], **route}], plugins=plugins)]}


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    COUNTERS.counts.clear()


async def test_key_auth(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "key-auth", "config": {"hide_credentials": True}}]))
    r = await c.get("/")
    assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (
        401, {"message": "No API key found in request"}, "Key")
    r = await c.get("/", headers={"apikey": "wrong"})
    assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})
    r = await c.get("/", headers={"apikey": "alice-key"})
    assert r.status_code == 200
    h = r.json()["headers"]
    assert h["x-consumer-username"] == "alice" and h["x-consumer-custom-id"] == "a-1"
    assert h["x-consumer-id"] and h["x-credential-identifier"] and "apikey" not in h
    r = await c.get("/", headers=[("apikey", "alice-key"), ("apikey", "bob-key")])
    assert (r.status_code, r.json()) == (401, {"message": "Duplicate API key found"})
    r = await c.get("/?apikey=bob-key&x=1")
    assert r.status_code == 200 and r.json()["query"] == "x=1" and r.json()["headers"]["x-consumer-username"] == "bob"


async def test_key_auth_realm_and_anonymous(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    anon = {"username": "anon"}
    _gw, c = await gateway(config(port, [{"name": "key-auth", "config": {"anonymous": "anon"}}],
                                  consumers=[ALICE, anon]))
    r = await c.get("/")
    assert r.status_code == 200 and r.json()["headers"]["x-anonymous-consumer"] == "true"
    assert r.json()["headers"]["x-consumer-username"] == "anon"
    port2 = await upstreams.start("u2")
    _gw2, c2 = await gateway(config(port2, [{"name": "key-auth", "config": {"realm": "kong"}}]))
    assert (await c2.get("/")).headers["www-authenticate"] == 'Key realm="kong"'


async def test_basic_auth(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "basic-auth", "config": {"hide_credentials": True}}]))
    r = await c.get("/")
    assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (
        401, {"message": "Unauthorized"}, 'Basic realm="service"')
    assert (await c.get("/", auth=("alice", "nope"))).status_code == 401
    r = await c.get("/", auth=("alice", "s3cret"))
    assert r.status_code == 200 and "authorization" not in r.json()["headers"]
    assert r.json()["headers"]["x-credential-identifier"] == "alice"
    raw = base64.b64encode(b"alice:s3cret").decode()
    r = await c.get("/", headers={"Proxy-Authorization": f"Basic {raw}"})
    assert r.status_code == 200


def _rsa() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub.decode()


def _ec() -> tuple[Any, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub.decode()


async def test_jwt_algorithms_and_messages(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    rsa_key, rsa_pub = _rsa()
    ec_key, ec_pub = _ec()
    consumers = [
        {"username": "hs", "jwt_secrets": [{"key": "hs-iss", "secret": "hs-secret-0123456789abcdef0123456789-0123456789abcdef0123456789",
                                            "algorithm": "HS384"}]},
        {"username": "rs", "jwt_secrets": [{"key": "rs-iss", "algorithm": "RS256", "rsa_public_key": rsa_pub}]},
        {"username": "es", "jwt_secrets": [{"key": "es-iss", "algorithm": "ES256", "rsa_public_key": ec_pub}]},
    ]
    _gw, c = await gateway(config(port, [{"name": "jwt", "config": {"claims_to_verify": ["exp", "nbf"]}}],
                                  consumers=consumers))
    r = await c.get("/")
    assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (401, {"message": "Unauthorized"}, "Bearer")
    hs = jwt.encode({"iss": "hs-iss"}, "hs-secret-0123456789abcdef0123456789-0123456789abcdef0123456789", algorithm="HS384")
    r = await c.get("/", headers={"Authorization": f"Bearer {hs}"})
    assert r.status_code == 200 and r.json()["headers"]["x-consumer-username"] == "hs"
    assert r.json()["headers"]["x-credential-identifier"] == "hs-iss"
    rs = jwt.encode({"iss": "rs-iss"}, rsa_key, algorithm="RS256")
    assert (await c.get(f"/?jwt={rs}")).json()["headers"]["x-consumer-username"] == "rs"
    es = jwt.encode({"iss": "es-iss", "exp": int(time.time()) + 60}, ec_key, algorithm="ES256")
    assert (await c.get("/", headers={"Authorization": f"Bearer {es}"})).status_code == 200
    cases = [
        (jwt.encode({"iss": "hs-iss"}, "w" * 64, algorithm="HS384"), {"message": "Invalid signature"}),
        (jwt.encode({"iss": "hs-iss"}, "hs-secret-0123456789abcdef0123456789-0123456789abcdef0123456789", algorithm="HS256"),
         {"message": "Invalid algorithm"}),
        (jwt.encode({"sub": "x"}, "k" * 64, algorithm="HS256"), {"message": "No mandatory 'iss' in claims"}),
        (jwt.encode({"iss": "nobody"}, "k" * 64, algorithm="HS256"), {"message": "No credentials found for given 'iss'"}),
        (jwt.encode({"iss": "es-iss", "exp": int(time.time()) - 10}, ec_key, algorithm="ES256"),
         {"exp": "token expired"}),
        (jwt.encode({"iss": "es-iss", "nbf": int(time.time()) + 600}, ec_key, algorithm="ES256"),
         {"nbf": "token not valid yet"}),
        ("not.a-token", {"message": "Bad token; invalid JSON"}),
    ]
    for token, body in cases:
        r = await c.get("/", headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (401, body), token
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_jwt_key_claim_name(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "jwt", "config": {"key_claim_name": "kid"}}]))
    token = jwt.encode({"kid": "alice-iss"}, "alice-jwt-secret-0123456789abcdef", algorithm="HS256")
    assert (await c.get("/", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    token = jwt.encode({"iss": "alice-iss"}, "alice-jwt-secret-0123456789abcdef", algorithm="HS256")
    r = await c.get("/", headers={"Authorization": f"Bearer {token}"})
    assert r.json() == {"message": "No mandatory 'kid' in claims"}


async def test_acl_allow_deny_and_groups_header(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "key-auth"}, {"name": "acl", "config": {"allow": ["gold"]}}]))
    r = await c.get("/", headers={"apikey": "alice-key"})
    assert r.status_code == 200 and r.json()["headers"]["x-consumer-groups"] == "gold, staff"
    r = await c.get("/", headers={"apikey": "bob-key"})
    assert (r.status_code, r.json()) == (403, {"message": "You cannot consume this service"})
    port2 = await upstreams.start("u2")
    _gw2, c2 = await gateway(config(port2, [{"name": "key-auth"}, {"name": "acl", "config": {
        "deny": ["gold"], "hide_groups_header": True}}]))
    assert (await c2.get("/", headers={"apikey": "alice-key"})).status_code == 403
    r = await c2.get("/", headers={"apikey": "bob-key"})
    assert r.status_code == 200 and "x-consumer-groups" not in r.json()["headers"]


async def test_rate_limiting_headers_and_429(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "key-auth"},
                                         {"name": "rate-limiting", "config": {"minute": 3, "hour": 100}}]))
    alice = {"apikey": "alice-key"}
    for i in range(3):
        r = await c.get("/", headers=alice)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-minute"] == "3" and r.headers["x-ratelimit-limit-hour"] == "100"
        assert r.headers["x-ratelimit-remaining-minute"] == str(2 - i)
        assert r.headers["x-ratelimit-remaining-hour"] == str(99 - i)
        assert r.headers["ratelimit-limit"] == "3" and r.headers["ratelimit-remaining"] == str(2 - i)
        assert 1 <= int(r.headers["ratelimit-reset"]) <= 60
    r = await c.get("/", headers=alice)
    assert (r.status_code, r.json()) == (429, {"message": "API rate limit exceeded"})
    assert r.headers["retry-after"] == r.headers["ratelimit-reset"]
    assert r.headers["x-ratelimit-remaining-minute"] == "0" and r.headers["x-ratelimit-remaining-hour"] == "97"
    assert (await c.get("/", headers={"apikey": "bob-key"})).status_code == 200  # limit_by consumer


async def test_rate_limit_is_exact_under_concurrency(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    limit, clients, each = 25, 20, 5
    _gw, _c = await gateway(config(port, [{"name": "rate-limiting", "config": {"hour": limit, "limit_by": "ip"}}]))

    async def client() -> list[int]:
        async with httpx.AsyncClient(base_url=str(_c.base_url), timeout=10) as own:
            return [(await own.get("/")).status_code for _ in range(each)]

    codes = [s for batch in await asyncio.gather(*(client() for _ in range(clients))) for s in batch]
    assert codes.count(200) == limit and codes.count(429) == clients * each - limit
    assert len(upstreams.seen) == limit


async def test_rate_limit_by_header_hidden_headers_and_custom_error(upstreams: Upstreams,
                                                                    gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "rate-limiting", "config": {
        "second": 1, "minute": 1, "limit_by": "header", "header_name": "x-tenant", "hide_client_headers": True,
        "error_code": 403, "error_message": "slow down"}}]))
    r = await c.get("/", headers={"x-tenant": "t1"})
    assert r.status_code == 200 and not any(k.startswith(("x-ratelimit", "ratelimit")) for k in r.headers)
    r = await c.get("/", headers={"x-tenant": "t1"})
    assert (r.status_code, r.json()) == (403, {"message": "slow down"}) and "retry-after" not in r.headers
    assert (await c.get("/", headers={"x-tenant": "t2"})).status_code == 200


async def test_request_termination(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "request-termination", "config": {"status_code": 404}}]))
    r = await c.get("/mock")
    assert (r.status_code, r.json()) == (404, {"message": "Not found"}) and not upstreams.seen
    port2 = await upstreams.start("u2")
    _gw2, c2 = await gateway(config(port2, [{"name": "request-termination", "config": {
        "status_code": 418, "body": "<h1>tea</h1>", "content_type": "text/html", "trigger": "x-stop"}}]))
    assert (await c2.get("/")).status_code == 200
    r = await c2.get("/", headers={"x-stop": "1"})
    assert (r.status_code, r.text, r.headers["content-type"]) == (418, "<h1>tea</h1>", "text/html")


async def test_cors_preflight_and_actual(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "cors", "config": {
        "origins": ["https://a.example", "https://b.example"], "methods": ["GET", "POST"], "max_age": 600,
        "credentials": True, "exposed_headers": ["x-echo-name"]}}]))
    r = await c.options("/", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "x-a"})
    assert r.status_code == 200 and not upstreams.seen
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert r.headers["access-control-allow-methods"] == "GET,POST"
    assert r.headers["access-control-allow-headers"] == "x-a" and r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true" and r.headers["vary"] == "Origin"
    r = await c.get("/", headers={"Origin": "https://b.example"})
    assert r.headers["access-control-allow-origin"] == "https://b.example"
    assert r.headers["access-control-expose-headers"] == "x-echo-name"
    r = await c.get("/", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_request_and_response_transformers(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [
        {"name": "request-transformer", "config": {
            "remove": {"headers": ["x-drop"], "querystring": ["secret"]},
            "rename": {"headers": ["x-old:x-new"]},
            "add": {"headers": ["x-added:1"], "querystring": ["q:1"], "body": ["b:2"]},
            "replace": {"headers": ["x-rep:new"]},
            "append": {"headers": ["x-app:two"]}}},
        {"name": "response-transformer", "config": {
            "remove": {"headers": ["x-echo-name"], "json": ["server"]},
            "add": {"headers": ["x-resp:yes"], "json": ["added:7"], "json_types": ["number"]}}},
    ]))
    r = await c.post("/?secret=s&keep=1", json={"a": 1}, headers={
        "x-drop": "1", "x-old": "v", "x-rep": "old", "x-app": "one"})
    got = r.json()
    h = got["headers"]
    assert "x-drop" not in h and h["x-new"] == "v" and "x-old" not in h and h["x-added"] == "1"
    assert h["x-rep"] == "new" and h["x-app"] == "one, two"
    assert got["query"] == "keep=1&q=1"
    assert got["body"] == '{"a":1,"b":"2"}'
    assert "x-echo-name" not in r.headers and r.headers["x-resp"] == "yes"
    assert "server" not in got and got["added"] == 7


async def test_ip_restriction(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "ip-restriction", "config": {"deny": ["127.0.0.0/8"]}}]))
    r = await c.get("/")
    assert (r.status_code, r.json()) == (403, {"message": "IP address not allowed: 127.0.0.1"})
    port2 = await upstreams.start("u2")
    _gw2, c2 = await gateway(config(port2, [{"name": "ip-restriction", "config": {
        "allow": ["127.0.0.1"], "status": 401, "message": "nope"}}]))
    assert (await c2.get("/")).status_code == 200


async def test_correlation_id(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    _gw, c = await gateway(config(port, [{"name": "correlation-id", "config": {"echo_downstream": True}}]))
    r1, r2 = await c.get("/"), await c.get("/")
    id1 = r1.json()["headers"]["kong-request-id"]
    assert r1.headers["kong-request-id"] == id1 and "#" in id1 and id1 != r2.headers["kong-request-id"]
    r = await c.get("/", headers={"Kong-Request-ID": "mine"})
    assert r.json()["headers"]["kong-request-id"] == "mine" and r.headers["kong-request-id"] == "mine"


async def test_consumer_scoped_plugin_overrides_route_plugin(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    doc = config(port, [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"minute": 1}}])
    doc["plugins"] = [{"name": "rate-limiting", "consumer": "alice", "config": {"minute": 5}}]
    _gw, c = await gateway(doc)
    codes = [(await c.get("/", headers={"apikey": "alice-key"})).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    codes = [(await c.get("/", headers={"apikey": "bob-key"})).status_code for _ in range(2)]
    assert codes == [200, 429]


class _Appender:
    def __init__(self) -> None:
        self.batches: list[Any] = []

    async def append(self, tenant: str, batch: Any) -> None:
        self.batches.append((tenant, batch))

    async def append_metadata(self, tenant: str, metadata: Any) -> None:
        return None

    async def append_exemplars(self, tenant: str, exemplars: Any) -> None:
        return None


async def test_prometheus_metrics_per_consumer(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("u")
    appender = _Appender()
    stats = GatewayStats(appender)
    _gw, c = await gateway(config(port, [
        {"name": "key-auth"}, {"name": "rate-limiting", "config": {"minute": 2}},
        {"name": "prometheus", "config": {"per_consumer": True, "status_code_metrics": True,
                                          "latency_metrics": True, "bandwidth_metrics": True}}]), stats=stats)
    for _ in range(3):
        await c.get("/", headers={"apikey": "alice-key"})
    await c.get("/")
    assert await stats.flush() > 0
    tenant, batch = appender.batches[0]
    assert tenant == "default"
    rows = {(labels_get(s, "__name__"), labels_get(s, "code"), labels_get(s, "consumer"), labels_get(s, "source")):
            float(v) for s, v in zip([batch.series[i] for i in batch.series_idx], batch.values, strict=True)}
    assert rows[("kong_http_requests_total", "200", "alice", "service")] == 2
    assert rows[("kong_http_requests_total", "429", "alice", "kong")] == 1
    assert rows[("kong_http_requests_total", "401", "", "kong")] == 1
    names = {k[0] for k in rows}
    assert {"kong_request_latency_ms_bucket", "kong_upstream_latency_ms_count", "kong_kong_latency_ms_sum",
            "kong_bandwidth_bytes"} <= names
    assert all(labels_get(s, "job") == "kong" and labels_get(s, "service") == "echo" for s in batch.series)


def test_histogram_buckets_and_series_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value on a bound counts in that bucket (Prometheus' ``le``), one past the last only in +Inf;
    a series handle is the same object on every call; past MAX_SERIES new label sets are dropped."""
    stats = GatewayStats(None)
    h = stats.histogram("lat", (("route", "r"),), (1, 5, 10))
    assert h is not None and stats.histogram("lat", (("route", "r"),), (1, 5, 10)) is h
    for v in (0.2, 1.0, 1.5, 5.0, 10.0, 11.0):
        h.observe(v)
    rows = {dict(lb).get("le"): v for lb, _, v in stats.rows(0) if dict(lb)["__name__"] == "lat_bucket"}
    assert rows == {"1.0": 2.0, "5.0": 4.0, "10.0": 5.0, "+Inf": 6.0}
    c = stats.counter("n", ())
    assert c is not None and stats.counter("n", ()) is c
    stats.inc("n", (), 2.0)
    c.value += 1
    assert [v for lb, _, v in stats.rows(0) if dict(lb)["__name__"] == "n"] == [3.0]
    monkeypatch.setattr(stats_module, "MAX_SERIES", 2)
    assert stats.counter("other", ()) is None and stats.histogram("other", (), (1,)) is None
    stats.inc("other", ())
    assert stats.counter("n", ()) is c  # existing series still count
