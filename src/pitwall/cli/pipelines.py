"""``pitwall pipelines run`` (a repository's ``.gitlab-ci.yml`` on the server), ``logs`` and ``dora``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

app = typer.Typer(help="CI/CD pipelines from .gitlab-ci.yml: run them, follow their logs.", no_args_is_help=True)
PROG = "pitwall pipelines"
FINAL = {"success", "failed", "canceled", "skipped", "manual"}
POLL_S = 0.5


def _vars(items: list[str], masked: bool) -> list[dict[str, Any]]:
    out = []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(PROG, f"--{'masked-' if masked else ''}var {item!r}: expected KEY=VALUE", 2)
        out.append({"key": k, "value": v, "masked": masked})
    return out


def _check(resp: Any) -> Any:
    if resp.status_code >= 400:
        try:
            err = resp.json().get("error", {}).get("message") or resp.text
        except (ValueError, AttributeError):
            err = resp.text
        fail(PROG, f"HTTP {resp.status_code}: {str(err).strip()}")
    return resp.json()


def _get(server: str, token: str | None, pipeline_id: int) -> dict[str, Any]:
    data: dict[str, Any] = _check(call(PROG, "GET", server, f"/api/pipelines/v1/pipelines/{pipeline_id}",
                                       token=token))
    return data


@app.command("run")
def run(
    repo: Annotated[Path, typer.Option("--repo", help="The git repository (a path the server can read).")],
    ref: Annotated[str | None, typer.Option("--ref", help="Branch, tag or commit (default: the checked-out "
                                                          "branch).")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="KEY=VALUE, a pipeline variable.")] = None,
    masked_var: Annotated[list[str] | None, typer.Option(
        "--masked-var", help="KEY=VALUE, a pipeline variable masked in logs (one line, 8+ characters).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the pipeline finishes (exit 1 unless it "
                                                      "succeeded).")] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Run the repository's .gitlab-ci.yml on the server."""
    if output not in ("text", "json"):
        fail(PROG, f"--output {output!r}: expected text or json", 2)
    body = {"repo": str(repo.expanduser().resolve()), "ref": ref,
            "variables": _vars(var or [], False) + _vars(masked_var or [], True)}
    p = _check(call(PROG, "POST", server, "/api/pipelines/v1/runs", token=token, json=body))
    if wait:
        while p["status"] not in FINAL:
            time.sleep(POLL_S)
            p = _get(server, token, p["id"])
    if output == "json":
        typer.echo(json.dumps(p, indent=2))
    else:
        typer.echo(f"pipeline #{p['id']} ({p['ref']} {p['sha'][:8]}): {p['status']}")
        for j in p["jobs"]:
            typer.echo(f"  {j['stage']:<12} {j['name']:<40} {j['status']}")
    if wait and p["status"] != "success":
        raise typer.Exit(1)


@app.command("logs")
def logs(
    pipeline: Annotated[int, typer.Argument(help="Pipeline id.")],
    job: Annotated[str | None, typer.Argument(help="A job's name or id (default: every job).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the jobs finish.")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Print job logs; with -f, stream them as they are written."""
    offsets: dict[int, int] = {}
    while True:
        p = _get(server, token, pipeline)
        jobs = [j for j in p["jobs"] if job is None or j["name"] == job or str(j["id"]) == job]
        if job is not None and not jobs:
            fail(PROG, f"pipeline {pipeline} has no job {job!r}")
        for j in jobs:
            _drain(server, token, j, offsets, prefix=job is None)
        if not follow or p["status"] in FINAL:
            return
        time.sleep(POLL_S)


def _drain(server: str, token: str | None, j: dict[str, Any], offsets: dict[int, int], *, prefix: bool) -> None:
    while True:
        off = offsets.get(j["id"], 0)
        resp = call(PROG, "GET", server, f"/api/pipelines/v1/jobs/{j['id']}/trace", token=token,
                    params={"offset": off})
        if resp.status_code >= 400:
            fail(PROG, f"HTTP {resp.status_code}: {resp.text.strip()}")
        if not resp.content:
            return
        offsets[j["id"]] = int(resp.headers.get("X-Next-Offset", off + len(resp.content)))
        text = resp.content.decode("utf-8", "replace")
        if prefix:
            text = "".join(f"[{j['name']}] {line}\n" for line in text.splitlines())
        sys.stdout.write(text)
        sys.stdout.flush()


def _fmt_secs(v: float | None) -> str:
    if v is None:
        return "n/a"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if v >= n:
            return f"{v / n:.1f}{unit}"
    return f"{v:.0f}s"


@app.command("dora")
def dora(
    environment: Annotated[str, typer.Option("--environment", "-e", help="The environment deployed to.")]
    = "production",
    window: Annotated[str, typer.Option("--window", help="How far back: 30d, 1w, 12h (at most 366d).")] = "30d",
    project: Annotated[int | None, typer.Option("--project", help="One project's id (default: all).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """DORA's four keys from the recorded deployments (and incidents) to an environment."""
    if output not in ("text", "json"):
        fail(PROG, f"--output {output!r}: expected text or json", 2)
    params: dict[str, Any] = {"environment": environment, "window": window}
    if project is not None:
        params["project"] = project
    f = _check(call(PROG, "GET", server, "/api/pipelines/v1/dora", token=token, params=params))
    if output == "json":
        typer.echo(json.dumps(f, indent=2))
        return
    cfr = f["change_failure_rate"]
    typer.echo(f"environment {f['environment']}, last {_fmt_secs(f['window_seconds'])}: "
               f"{f['deployments']} deployments, {f['changes']} changes, {f['failed_changes']} failed")
    typer.echo(f"  deployment frequency   {f['deployment_frequency_per_day']}/day")
    typer.echo(f"  lead time for changes  {_fmt_secs(f['lead_time_seconds'])} (median)")
    typer.echo(f"  change failure rate    {'n/a' if cfr is None else f'{cfr * 100:.1f}%'}")
    typer.echo(f"  time to restore        {_fmt_secs(f['time_to_restore_seconds'])} (median)")


hook_app = typer.Typer(help="pitwall's post-receive hook in a bare repository: pushes start pipelines at once.",
                       no_args_is_help=True)
app.add_typer(hook_app, name="hook")


@hook_app.command("install")
def hook_install(
    repo: Annotated[Path, typer.Argument(help="The repository (bare, or its .git) on this machine.")],
    project: Annotated[str | None, typer.Option("--project", help="The project's name when the server first "
                                                                  "sees the repository (default: its directory's).")]
    = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, max=60,
                                           help="Seconds a push waits for the server at most.")] = 5.0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Install (or update) the hook; an existing post-receive hook is kept and runs first."""
    from pitwall.cli.pipelines_hook import HookError, install

    if project is not None and not project.replace("-", "").replace("_", "").replace(".", "").isalnum():
        fail(PROG, f"--project {project!r}: letters, digits, '.', '_' and '-' only", 2)
    try:
        typer.echo(install(repo, server, token, project, timeout))
    except (HookError, OSError) as e:
        fail(PROG, str(e))


@hook_app.command("uninstall")
def hook_uninstall(
    repo: Annotated[Path, typer.Argument(help="The repository the hook was installed in.")],
) -> None:
    """Remove the hook, putting back the hook it chained."""
    from pitwall.cli.pipelines_hook import HookError, uninstall

    try:
        typer.echo(uninstall(repo))
    except (HookError, OSError) as e:
        fail(PROG, str(e))
