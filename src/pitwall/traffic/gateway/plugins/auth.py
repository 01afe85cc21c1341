"""Kong's authentication plugins (key-auth, basic-auth, jwt) and acl, with Kong's messages and headers.

Each follows its ``kong/plugins/<name>/handler.lua``: where the credential
is looked for, the 401 messages (``No API key found in request``,
``Unauthorized``, ``Invalid signature``...), the ``WWW-Authenticate``
challenge, the ``anonymous`` consumer (a logical OR between auth plugins:
an already authenticated request skips the others), ``hide_credentials``,
and the ``X-Consumer-*`` / ``X-Credential-Identifier`` /
``X-Anonymous-Consumer`` headers sent upstream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import jwt as pyjwt
import orjson
from jwt.exceptions import InvalidKeyError, InvalidSignatureError, PyJWTError

from pitwall.traffic.gateway.context import Ctx, Reply, kong_error
from pitwall.traffic.gateway.plugins.base import Entity, Plugin

__all__ = ["ACL", "BasicAuth", "JWTAuth", "KeyAuth"]

_CONSUMER_HEADERS = ("x-consumer-id", "x-consumer-custom-id", "x-consumer-username", "x-credential-identifier",
                     "x-anonymous-consumer")


def _set_consumer(ctx: Ctx, consumer: Entity, credential: Entity | None, cred_ident: str | None) -> None:
    h = ctx.req.headers
    for name in _CONSUMER_HEADERS:
        h.pop(name, None)
    h["x-consumer-id"] = consumer["id"]
    if consumer.get("custom_id") is not None:
        h["x-consumer-custom-id"] = consumer["custom_id"]
    if consumer.get("username") is not None:
        h["x-consumer-username"] = consumer["username"]
    if credential is not None and cred_ident is not None:
        h["x-credential-identifier"] = cred_ident
    else:
        h["x-anonymous-consumer"] = "true"
    ctx.consumer = consumer
    ctx.credential = credential


class _Auth(Plugin):
    is_auth: ClassVar[bool] = True

    def access(self, ctx: Ctx) -> None:
        anonymous = self.conf.get("anonymous")
        if anonymous and ctx.credential is not None:
            return  # logical OR: another auth plugin already authenticated this request
        if ctx.req.method == "OPTIONS" and not self.conf.get("run_on_preflight", True):
            return
        try:
            self.authenticate(ctx)
        except Reply:
            if not anonymous:
                raise
            consumer = self.consumers.by_ref.get(anonymous)
            if consumer is None:
                raise kong_error(500, f"anonymous consumer {anonymous} is configured but doesn't exist") from None
            _set_consumer(ctx, consumer, None, None)

    def authenticate(self, ctx: Ctx) -> None:
        raise NotImplementedError


class KeyAuth(_Auth):
    name = "key-auth"
    priority = 1250

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        realm = self.conf.get("realm")
        self.challenge = [("WWW-Authenticate", f'Key realm="{realm}"' if realm else "Key")]
        # (name as configured, as looked up among the lower-cased request headers)
        self.names = [(n, n.lower()) for n in self.conf["key_names"]]
        self.in_header = bool(self.conf["key_in_header"])
        self.in_query = bool(self.conf["key_in_query"])
        self.in_body = bool(self.conf["key_in_body"])
        self.hide_credentials = bool(self.conf["hide_credentials"])

    def authenticate(self, ctx: Ctx) -> None:
        challenge = self.challenge  # kong_error copies it into each Reply
        req = ctx.req
        key: str | None = None
        where = ""
        name = ""
        for name, header in self.names:
            if self.in_header:
                v = req.headers.get(header)
                if v is not None:
                    key, where = v, "header"
                    if ", " in v:  # the header was sent more than once (repeats are joined with ", ")
                        raise kong_error(401, "Duplicate API key found", challenge)
                    break
            if self.in_query and req.query:
                vals = [v for k, v in parse_qsl(req.query, keep_blank_values=True) if k == name]
                if len(vals) > 1:
                    raise kong_error(401, "Duplicate API key found", challenge)
                if vals:
                    key, where = vals[0], "query"
                    break
            if self.in_body and req.body:
                v = _body_value(req.headers.get("content-type", ""), req.body, name)
                if v is not None:
                    key, where = v, "body"
                    break
        if not key:
            raise kong_error(401, "No API key found in request", challenge)
        found = self.consumers.keyauth.get(key)
        if found is None:
            raise kong_error(401, "Unauthorized", challenge)
        if self.hide_credentials:
            _hide_key(ctx, where, name)
        consumer, cred = found
        _set_consumer(ctx, consumer, cred, cred["id"])


def _body_value(content_type: str, body: bytes, name: str) -> str | None:
    ct = content_type.split(";")[0].strip().lower()
    try:
        if ct == "application/json":
            doc = orjson.loads(body)
            v = doc.get(name) if isinstance(doc, dict) else None
            return v if isinstance(v, str) else None
        if ct == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode(), keep_blank_values=True)).get(name)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None
    return None


def _hide_key(ctx: Ctx, where: str, name: str) -> None:
    req = ctx.req
    if where == "header":
        req.headers.pop(name.lower(), None)
    elif where == "query":
        req.query = urlencode([(k, v) for k, v in parse_qsl(req.query, keep_blank_values=True) if k != name])


class BasicAuth(_Auth):
    name = "basic-auth"
    priority = 1100

    def authenticate(self, ctx: Ctx) -> None:
        challenge = [("WWW-Authenticate", f'Basic realm="{self.conf["realm"]}"')]
        headers = ctx.req.headers
        for header in ("proxy-authorization", "authorization"):
            value = headers.get(header)
            if value is None:
                continue
            user_pass = _basic(value)
            if user_pass is None:
                continue
            found = self.consumers.basic.get(user_pass[0])
            if found is None or not hmac.compare_digest(found[1]["password"].encode(), user_pass[1].encode()):
                raise kong_error(401, "Unauthorized", challenge)
            if self.conf["hide_credentials"]:
                headers.pop(header, None)
            _set_consumer(ctx, found[0], found[1], found[1]["username"])
            return
        raise kong_error(401, "Unauthorized", challenge)


def _basic(value: str) -> tuple[str, str] | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384",
               "PS512", "EdDSA"}


class JWTAuth(_Auth):
    name = "jwt"
    priority = 1450

    def authenticate(self, ctx: Ctx) -> None:
        realm = self.conf.get("realm")
        base = f'Bearer realm="{realm}"' if realm else "Bearer"
        invalid = [("WWW-Authenticate", f'{base}, error="invalid_token"' if realm else 'Bearer error="invalid_token"')]
        tokens = self._tokens(ctx)
        if not tokens:
            raise kong_error(401, "Unauthorized", [("WWW-Authenticate", base)])
        if len(tokens) > 1:
            raise kong_error(401, "Multiple tokens provided", invalid)
        token = tokens[0]
        try:
            header = pyjwt.get_unverified_header(token)
            claims = orjson.loads(_b64(token.split(".")[1]))
        except (PyJWTError, IndexError, ValueError, orjson.JSONDecodeError):
            raise kong_error(401, "Bad token; invalid JSON", invalid) from None
        if not isinstance(claims, dict):
            raise kong_error(401, "Bad token; invalid JSON", invalid)
        name = self.conf["key_claim_name"]
        key = claims.get(name, header.get(name))
        if key is None:
            raise kong_error(401, f"No mandatory '{name}' in claims", invalid)
        if key == "" or not isinstance(key, str):
            raise kong_error(401, f"Invalid '{name}' in claims", invalid)
        found = self.consumers.jwt.get(key)
        if found is None:
            raise kong_error(401, f"No credentials found for given '{name}'", invalid)
        consumer, secret = found
        alg = secret.get("algorithm") or "HS256"
        if header.get("alg") != alg:
            raise kong_error(401, "Invalid algorithm", invalid)
        verify_key: Any = secret.get("secret") if alg.startswith("HS") else secret.get("rsa_public_key")
        if alg.startswith("HS") and self.conf["secret_is_base64"]:
            try:
                verify_key = base64.b64decode(verify_key)
            except (binascii.Error, TypeError):
                raise kong_error(401, "Invalid key/secret", invalid) from None
        try:
            if alg.startswith("HS"):
                _verify_hmac(token, verify_key, alg)
            else:
                pyjwt.api_jws.PyJWS().decode_complete(token, verify_key, algorithms=[alg])
        except InvalidSignatureError:
            raise kong_error(401, "Invalid signature", invalid) from None
        except (InvalidKeyError, PyJWTError, ValueError, TypeError):
            raise kong_error(401, "Invalid key/secret", invalid) from None
        self._claims(claims, invalid)
        _set_consumer(ctx, consumer, secret, secret["key"])

    def _claims(self, claims: dict[str, Any], invalid: list[tuple[str, str]]) -> None:
        errors: dict[str, str] = {}
        now = time.time()
        for claim in self.conf.get("claims_to_verify") or []:
            v = claims.get(claim)
            if v is None:
                continue
            if not isinstance(v, int | float) or isinstance(v, bool):
                errors[claim] = "must be a number"
            elif claim == "nbf" and v > now:
                errors[claim] = "token not valid yet"
            elif claim == "exp" and v <= now:
                errors[claim] = "token expired"
        if not errors and (self.conf.get("maximum_expiration") or 0) > 0:
            exp = claims.get("exp")
            if not isinstance(exp, int | float) or exp - now > self.conf["maximum_expiration"]:
                errors["exp"] = "exceeds maximum allowed expiration"
        if errors:
            raise kong_error(401, headers=invalid, extra=errors)

    def _tokens(self, ctx: Ctx) -> list[str]:
        req = ctx.req
        out: list[str] = []
        if req.query:
            names = set(self.conf.get("uri_param_names") or [])
            out.extend(v for k, v in parse_qsl(req.query, keep_blank_values=True) if k in names and v)
        cookies = req.headers.get("cookie")
        if cookies and self.conf.get("cookie_names"):
            jar = dict(c.strip().partition("=")[::2] for c in cookies.split(";"))
            out.extend(jar[n] for n in self.conf["cookie_names"] if jar.get(n))
        if out:
            return out[:2]
        for name in self.conf.get("header_names") or []:
            v = req.headers.get(name.lower())
            if v:
                scheme, _, token = v.strip().partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    out.append(token.strip())
        return out


_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _verify_hmac(token: str, secret: str | bytes, alg: str) -> None:
    """HS* signatures checked here: Kong accepts secrets of any length (PyJWT warns below the RFC's)."""
    signing_input, _, sig = token.rpartition(".")
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, signing_input.encode(), _HMAC[alg]).digest()
    try:
        given = _b64(sig)
    except (binascii.Error, ValueError):
        raise InvalidSignatureError from None
    if not hmac.compare_digest(expected, given):
        raise InvalidSignatureError


def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class ACL(Plugin):
    name = "acl"
    priority = 950

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.allow = frozenset(self.conf.get("allow") or ()) if self.conf.get("allow") is not None else None
        self.deny = frozenset(self.conf.get("deny") or ())

    def access(self, ctx: Ctx) -> None:
        consumer = ctx.consumer
        if consumer is None:
            raise kong_error(401)
        groups = ctx.authenticated_groups if ctx.authenticated_groups is not None and (
            self.conf["always_use_authenticated_groups"] or ctx.credential is None) else \
            self.consumers.groups.get(consumer["id"], [])
        if self.allow is not None:
            blocked = not any(g in self.allow for g in groups)
        else:
            blocked = any(g in self.deny for g in groups)
        if blocked:
            raise kong_error(403, "You cannot consume this service")
        if not self.conf["hide_groups_header"] and groups:
            ctx.req.headers["x-consumer-groups"] = ", ".join(groups)
