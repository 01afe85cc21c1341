"""Prometheus' common ``http_config``: one model and one client set-up for every outbound HTTP.

Scrape configs carry these keys inline, Alertmanager receivers under
``http_config``; both mean the same thing, as in Prometheus' common library:
basic auth, an ``Authorization`` header, a bearer token (each value or file),
TLS and proxy settings. Secrets given as files are read when a client is
built, so a rotated file takes effect on the next reload.
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Authorization",
    "BasicAuth",
    "HTTPClientConfig",
    "TLSConfig",
    "auth_header",
    "http_config_problems",
    "read_secret",
    "ssl_context",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BasicAuth(_Strict):
    username: str = ""
    username_file: str | None = None
    password: str | None = None
    password_file: str | None = None


class Authorization(_Strict):
    type: str = "Bearer"
    credentials: str | None = None
    credentials_file: str | None = None


class TLSConfig(_Strict):
    ca_file: str | None = None
    ca: str | None = None
    cert_file: str | None = None
    cert: str | None = None
    key_file: str | None = None
    key: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None


class HTTPClientConfig(_Strict):
    """The keys of Prometheus' ``HTTPClientConfig`` that pitwall's clients honour (or accept)."""

    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    tls_config: TLSConfig | None = None
    proxy_url: str | None = None
    no_proxy: str | None = None
    proxy_from_environment: bool = False
    follow_redirects: bool = True
    enable_http2: bool = True  # accepted; pitwall's clients speak HTTP/1.1
    http_headers: dict[str, Any] | None = Field(default=None)


def http_config_problems(cfg: HTTPClientConfig) -> list[tuple[str, str]]:
    """Prometheus' ``HTTPClientConfig.Validate``, as (key, message) pairs; empty when valid."""
    errs: list[tuple[str, str]] = []
    if cfg.bearer_token and cfg.bearer_token_file:
        errs.append(("bearer_token", "at most one of bearer_token & bearer_token_file must be configured"))
    has_bearer = bool(cfg.bearer_token or cfg.bearer_token_file)
    if cfg.basic_auth is not None and has_bearer:
        errs.append(("basic_auth",
                     "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"))
    if cfg.authorization is not None:
        if has_bearer:
            errs.append(("authorization", "authorization is not compatible with bearer_token & bearer_token_file"))
        if cfg.basic_auth is not None:
            errs.append(("authorization", "at most one of basic_auth, oauth2 & authorization must be configured"))
        a = cfg.authorization
        if a.credentials and a.credentials_file:
            errs.append(("authorization",
                         "at most one of authorization credentials & credentials_file must be configured"))
        if a.type.lower() == "basic":
            errs.append(("authorization.type", 'authorization type cannot be set to "basic", use "basic_auth" instead'))
    b = cfg.basic_auth
    if b is not None:
        if b.username and b.username_file:
            errs.append(("basic_auth", "at most one of basic_auth username & username_file must be configured"))
        if b.password and b.password_file:
            errs.append(("basic_auth", "at most one of basic_auth password & password_file must be configured"))
    return errs


def read_secret(value: str | None, path: str | None) -> str:
    """The secret from ``path`` when given (stripped), else ``value``. Raises OSError."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return value or ""


def auth_header(cfg: HTTPClientConfig) -> str | None:
    """The ``Authorization`` header value the config asks for, if any. Raises OSError."""
    if cfg.basic_auth is not None:
        b = cfg.basic_auth
        user = read_secret(b.username, b.username_file)
        pw = read_secret(b.password, b.password_file)
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    if cfg.authorization is not None:
        a = cfg.authorization
        return f"{a.type} {read_secret(a.credentials, a.credentials_file)}".strip()
    if cfg.bearer_token or cfg.bearer_token_file:
        return "Bearer " + read_secret(cfg.bearer_token, cfg.bearer_token_file)
    return None


def ssl_context(tls: TLSConfig | None) -> ssl.SSLContext:
    """A client TLS context: system CAs unless the config names others, its client certificate."""
    if tls is None:
        return ssl.create_default_context()
    ctx = ssl.create_default_context(cafile=tls.ca_file, cadata=tls.ca)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
