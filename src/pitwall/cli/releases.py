"""``pitwall releases wait NAMESPACE/CANARY``: block until a Flagger Canary gives its verdict on the revision
its target runs now (for a deploy job's ``script:``, after ``kubectl apply``); ``pitwall releases abtest``: an A/B
report from PromQL queries, computed by the server (``POST /api/releases/v1/abtest``)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TenantOpt, TokenOpt, call, fail

app = typer.Typer(help="Releases: Flagger Canaries and A/B reports.", no_args_is_help=True)
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


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _abtest_body(numerator: str | None, denominator: str | None, variant: list[str], successes: list[str],
                 trials: list[str], **fields: Any) -> dict[str, Any]:
    """The JSON of ``POST /api/releases/v1/abtest``: the options given, and the repeated per-variant ones zipped
    in order."""
    if not (len(variant) == len(successes) == len(trials)):
        fail(PROG, "--variant, --successes and --trials: give each once per variant, in the same order", 2)
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    body.update({k: v for k, v in (("numerator", numerator), ("denominator", denominator)) if v})
    if variant:
        body["variants"] = [{"name": n, "successes": s, "trials": t}
                            for n, s, t in zip(variant, successes, trials, strict=True)]
    return body


def _print_report(report: dict[str, Any]) -> None:
    typer.echo(f"{'variant':<24} {'successes':>12} {'trials':>12} {'rate':>9}  {report['confidence']:.0%} interval")
    for v in report["variants"]:
        lo, hi = v["interval"]
        typer.echo(f"{v['name']:<24} {v['successes']:>12g} {v['trials']:>12g} {_pct(v['rate']):>9}  "
                   f"[{_pct(lo)}, {_pct(hi)}]")
    for c in report["comparisons"]:
        lo, hi = c["liftInterval"]
        lift = "-" if c["lift"] is None else f"{c['lift'] * 100:+.1f}% [{_pct(lo)}, {_pct(hi)}]"
        verdict = "significant" if c["significant"] else "not significant"
        typer.echo(f"{c['treatment']} vs {c['control']}: {c['test']}-test p={c['pValue']:.4g} "
                   f"(adjusted {c['pAdjusted']:.4g}), {verdict}; lift {lift}")
        if c.get("verdict"):
            typer.echo(f"  verdict: {c['verdict']['text']}")
    size = report.get("sampleSize")
    if size:
        typer.echo(f"sample size: {size['perVariant']} trials per variant detect a {size['mde']:+.0%} change "
                   f"(alpha {size['alpha']:.4g}, power {size['power']:g})")
    for note in report["notes"]:
        typer.echo(f"note: {note}")


@app.command("abtest")
def abtest(
    numerator: Annotated[str | None, typer.Option("--numerator", help="PromQL: successes per variant, e.g. "
                                                  "'sum by (variant) (increase(orders_total[$window]))'.")] = None,
    denominator: Annotated[str | None, typer.Option("--denominator", help="PromQL: trials per variant, e.g. "
                                                    "'sum by (variant) (increase(visits_total[$window]))'.")] = None,
    by: Annotated[str, typer.Option("--by", help="The label naming the variant.")] = "variant",
    variant: Annotated[list[str] | None, typer.Option("--variant", help="Instead of --numerator/--denominator: a "
                                                      "variant's name (repeat, with --successes and --trials).")] = None,
    successes: Annotated[list[str] | None, typer.Option("--successes", help="PromQL: that variant's successes "
                                                        "(one number).")] = None,
    trials: Annotated[list[str] | None, typer.Option("--trials", help="PromQL: that variant's trials.")] = None,
    control: Annotated[str | None, typer.Option("--control", help="The control variant (default: the first "
                                                "by name, or the first --variant).")] = None,
    confidence: Annotated[float, typer.Option("--confidence", min=0.5, max=0.9999)] = 0.95,
    window: Annotated[str | None, typer.Option("--window", help="Replaces $window in the queries (7d, 2w).")] = None,
    mde: Annotated[float, typer.Option("--mde", help="Relative change the sample-size estimate is for "
                                       "(0.1 = 10%).")] = 0.1,
    power: Annotated[float, typer.Option("--power", help="Power of the sample-size estimate.")] = 0.8,
    at: Annotated[str | None, typer.Option("--time", help="Evaluation time (RFC 3339 or Unix seconds; "
                                           "default now).")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="NAMESPACE/NAME of a saved ABTest "
                                                   "(instead of the query options).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """An A/B report for an experiment that is not a canary: each variant's rate (successes / trials, read from
    pitwall's metrics), each treatment tested against the control, with intervals, a verdict and the sample
    size needed; the server's ``/api/releases/v1/abtest`` computes it."""
    if output not in ("text", "json"):
        fail(PROG, f"--output: {output!r} is not text or json", 2)
    if experiment is not None:
        ns, sep, name = experiment.partition("/")
        if not sep or not ns or not name or "/" in name or numerator or denominator or variant:
            fail(PROG, f"--experiment {experiment!r}: NAMESPACE/NAME, without query options", 2)
        resp = call(PROG, "GET", server, f"/api/releases/v1/abtests/{ns}/{name}", token=token, tenant=tenant)
    else:
        body = _abtest_body(numerator, denominator, variant or [], successes or [], trials or [], by=by,
                            control=control, confidence=confidence, window=window, mde=mde, power=power, time=at)
        resp = call(PROG, "POST", server, "/api/releases/v1/abtest", token=token, tenant=tenant, json=body)
    doc = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code >= 400:
        fail(PROG, str((doc.get("error") or {}).get("message") or f"HTTP {resp.status_code}: {resp.text[:300]}"))
    if output == "json":
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_report(doc)
