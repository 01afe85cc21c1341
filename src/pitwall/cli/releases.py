"""``pitwall releases wait NAMESPACE/CANARY``: block until a Flagger Canary gives its verdict on the revision
its target runs now (for a deploy job's ``script:``, after ``kubectl apply``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

app = typer.Typer(help="Releases: Flagger Canaries.", no_args_is_help=True)
PROG = "pitwall releases"
CANARIES = "/apis/flagger.app/v1beta1/namespaces/{ns}/canaries/{name}"
TARGETS = {"Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
           "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}"}
PASSED = ("Succeeded", "Initialized")  # Initialized: the first revision, promoted without analysis


def _seconds(text: str) -> float:
    try:
        from pitwall.pipelines.durations import parse_human_duration  # GitLab-style: 10m, 1h 30m, 90

        return parse_human_duration(text)
    except ValueError as e:
        fail(PROG, f"--timeout: {e}", 2)


def _get(server: str, token: str | None, path: str, what: str) -> dict[str, Any]:
    resp = call(PROG, "GET", server, path, token=token)
    if resp.status_code == 404:
        fail(PROG, f"{what} not found")
    if resp.status_code >= 400:
        fail(PROG, f"reading {what}: HTTP {resp.status_code}: {resp.text.strip()[:500]}")
    out: dict[str, Any] = resp.json()
    return out


def _verdict(server: str, token: str | None, ns: str, name: str) -> tuple[str, str, bool]:
    """The canary's phase and message, and whether its status is about the target's current template (the
    controller has seen the revision just applied: Flagger's ``lastAppliedSpec``)."""
    cd = _get(server, token, CANARIES.format(ns=ns, name=name), f"canary {ns}/{name}")
    ref = (cd.get("spec") or {}).get("targetRef") or {}
    kind = str(ref.get("kind") or "Deployment")
    if kind not in TARGETS:
        fail(PROG, f"canary {ns}/{name} targets a {kind}: only Deployment and DaemonSet are supported")
    target = _get(server, token, TARGETS[kind].format(ns=ns, name=ref.get("name", "")),
                  f"{kind} {ns}/{ref.get('name')}")
    st = cd.get("status") or {}
    from pitwall.releases import compute_hash  # here: the CLI starts without the server's packages

    current = st.get("lastAppliedSpec") == compute_hash((target.get("spec") or {}).get("template") or {})
    cond: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Promoted"), {})
    return str(st.get("phase") or "Initializing"), str(cond.get("message") or ""), current


def _warnings(server: str, token: str | None, ns: str, name: str, since: str) -> str:
    """The canary's Warning events since ``since`` (RFC 3339, whole seconds), oldest first: why it rolled
    back."""
    resp = call(PROG, "GET", server, f"/api/v1/namespaces/{ns}/events", token=token,
                params={"fieldSelector": f"involvedObject.kind=Canary,involvedObject.name={name}"})
    if resp.status_code >= 400:
        return ""
    warns = [(str(e.get("lastTimestamp") or e.get("eventTime") or ""), str(e.get("message") or ""))
             for e in resp.json().get("items") or [] if e.get("type") == "Warning"]
    return "; ".join(m for t, m in sorted(warns) if t >= since and m)


@app.command("wait")
def wait(
    canary: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the Canary.")],
    timeout: Annotated[str, typer.Option("--timeout", help="Give up after this long (10m, 1h, 90).")] = "10m",
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls.", min=0.1)] = 1.0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Wait for the canary's verdict on its target's current revision: exit 0 when promoted (Succeeded),
    1 when rolled back (Failed, with the canary's message) or on timeout."""
    ns, sep, name = canary.partition("/")
    if not sep or not ns or not name or "/" in name:
        fail(PROG, f"{canary!r}: expected NAMESPACE/NAME", 2)
    deadline = time.monotonic() + _seconds(timeout)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    last = ""
    while True:
        phase, message, current = _verdict(server, token, ns, name)
        shown = f"{phase}{'' if current else ' (previous revision)'}"
        if shown != last:
            typer.echo(f"canary {ns}/{name}: {shown}{': ' + message if message else ''}", err=True)
            last = shown
        if current and phase in PASSED:
            typer.echo(f"canary {ns}/{name} {phase}: {message}")
            return
        if current and phase == "Failed":
            why = _warnings(server, token, ns, name, since)
            fail(PROG, f"canary {ns}/{name} Failed: {message}{' (' + why + ')' if why else ''}")
        if time.monotonic() >= deadline:
            fail(PROG, f"canary {ns}/{name}: no verdict within {timeout} (phase {phase})")
        time.sleep(interval)
