"""OpenID Connect against a real provider (django-oauth-toolkit with OIDC, tests/identity/op/provider.py):
ID tokens from the authorization code flow with PKCE as bearer tokens on pitwall's APIs, groups mapped
to roles and tenants by rbac.bindings, and the web UI's sign-in end to end with a cookie jar."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest

from tests.conftest import free_port
from tests.identity.conftest import Pitwall

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ADMIN = "admin-token-00000000"
PROVIDER = Path(__file__).parent / "op" / "provider.py"
USERS = [{"username": "alice", "password": "alice-pw-12345", "groups": ["sre"]},
         {"username": "bob", "password": "bob-pw-1234567", "groups": ["team-a-readers"]},
         {"username": "carol", "password": "carol-pw-12345", "groups": []},
         {"username": "dave", "password": "dave-pw-123456", "groups": ["k8s-viewers"]}]
CLI_REDIRECT = "http://127.0.0.1:9/cli-callback"


class Env:
    def __init__(self, op_url: str, pitwall: Pitwall) -> None:
        self.op = op_url
        self.pitwall = pitwall
        self.url = pitwall.url


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("oidc")
    op_port, pw_port = free_port(), free_port()
    cfg = {"port": op_port, "db": str(root / "op.db"), "users": USERS, "apps": [
        {"client_id": "pitwall", "client_secret": "pitwall-client-secret",
         "redirect_uris": [f"https://127.0.0.1:{pw_port}/auth/callback"]},
        {"client_id": "cli", "client_secret": "cli-client-secret", "redirect_uris": [CLI_REDIRECT]}]}
    with open(root / "op.log", "wb") as op_log:
        op = subprocess.Popen([sys.executable, str(PROVIDER), json.dumps(cfg)], stdout=subprocess.PIPE, stderr=op_log)
    try:
        assert op.stdout is not None and op.stdout.readline().strip() == b"ready"
        op_url = f"http://127.0.0.1:{op_port}"
        for _ in range(100):
            try:
                if httpx.get(op_url + "/o/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        secret_file = root / "client-secret"
        secret_file.write_text("pitwall-client-secret\n")
        pw = Pitwall(root, {
            "auth_tokens": [{"token": ADMIN, "name": "operator", "scopes": ["admin"]}],
            "oidc": {"issuer": op_url + "/o", "client_id": "pitwall", "client_secret_file": str(secret_file),
                     "audiences": ["pitwall", "cli"], "scopes": ["openid", "profile"],
                     "username_claim": "preferred_username", "groups_claim": "groups"},
            "rbac": {"bindings": [
                {"role": "editor", "subjects": [{"kind": "group", "name": "sre"}], "tenants": ["*"]},
                {"role": "viewer", "subjects": [{"kind": "group", "name": "team-a-readers"}], "tenants": ["team-a"]},
            ]}}, port=pw_port)
        try:
            yield Env(op_url, pw)
        finally:
            pw.stop()
    finally:
        op.terminate()
        op.wait(timeout=20)
        if op.stdout is not None:
            op.stdout.close()


def _sign_in_at_provider(c: httpx.Client, url: str, user: dict[str, str], stop: str) -> httpx.Response:
    """Follow redirects from ``url``, filling the provider's login form, until a redirect to ``stop``."""
    for _ in range(12):
        r = c.get(url)
        if r.status_code in (301, 302, 303, 307):
            url = urljoin(url, r.headers["location"])
            if url.startswith(stop):
                return r
            continue
        assert r.status_code == 200 and "csrfmiddlewaretoken" in r.text, r.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
        assert token is not None
        r = c.post(url, data={"username": user["username"], "password": user["password"],
                              "csrfmiddlewaretoken": token.group(1),
                              "next": parse_qs(urlparse(url).query).get("next", ["/"])[0]})
        assert r.status_code == 302, f"login refused: {r.text[:300]}"
        url = urljoin(url, r.headers["location"])
    raise AssertionError("too many redirects")


def _id_token(env: Env, user: dict[str, str]) -> str:
    """An ID token for ``user`` by the authorization code flow with PKCE, as a CLI would get one."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    q = httpx.QueryParams({"response_type": "code", "client_id": "cli", "redirect_uri": CLI_REDIRECT,
                           "scope": "openid profile", "state": "s1", "nonce": "n1", "code_challenge": challenge,
                           "code_challenge_method": "S256"})
    with httpx.Client() as c:
        r = _sign_in_at_provider(c, f"{env.op}/o/authorize/?{q}", user, CLI_REDIRECT)
        code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
        tok = c.post(f"{env.op}/o/token/", data={"grant_type": "authorization_code", "code": code,
                                                 "redirect_uri": CLI_REDIRECT, "code_verifier": verifier},
                     auth=("cli", "cli-client-secret"))
    assert tok.status_code == 200, tok.text
    return str(tok.json()["id_token"])


def _get(env: Env, path: str, token: str, tenant: str | None = None, **params: str) -> httpx.Response:
    h = {"Authorization": f"Bearer {token}", **({"X-Scope-OrgID": tenant} if tenant else {})}
    return httpx.get(env.url + path, params=params, headers=h, verify=False)


def test_id_token_as_bearer_maps_groups_to_roles_and_tenants(env: Env) -> None:
    alice, bob, carol = (_id_token(env, u) for u in USERS[:3])
    assert _get(env, "/api/v1/query", alice, query="1").status_code == 200
    assert _get(env, "/api/v1/query", alice, "team-b", query="1").status_code == 200  # editor, any tenant
    r = httpx.post(env.url + "/api/v2/alerts", json=[{"labels": {"alertname": "FromAlice"}}], verify=False,
                   headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 200, r.text
    assert _get(env, "/api/v1/query", bob, query="1").status_code == 200  # acts as its one tenant, team-a
    r = _get(env, "/api/v1/query", bob, "team-b", query="1")
    assert r.status_code == 403 and "user 'bob' may not use tenant 'team-b'" in r.json()["error"]
    r = httpx.post(env.url + "/api/v2/alerts", json=[], verify=False, headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 403
    r = _get(env, "/api/v1/query", carol, query="1")  # signed in, but no binding
    assert r.status_code == 403 and "user 'carol' lacks the 'read' scope" in r.text


def test_kubernetes_rbac_for_oidc_users_and_groups(env: Env) -> None:
    """Users without pitwall roles reach the Kubernetes API, where RoleBindings to their name or group decide."""
    admin = env.pitwall.kubectl_as(ADMIN, "operator")
    assert admin("create", "rolebinding", "carol-view", "--clusterrole=view", "--user=carol").returncode == 0
    r = admin("create", "clusterrolebinding", "k8s-viewers", "--clusterrole=view", "--group=k8s-viewers")
    assert r.returncode == 0, r.stderr
    carol = env.pitwall.kubectl_as(_id_token(env, USERS[2]), "carol")
    assert carol("auth", "can-i", "list", "pods").stdout.strip() == "yes"
    assert carol("auth", "can-i", "list", "pods", "-n", "kube-system").stdout.strip() == "no"
    r = carol("get", "pods", "-n", "kube-system")
    assert 'pods is forbidden: User "carol" cannot list resource "pods"' in r.stderr
    dave = env.pitwall.kubectl_as(_id_token(env, USERS[3]), "dave")
    assert dave("auth", "can-i", "list", "pods", "-n", "kube-system").stdout.strip() == "yes"
    who = json.loads(dave("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who["username"] == "dave" and "k8s-viewers" in who["groups"]


def test_bad_jwts_are_refused(env: Env) -> None:
    alice = _id_token(env, USERS[0])
    head, body, sig = alice.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["preferred_username"] = "mallory"
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), sig])
    r = _get(env, "/api/v1/query", forged, query="1")
    assert r.status_code == 401 and "invalid JWT" in r.text
    assert _get(env, "/api/v1/query", alice[:-2], query="1").status_code == 401
    assert _get(env, "/api/v1/query", "not-a-jwt-and-not-a-token", query="1").status_code == 401


def test_ui_sign_in_end_to_end(env: Env) -> None:
    with httpx.Client(verify=False) as c:
        r = c.get(env.url + "/alerts")
        assert r.status_code == 302 and r.headers["location"] == "/auth/login?next=%2Falerts"  # sign in first
        assert httpx.get(env.url + "/api/v1/query", verify=False).status_code == 401  # APIs just refuse
        start = c.get(env.url + r.headers["location"])
        assert start.status_code == 302
        auth = urlparse(start.headers["location"])
        q = parse_qs(auth.query)
        assert q["code_challenge_method"] == ["S256"] and q["state"] and q["nonce"] and q["client_id"] == ["pitwall"]
        r = _sign_in_at_provider(c, start.headers["location"], USERS[0], env.url + "/auth/callback")
        done = c.get(r.headers["location"])
        assert done.status_code == 303 and done.headers["location"] == "/alerts"
        cookie = done.headers["set-cookie"]
        assert "pitwall_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
        assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
        page = c.get(env.url + "/alerts")
        assert page.status_code == 200, page.text[:300]
        # A state-changing request on the session needs its CSRF token
        silence = {"name": "alertname", "op": "=", "value": "x", "duration": "1h", "created_by": "alice",
                   "comment": "from the UI"}
        r = c.post(env.url + "/alerts/silences", data=silence)
        assert r.status_code == 403 and "CSRF" in r.text
        field = re.search(r'<form method="post" action="/alerts/silences"[^>]*><input type="hidden" '
                          r'name="csrf_token" value="([^"]+)">', page.text)
        assert field is not None, "the silence form carries no CSRF field"
        csrf = field.group(1)
        r = c.post(env.url + "/alerts/silences", data={**silence, "csrf_token": "wrong"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = c.post(env.url + "/alerts/silences", data={**silence, "csrf_token": csrf})
        assert r.status_code == 303, r.text[:300]  # the form, as a browser posts it
        r = c.post(env.url + "/api/v2/alerts", json=[{"labels": {"alertname": "ui"}}], headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text[:300]  # the header, as the UI's scripts send it
        assert "alertname=x" in c.get(env.url + "/alerts").text or "from the UI" in c.get(env.url + "/alerts").text
        # logout (the page's sign-out form) ends the session, also for a copy of the cookie kept elsewhere
        assert 'action="/auth/logout"><input type="hidden" name="csrf_token"' in page.text and "Sign out alice" in page.text
        stolen = c.cookies.get("pitwall_session")
        assert c.post(env.url + "/auth/logout", data={"csrf_token": "wrong"}).status_code == 403
        r = c.post(env.url + "/auth/logout", data={"csrf_token": csrf})
        assert r.status_code == 303
        r = httpx.get(env.url + "/api/v2/alerts", cookies={"pitwall_session": str(stolen)}, verify=False)
        assert r.status_code == 401 and "session has expired or was ended" in r.text


def test_callback_refuses_a_forged_state(env: Env) -> None:
    with httpx.Client(verify=False) as c:
        start = c.get(env.url + "/auth/login")
        r = c.get(env.url + "/auth/callback", params={"code": "x", "state": "not-the-state"})
        assert start.status_code == 302 and r.status_code == 400 and "state does not match" in r.text


def test_logins_are_in_the_audit_log(env: Env) -> None:
    with httpx.Client(verify=False) as c:
        start = c.get(env.url + "/auth/login")
        r = _sign_in_at_provider(c, start.headers["location"], USERS[1], env.url + "/auth/callback")
        assert c.get(r.headers["location"]).status_code == 303
    h = {"Authorization": f"Bearer {ADMIN}", "X-Scope-OrgID": "pitwall-audit"}
    for _ in range(100):
        r = httpx.get(env.url + "/loki/api/v1/query_range", verify=False, headers=h, params={
            "query": '{job="pitwall-audit"} |= "/auth/callback"', "limit": "100"})
        lines = [v[1] for s in r.json()["data"]["result"] for v in s["values"]]
        if any("who=bob" in line and "status=303" in line for line in lines):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no audit entry for bob's sign-in: {lines}")
