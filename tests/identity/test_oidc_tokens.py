"""core.oidc's JWT checks, one by one, against an issuer made here (its own EC and RSA keys, its discovery
document and JWKS served over httpx's in-process transport): algorithms, audience, issuer, exp/nbf with
leeway, key rotation, and the client secret kept out of every message."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError, Unauthorized
from pitwall.core.oidc import OIDC, OIDCSettings
from pitwall.core.rbac import BUILTIN_ROLES, Binding, Policy, Subject

pytestmark = pytest.mark.timeout(30)
ISSUER = "https://idp.test/realms/x"


class Issuer:
    """Keys and documents of a test issuer; counts JWKS fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"ec1": ec.generate_private_key(ec.SECP256R1()),
                                     "rsa1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.jwks_fetches = 0

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, k in self.keys.items():
            alg = jwt.algorithms.ECAlgorithm if kid.startswith("ec") else jwt.algorithms.RSAAlgorithm
            jwk = alg.to_jwk(k.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": "https://idp.test/jwks",
                                             "authorization_endpoint": "https://idp.test/auth",
                                             "token_endpoint": "https://idp.test/token"})
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def token(self, kid: str = "ec1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "pitwall", "sub": "u1", "preferred_username": "alice", "groups": ["sre"],
                "iat": now, "exp": now + 300, **claims}
        alg = "ES256" if kid.startswith("ec") else "RS256"
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.keys[kid], algorithm=alg,
                          headers={"kid": kid})


@pytest.fixture
def idp() -> Issuer:
    return Issuer()


def _oidc(idp: Issuer, **kw: Any) -> OIDC:
    settings = OIDCSettings(issuer=ISSUER, client_id="pitwall", username_claim="preferred_username", **kw)
    policy = Policy([Binding(BUILTIN_ROLES["editor"], (Subject("group", "sre"),), None)])
    return OIDC(settings, policy, b"k" * 32,
                http=lambda: httpx.AsyncClient(transport=httpx.MockTransport(idp.handler)))


async def test_es256_and_rs256_tokens_give_the_bound_roles(idp: Issuer) -> None:
    o = _oidc(idp)
    for kid in ("ec1", "rsa1"):
        p = o.principal(await o.verify(idp.token(kid)))
        assert p.name == "alice" and p.groups == frozenset({"sre"}) and p.allows("write", "/api/v2/alerts", "x")
    assert idp.jwks_fetches == 1  # cached


@pytest.mark.parametrize(("claims", "message"), [
    ({"aud": "someone-else"}, "Audience doesn't match"),
    ({"iss": "https://evil.test"}, "Invalid issuer"),
    ({"exp": -120}, "Signature has expired"),  # times: seconds from now, when the test runs
    ({"nbf": 120}, "not yet valid"),
    ({"exp": None}, 'Token is missing the "exp" claim'),
])
async def test_claims_are_checked(idp: Issuer, claims: dict[str, Any], message: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()}
    with pytest.raises(Unauthorized, match=message):
        await _oidc(idp).verify(idp.token(**claims))


async def test_leeway_allows_small_clock_skew(idp: Issuer) -> None:
    o = _oidc(idp, leeway=30)
    await o.verify(idp.token(exp=int(time.time()) - 10, nbf=int(time.time()) + 10))


async def test_other_algorithms_are_refused(idp: Issuer) -> None:
    o = _oidc(idp)
    hs = jwt.encode({"iss": ISSUER, "aud": "pitwall", "exp": int(time.time()) + 60}, "secret" * 6, algorithm="HS256")
    with pytest.raises(Unauthorized, match="'HS256' not accepted"):
        await o.verify(hs)
    none = jwt.encode({"iss": ISSUER, "aud": "pitwall", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(Unauthorized, match="'none' not accepted"):
        await o.verify(none)


async def test_rotated_keys_are_fetched_for_an_unknown_kid(idp: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _oidc(idp)
    await o.verify(idp.token("ec1"))
    idp.keys["ec2"] = ec.generate_private_key(ec.SECP256R1())
    import pitwall.core.oidc as mod

    monkeypatch.setattr(mod, "JWKS_MIN_REFETCH_S", 0.0)
    await o.verify(idp.token("ec2"))
    assert idp.jwks_fetches == 2
    with pytest.raises(Unauthorized, match="signing key is not among"):
        await o.verify(_with_kid(idp, "ghost"))


def _with_kid(idp: Issuer, kid: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": "pitwall", "exp": now + 60}, idp.keys["ec1"], algorithm="ES256",
                      headers={"kid": kid})


async def test_bearer_of_another_issuer_falls_through(idp: Issuer) -> None:
    o = _oidc(idp)
    other = jwt.encode({"iss": "https://other", "exp": int(time.time()) + 60}, idp.keys["ec1"], algorithm="ES256")
    scope = {"type": "http", "headers": [], "path": "/", "method": "GET"}
    assert await o.authenticate(scope, other.encode()) is None
    assert await o.authenticate(scope, b"plain-token-value") is None
    p = await o.authenticate(scope, idp.token().encode())
    assert p is not None and p.kind == "user"


def test_client_secret_stays_out_of_messages(tmp_path: Any) -> None:
    secret = "very-secret-client-value-123"
    s = load_settings(oidc={"issuer": ISSUER, "client_id": "pitwall", "client_secret": secret})
    assert secret not in repr(s) and secret not in str(s.oidc)
    f = tmp_path / "secret"
    f.write_text(secret + "\n")
    s = load_settings(oidc={"issuer": ISSUER, "client_id": "pitwall", "client_secret_file": str(f)})
    assert s.oidc is not None and s.oidc.client_secret == secret and secret not in repr(s)
    with pytest.raises(ConfigError) as e:
        load_settings(oidc={"issuer": ISSUER, "client_id": "pitwall", "client_secret": secret,
                            "client_secret_file": str(f)})
    assert "at most one of client_secret and client_secret_file" in str(e.value) and secret not in str(e.value)
    with pytest.raises(ConfigError, match="scopes: must include 'openid'"):
        load_settings(oidc={"issuer": ISSUER, "client_id": "pitwall", "scopes": ["profile"]})
