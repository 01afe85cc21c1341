"""The load tester's ``type: kubectl`` task: Flagger's splitting of ``cmd`` and its answers (200, output on
``returnCmdOutput``, 500 ``command X failed: OUT: exit status N``), pitwall's refusals (400) of arguments that
would reach past the Kubernetes API, and how kubectl is started: a token for the configured ServiceAccount in a
private 0600 kubeconfig, never on the command line, and no environment but PATH, HOME and KUBECONFIG."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from pitwall.releases.kubectl import KubectlRunner, kubectl_args
from pitwall.releases.loadtester import GateStore, LoadTester, loadtester_router
from pitwall.releases.settings import LoadTesterSettings
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.releases.harness import Changes

pytestmark = pytest.mark.timeout(60)
TOKEN = "header.claims.signature-of-the-loadtester"
# Stands in for kubectl: shows its arguments, environment, and its kubeconfig's mode and contents; fails on "fail".
FAKE = """#!/bin/sh
echo "args: $*"
echo "env: $(env | cut -d= -f1 | grep -v '^PWD$' | sort | tr '\\n' ' ')"
echo "mode: $(stat -c %a "$KUBECONFIG")"
cat "$KUBECONFIG"
[ "$1" = fail-please ] && exit 3
[ "$2" = fail ] && exit 3
exit 0
"""


@pytest.mark.parametrize("cmd", [
    "get pods -n test", "get pods -ojson", "get -n kube-system pods -A -o wide", "run test --image=alpine",
    "exec podinfo -- sh -c 'cat -f'", "rollout status deployment/podinfo --timeout=60s",
    "wait --for=condition=ready pod -l app=podinfo",
])
def test_kubectl_args_split_as_flagger_does(cmd: str) -> None:
    assert kubectl_args(cmd) == cmd.split()  # Go's strings.Fields: no quoting


@pytest.mark.parametrize(("cmd", "why"), [
    ("apply -f /etc/passwd", "-f is not allowed"),
    ("get pods -Rf x", "-f is not allowed"),
    ("apply -k dir", "-k is not allowed"),
    ("get pods -s https://elsewhere", "-s is not allowed"),
    ("get pods --kubeconfig=/root/.kube/config", "--kubeconfig is not allowed"),
    ("get pods --token abc", "--token is not allowed"),
    ("get pods --as=system:admin", "--as is not allowed"),
    ("create configmap x --from-file=/var/lib/pitwall/identity/session.key", "--from-file is not allowed"),
    ("get pods -o jsonpath-file=/etc/shadow", "read a file"),
    ("get pods --output=go-template-file=/x", "read a file"),
    ("get pods --template=/x", "--template is not allowed"),
    ("get pods --cache-dir=/tmp/x", "--cache-dir is not allowed"),
    ("get pods -v=9", "-v is not allowed"),
    ("cp pod:/x /tmp/x", "'cp' is not allowed"),
    ("proxy --port=8001", "'proxy' is not allowed"),
    ("edit deployment x", "'edit' is not allowed"),
    ("config view --raw", "'config' is not allowed"),
    ("my-plugin do", "'my-plugin' is not allowed"),
    ("-n test get pods", "'-n' is not allowed"),
    ("   ", "cmd not found"),
])
def test_kubectl_args_refuse_what_reaches_past_the_api(cmd: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        kubectl_args(cmd)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRevStore]:
    s = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _api(lt: LoadTester) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(loadtester_router(lt))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pitwall")


def hook(cmd: str, **meta: str) -> dict[str, object]:
    return {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "x",
            "metadata": {"type": "kubectl", "cmd": cmd, **meta}}


async def test_kubectl_runs_as_the_service_account_with_flaggers_answers(store: SqliteRevStore,
                                                                         tmp_path: Path) -> None:
    fake = tmp_path / "kubectl"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    issued: list[tuple[str, str, int]] = []

    async def issue(ns: str, name: str, seconds: int) -> str:
        issued.append((ns, name, seconds))
        return TOKEN

    settings = LoadTesterSettings(kubectl_service_account="flagger/loadtester")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    runner = KubectlRunner("https://127.0.0.1:9443", issue, binary=str(fake), tmp_dir=scratch)
    lt = LoadTester(settings, GateStore(store), changes=Changes(), kubectl=runner)
    async with _api(lt) as api:
        r = await api.post("/flagger-loadtester/", json=hook("get pods -n test", returnCmdOutput="True"))
        assert r.status_code == 200, r.text
        assert "args: get pods -n test\n" in r.text and TOKEN not in r.text.split("\n")[0]
        assert "env: HOME KUBECONFIG PATH \n" in r.text  # nothing of the server's environment
        assert "mode: 600\n" in r.text
        assert f"token: {TOKEN}" in r.text and "server: https://127.0.0.1:9443" in r.text
        assert "namespace: flagger" in r.text and "insecure-skip-tls-verify: true" in r.text
        assert issued == [("flagger", "loadtester", 3600)]
        # no output unless asked
        assert (await api.post("/flagger-loadtester/", json=hook("get pods"))).text == ""
        r = await api.post("/flagger-loadtester/", json=hook("get fail"))
        assert r.status_code == 500
        assert r.text.startswith("command get fail failed: args: get fail\n") and r.text.endswith(": exit status 3")
        r = await api.post("/flagger-loadtester/", json=hook("get pods --token=x"))
        assert (r.status_code, r.text) == (400, "kubectl flag --token is not allowed in pitwall's load tester")
    assert lt.runs == 3
    assert list(scratch.iterdir()) == []  # each run's private directory, its kubeconfig with it, is gone


async def test_kubectl_is_refused_until_a_service_account_is_set(store: SqliteRevStore) -> None:
    lt = LoadTester(LoadTesterSettings(), GateStore(store), kubectl=KubectlRunner("http://127.0.0.1:1"))
    async with _api(lt) as api:
        r = await api.post("/flagger-loadtester/", json=hook("get pods"))
    assert r.status_code == 400 and "releases.loadtester.kubectl_service_account" in r.text
    assert lt.runs == 0
