"""What every client command shares: the server and token options, one HTTP call, one way to fail.

Every command finds its server through ``--server`` or ``PITWALL_URL`` and
its token through ``--token`` or ``PITWALL_TOKEN`` (INTERFACES.md); a
command that reads one tenant's data also takes ``--tenant`` /
``PITWALL_TENANT`` (sent as ``X-Scope-OrgID``).
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import httpx
import typer

DEFAULT_SERVER = "http://127.0.0.1:9900"

ServerOpt = Annotated[str, typer.Option("--server", envvar="PITWALL_URL", help="Server base URL.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="PITWALL_TOKEN", help="Bearer token.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", envvar="PITWALL_TENANT", help="X-Scope-OrgID.")]


def headers(token: str | None, tenant: str | None = None) -> dict[str, str]:
    """The bearer token and tenant headers, where given."""
    h = {}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if tenant:
        h["X-Scope-OrgID"] = tenant
    return h


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    """Print ``<prog>: <message>`` on stderr and exit."""
    typer.echo(f"{prog}: {message}", err=True)
    raise typer.Exit(code)


def call(
    prog: str,
    method: str,
    server: str,
    path: str,
    *,
    token: str | None,
    tenant: str | None = None,
    timeout: float = 60,
    **kw: Any,
) -> httpx.Response:
    """One request to ``server`` + ``path``; an unreachable server ends the command."""
    try:
        return httpx.request(method, server.rstrip("/") + path, headers=headers(token, tenant), timeout=timeout, **kw)
    except httpx.HTTPError as e:
        fail(prog, f"cannot reach {server}: {e}")
