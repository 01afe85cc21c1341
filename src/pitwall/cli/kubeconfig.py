"""``pitwall kubeconfig [--merge]``: a kubectl context for this server.

Prints a kubeconfig (cluster, user with the bearer token, context) on
stdout, or merges it into ``$KUBECONFIG`` (its first file) or
``~/.kube/config`` and makes it the current context. kubectl sends a token
only over TLS, so an ``http://`` server with a token gets a warning; an
``https://`` server is trusted with ``insecure-skip-tls-verify`` unless a CA
file is given.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, fail

__all__ = ["build_kubeconfig", "kubeconfig"]


def build_kubeconfig(server: str, token: str | None, name: str = "pitwall", namespace: str = "default",
                     ca_file: Path | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server.rstrip("/")}
    if server.startswith("https://"):
        if ca_file is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
        else:
            cluster["insecure-skip-tls-verify"] = True
    user: dict[str, Any] = {"token": token} if token else {}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def _merge(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(existing or {})
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    for section in ("clusters", "users", "contexts"):
        names = {e["name"] for e in new[section]}
        out[section] = [e for e in out.get(section) or [] if e.get("name") not in names] + new[section]
    out["current-context"] = new["current-context"]
    return out


def _config_path() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first) if first else Path.home() / ".kube" / "config"


def kubeconfig(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    merge: Annotated[bool, typer.Option("--merge", help="Merge into $KUBECONFIG or ~/.kube/config and use it.")] = False,
    name: Annotated[str, typer.Option("--name", help="Name of the cluster, user and context.")] = "pitwall",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The context's namespace.")] = "default",
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA certificate of an https server.")] = None,
) -> None:
    """Print (or merge into ~/.kube/config) a kubectl context for this server."""
    if token and server.startswith("http://"):
        typer.echo("pitwall: kubectl sends tokens only over https; serve pitwall with tls_cert_file/tls_key_file",
                   err=True)
    if ca_file is not None and not ca_file.is_file():
        fail("pitwall", f"--ca-file: {ca_file} is not a file", 2)
    cfg = build_kubeconfig(server, token, name, namespace, ca_file)
    if not merge:
        typer.echo(yaml.safe_dump(cfg, sort_keys=False), nl=False)
        return
    path = _config_path()
    try:
        existing = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as e:
        fail("pitwall", f"{path}: not a kubeconfig: {e}")
    merged = _merge(existing if isinstance(existing, dict) else {}, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    path.chmod(0o600)
    typer.echo(f"context {name!r} for {server} merged into {path} and made current")
