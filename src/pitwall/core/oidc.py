"""OpenID Connect: JWT bearer tokens on every API, and the web UI's sign-in.

Bearer tokens: a JWT whose ``iss`` is the configured issuer is verified
against the issuer's keys (JWKS, from its discovery document, cached and
fetched again when a token names an unknown key, at most every
``JWKS_MIN_REFETCH_S``, and every ``jwks_refresh``), its signature (RS256 or
ES256 only), ``aud`` (the client ID or ``audiences``), ``exp`` and ``nbf``
with ``leeway``. The user is the ``username_claim``, the groups the
``groups_claim``; ``core.rbac`` bindings (``user``/``group`` subjects) give
roles and tenants.

UI sign-in is the authorization code flow with PKCE (S256), ``state`` and
``nonce`` kept in a short-lived signed cookie. The session is a signed cookie
(HttpOnly, SameSite=Lax, Secure when served over TLS) holding the user, its
groups, an expiry and a CSRF token; state-changing requests authenticated by
the session must echo that token (``X-CSRF-Token`` header, ``csrf_token``
query parameter or form field: ``csrf_field`` renders it into the UI's forms), and pass the Origin check of ``core.browser_guard``.
Logout revokes the session (for the server's life) and clears the cookie.
Logins, failed logins and logouts are audit log entries (the callback and
logout paths are always audited).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitwall.core.errors import BadData, Forbidden, PitwallError, Unauthorized, Unavailable
from pitwall.core.http_errors import render
from pitwall.core.rbac import Policy
from pitwall.core.settings import OIDCSettings
from pitwall.core.tenancy import DEFAULT_TENANT, PRINCIPAL_KEY, Principal

__all__ = ["CALLBACK_PATH", "CSRF_KEY", "LOGIN_PATH", "LOGOUT_PATH", "OIDC", "SESSION_COOKIE", "OIDCSettings",
           "SessionCSRF", "csrf_field", "load_key"]

log = logging.getLogger(__name__)

LOGIN_PATH, CALLBACK_PATH, LOGOUT_PATH = "/auth/login", "/auth/callback", "/auth/logout"
SESSION_COOKIE, FLOW_COOKIE = "pitwall_session", "pitwall_oidc_flow"
ALGORITHMS = ("RS256", "ES256")
JWKS_MIN_REFETCH_S = 10.0
MAX_DOC_BYTES = 1 << 20  # discovery documents, JWKS and token responses are small
FLOW_TTL_S = 600
MAX_REVOKED = 100_000
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_KEY, CSRF_PENDING = "pitwall.csrf", "pitwall.csrf_pending"
CSRF_MESSAGE = "missing or wrong CSRF token for this session (X-CSRF-Token header or csrf_token form field)"
MAX_FORM_BYTES = 1 << 20


def load_key(path: Path, size: int = 32) -> bytes:
    """A random secret kept in ``path`` (created 0600 on first use): signs sessions across restarts."""
    try:
        data = path.read_bytes()
        if len(data) >= size:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(size)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Signer:
    """Signed, expiring JSON values for cookies (HMAC-SHA256)."""

    def __init__(self, key: bytes, purpose: str) -> None:
        self.key = hashlib.sha256(key + purpose.encode()).digest()

    def dumps(self, value: dict[str, Any]) -> str:
        body = _b64(json.dumps(value, separators=(",", ":")).encode())
        return body + "." + _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())

    def loads(self, text: str) -> dict[str, Any] | None:
        body, _, sig = text.partition(".")
        if len(text) > 8192 or not sig:
            return None
        want = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, want):
            return None
        try:
            value = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(value, dict) or float(value.get("exp", 0)) < time.time():
            return None
        return value


def _cookie(scope: Scope, name: str) -> str:
    for k, v in scope["headers"]:
        if k == b"cookie":
            text: str = bytes(v).decode("latin-1")
            for part in text.split(";"):
                key, _, val = part.strip().partition("=")
                if key == name:
                    return val
    return ""


class OIDC:
    """One OpenID provider: verifies its JWTs, runs the UI sign-in, keeps UI sessions."""

    def __init__(self, settings: OIDCSettings, policy: Policy, session_key: bytes,
                 http: Callable[[], httpx.AsyncClient] | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.sessions = _Signer(session_key, "session")
        self.flows = _Signer(session_key, "flow")
        self._http = http or (lambda: httpx.AsyncClient(timeout=10.0))
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0
        self.revoked: dict[str, float] = {}  # session id -> its expiry

    # ------------------------------------------------------------ provider documents

    async def _get_json(self, url: str, data: dict[str, str] | None = None,
                        auth: tuple[str, str] | None = None) -> dict[str, Any]:
        try:
            async with self._http() as c:
                if data is None:
                    r = await c.get(url)
                else:
                    r = await c.post(url, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as e:
            raise Unavailable(f"OpenID provider unreachable: {type(e).__name__}") from None
        if len(r.content) > MAX_DOC_BYTES:
            raise Unavailable(f"OpenID provider answer from {url} is over {MAX_DOC_BYTES} bytes")
        try:
            doc = r.json()
        except ValueError:
            raise Unavailable(f"OpenID provider answered {r.status_code} without JSON from {url}") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"OpenID provider answered a non-object from {url}")
        if r.status_code >= 400:
            raise Unauthorized(f"OpenID provider refused: {str(doc.get('error', r.status_code))[:200]}")
        return doc

    async def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (fetched once; its issuer must be ours)."""
        if self._discovery is None:
            doc = await self._get_json(self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if doc.get("issuer") != self.settings.issuer:
                raise Unavailable(f"OpenID discovery names issuer {str(doc.get('issuer'))[:200]!r}, "
                                  f"not {self.settings.issuer!r}")
            self._discovery = doc
        return self._discovery

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        stale = time.monotonic() - self._keys_at > self.settings.jwks_refresh
        missing = kid not in self._keys if kid else not self._keys
        if stale or (missing and time.monotonic() - self._keys_at > JWKS_MIN_REFETCH_S):
            jwks = await self._get_json(str((await self.discovery())["jwks_uri"]))
            keys: dict[str, jwt.PyJWK] = {}
            for k in jwks.get("keys") or []:
                if isinstance(k, dict) and k.get("use", "sig") == "sig":
                    try:
                        keys[str(k.get("kid", ""))] = jwt.PyJWK(k)
                    except jwt.PyJWTError:
                        continue  # a key type or algorithm we do not verify with
            self._keys, self._keys_at = keys, time.monotonic()
        if kid:
            key = self._keys.get(kid)
        else:
            key = next(iter(self._keys.values()), None) if len(self._keys) == 1 else None
        if key is None:
            raise Unauthorized("the token's signing key is not among the issuer's keys")
        return key

    async def verify(self, token: str, audience: list[str] | None = None, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a valid JWT from the issuer; ``Unauthorized`` naming what is wrong otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"JWT algorithm {str(alg)[:20]!r} not accepted (RS256, ES256)")
        key = await self._key(header.get("kid"))
        aud = audience or self.settings.audiences or [self.settings.client_id]
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=aud, issuer=self.settings.issuer,
                leeway=self.settings.leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid JWT: {e}") from None
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthorized("ID token nonce does not match the login")
        return claims

    def principal(self, claims: dict[str, Any]) -> Principal:
        """The user a verified token stands for, with the roles bindings give it and its groups."""
        user = claims.get(self.settings.username_claim)
        if not isinstance(user, str) or not user:
            raise Unauthorized(f"the token has no {self.settings.username_claim!r} claim")
        raw = claims.get(self.settings.groups_claim) or []
        groups = frozenset(str(g) for g in (raw if isinstance(raw, list) else [raw]))
        return _user(user, groups, self.policy)

    # ------------------------------------------------------------ core.auth.Authenticator

    async def authenticate(self, scope: Scope, bearer: bytes) -> Principal | None:
        """A bearer JWT from our issuer, or else a UI session cookie; None for other credentials."""
        if bearer:
            token = bearer.decode("latin-1")
            if token.count(".") != 2:
                return None
            try:
                iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
            except jwt.PyJWTError:
                return None
            if iss != self.settings.issuer:
                return None
            return self.principal(await self.verify(token))
        return self._session(scope)

    def _session(self, scope: Scope) -> Principal | None:
        raw = _cookie(scope, SESSION_COOKIE)
        if not raw:
            return None
        s = self.sessions.loads(raw)
        if s is None or str(s.get("sid")) in self.revoked:
            raise Unauthorized("the session has expired or was ended; sign in again at " + LOGIN_PATH)
        scope[CSRF_KEY] = str(s.get("csrf"))  # for the UI's forms (csrf_field) and SessionCSRF
        if scope.get("method", "GET") not in _SAFE and scope["path"] != LOGOUT_PATH:
            sent = _header(scope, b"x-csrf-token") or _query(scope, "csrf_token")
            if not sent:
                scope[CSRF_PENDING] = True  # a form field may carry it: SessionCSRF reads the body
            elif not hmac.compare_digest(sent, str(s.get("csrf"))):
                raise Forbidden(CSRF_MESSAGE)
        groups = frozenset(str(g) for g in s.get("groups") or [])
        return _user(str(s.get("user")), groups, self.policy)

    def csrf_token(self, scope: Scope) -> str | None:
        """The CSRF token of this request's session, for forms to echo."""
        s = self.sessions.loads(_cookie(scope, SESSION_COOKIE))
        return str(s["csrf"]) if s else None

    # ------------------------------------------------------------ UI sign-in

    def router(self) -> APIRouter:
        r = APIRouter(tags=["auth"])
        r.add_api_route(LOGIN_PATH, self._login, methods=["GET"], include_in_schema=False)
        r.add_api_route(CALLBACK_PATH, self._callback, methods=["GET"], include_in_schema=False)
        r.add_api_route(LOGOUT_PATH, self._logout, methods=["POST", "GET"], include_in_schema=False)
        return r

    def _redirect_uri(self, request: Request) -> str:
        return self.settings.redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH

    async def _login(self, request: Request) -> Response:
        return await _guard(self._start_login(request))

    async def _start_login(self, request: Request) -> Response:
        doc = await self.discovery()
        nxt = request.query_params.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"  # never an open redirect
        verifier = secrets.token_urlsafe(48)
        flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24), "verifier": verifier,
                "next": nxt[:2048], "exp": time.time() + FLOW_TTL_S}
        query = urlencode({
            "response_type": "code", "client_id": self.settings.client_id, "redirect_uri": self._redirect_uri(request),
            "scope": " ".join(self.settings.scopes), "state": flow["state"], "nonce": flow["nonce"],
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()), "code_challenge_method": "S256",
        })
        resp = RedirectResponse(f"{doc['authorization_endpoint']}?{query}", 302)
        self._set_cookie(request, resp, FLOW_COOKIE, self.flows.dumps(flow), FLOW_TTL_S)
        return resp

    async def _callback(self, request: Request) -> Response:
        return await _guard(self._finish_login(request))

    async def _finish_login(self, request: Request) -> Response:
        q = request.query_params
        if q.get("error"):
            raise Unauthorized(f"sign-in refused by the provider: {q.get('error', '')[:100]}")
        flow = self.flows.loads(request.cookies.get(FLOW_COOKIE, ""))
        if flow is None or not hmac.compare_digest(str(flow.get("state")), q.get("state", "")):
            raise BadData("sign-in state does not match (expired, or started elsewhere); start again at "
                          + LOGIN_PATH)
        doc = await self.discovery()
        form = {"grant_type": "authorization_code", "code": q.get("code", ""),
                "redirect_uri": self._redirect_uri(request), "code_verifier": str(flow["verifier"]),
                "client_id": self.settings.client_id}
        auth = (self.settings.client_id, self.settings.client_secret) if self.settings.client_secret else None
        tokens = await self._get_json(str(doc["token_endpoint"]), data=form, auth=auth)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized("the provider sent no ID token")
        claims = await self.verify(id_token, audience=[self.settings.client_id], nonce=str(flow["nonce"]))
        principal = self.principal(claims)
        request.scope[PRINCIPAL_KEY] = principal  # the audit entry of this request names who signed in
        ttl = self.settings.session_ttl  # the session outlives the ID token: pitwall does not refresh it
        session = {"sid": secrets.token_urlsafe(16), "user": principal.name, "groups": sorted(principal.groups),
                   "csrf": secrets.token_urlsafe(24), "exp": time.time() + ttl}
        resp = RedirectResponse(str(flow["next"]), 303)
        self._set_cookie(request, resp, SESSION_COOKIE, self.sessions.dumps(session), int(ttl))
        resp.delete_cookie(FLOW_COOKIE, path="/")
        log.info("sign-in", extra={"user": principal.name, "groups": len(principal.groups)})
        return resp

    async def _logout(self, request: Request) -> Response:
        s = self.sessions.loads(request.cookies.get(SESSION_COOKIE, ""))
        if s is not None:
            if request.method == "POST":
                form_token = request.query_params.get("csrf_token") or request.headers.get("x-csrf-token", "")
                if not form_token:
                    body = await request.body()
                    form_token = dict(_pairs(body[:4096])).get("csrf_token", "")
                if not hmac.compare_digest(form_token, str(s.get("csrf"))):
                    return render(Forbidden("missing or wrong CSRF token for this session"), "html")
            elif request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return render(Forbidden("logout from another site refused"), "html")
            self._revoke(str(s.get("sid")), float(s.get("exp", 0)))
        resp = RedirectResponse("/", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    def _revoke(self, sid: str, exp: float) -> None:
        now = time.time()
        if len(self.revoked) >= MAX_REVOKED:
            self.revoked = {k: v for k, v in self.revoked.items() if v > now}
        self.revoked[sid] = exp

    @staticmethod
    def _set_cookie(request: Request, resp: Response, name: str, value: str, max_age: float) -> None:
        resp.set_cookie(name, value, max_age=int(max_age), path="/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


def csrf_field(conn: HTTPConnection) -> Markup:
    """The hidden form field carrying this session's CSRF token ("" without a session): for the UI's forms."""
    token = conn.scope.get(CSRF_KEY)
    if not token:
        return Markup("")
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)


class SessionCSRF:
    """Checks the ``csrf_token`` form field of a session's state-changing form post (``BearerAuth`` marked it
    pending: no header or query token), then hands the body on unchanged. Runs inside ``BearerAuth``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        checked = await self.admit(scope, receive, send)
        if checked is not None:
            await self.app(scope, checked, send)

    @staticmethod
    async def admit(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The ``receive`` an HTTP request goes on with (its body replayed after a check), or None when it was
        refused (answered here)."""
        if not scope.get(CSRF_PENDING):
            return receive
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = bool(msg.get("more_body"))
            if len(body) > MAX_FORM_BYTES:
                break
        ctype = _header(scope, b"content-type").split(";")[0].strip().lower()
        sent = dict(_pairs(body)).get("csrf_token", "") if ctype == "application/x-www-form-urlencoded" else ""
        if len(body) > MAX_FORM_BYTES or not sent or not hmac.compare_digest(sent, str(scope.get(CSRF_KEY))):
            await render(Forbidden(CSRF_MESSAGE), "text")(scope, receive, send)
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _user(name: str, groups: frozenset[str], policy: Policy) -> Principal:
    """An OIDC user: the roles bindings give it, each for its tenants. Its own tenant is ``default`` (holding
    no role there): server-wide state such as the Kubernetes API, decided by Kubernetes RBAC, stays open to
    users without pitwall roles."""
    return Principal(name, frozenset(), frozenset({DEFAULT_TENANT}), policy.grants("user", name, groups), groups,
                     "user")


async def _guard(work: Awaitable[Response]) -> Response:
    try:
        return await work
    except PitwallError as err:
        return render(err, "html")


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v).decode("latin-1")
    return ""


def _query(scope: Scope, key: str) -> str:
    return dict(_pairs(scope.get("query_string", b""))).get(key, "")


def _pairs(raw: bytes) -> list[tuple[str, str]]:
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
