"""ConfigTemplate objects rendered by the registry part's controller, in process (no HTTP): the ConfigMap
follows the KV and the catalog, failures keep the previous text, restart rolls a Deployment, signal reaches
a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pitwall.incidents import ChangeEvent
from pitwall.kube import Conflict, KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.registry import RegistryPart, build_registry_part
from pitwall.registry.reload import LAST_RELOADED_FROM
from pitwall.registry.templates import ConfigTemplateController, Deps
from pitwall.storage.revstore import Event, KeyValue
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.controllers.conftest import eventually

pytestmark = pytest.mark.timeout(90)


class Sink:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    async def record(self, ev: ChangeEvent) -> ChangeEvent:
        self.events.append(ev)
        return ev


class Env:
    def __init__(self, api: KubeAPI, part: RegistryPart, sink: Sink, groups: dict[str, dict[str, int]]) -> None:
        self.api, self.part, self.sink, self.groups = api, part, sink, groups
        self.c = api.client

    async def put(self, key: str, value: str) -> None:
        await self.part.kv.put(key, value.encode(), who="test")

    async def cm(self, name: str = "app-config") -> dict[str, Any] | None:
        items = (await self.c.list("v1", "ConfigMap", "default")).items
        return next((i for i in items if i["metadata"]["name"] == name), None)

    async def text(self, name: str = "app-config", key: str = "app.conf") -> str | None:
        cm = await self.cm(name)
        return None if cm is None else (cm.get("data") or {}).get(key)

    async def status(self, name: str) -> dict[str, Any]:
        obj = await self.c.get("pitwall.dev/v1", "ConfigTemplate", name, "default")
        return dict(obj.get("status") or {})

    async def set_template(self, name: str, text: str) -> None:
        for _ in range(20):  # the controller writes the status meanwhile
            obj = await self.c.get("pitwall.dev/v1", "ConfigTemplate", name, "default")
            obj["spec"]["template"] = text
            try:
                await self.c.update(obj)
                return
            except Conflict:
                continue
        raise AssertionError("kept conflicting")

    async def has_text(self, want: str, name: str = "app-config") -> None:
        async def check() -> bool:
            return await self.text(name) == want
        await eventually(check)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    sink = Sink()
    groups: dict[str, dict[str, int]] = {}
    part = build_registry_part(store, sink, listen="127.0.0.1:0", kube=api.client, api=api,
                               groups_of=lambda ns, pod: groups.get(f"{ns}/{pod}", {}))
    await api.start()
    started = []
    try:
        for comp in part.components():
            await comp.start()
            started.append(comp)
        yield Env(api, part, sink, groups)
    finally:
        for comp in reversed(started):
            await comp.stop()
        await api.stop()
        await store.stop()


def template(name: str, text: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pitwall.dev/v1", "kind": "ConfigTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": text, "target": {"configMap": "app-config", "key": "app.conf"}, **spec}}


UPSTREAMS = ('max_conns = {{ keyOrDefault "app/max_conns" "10" }}\n'
             '{{- range ls "app/flags" }}\nflag {{ .Key }} = {{ .Value }}{{ end }}\n'
             '{{- range service "web|any" }}\nupstream {{ .Address }}:{{ .Port }}{{ end }}\n')


async def test_the_configmap_follows_the_kv(env: Env) -> None:
    await env.put("app/flags/beta", "on")
    await env.c.create(template("app", UPSTREAMS))
    await env.has_text("max_conns = 10\nflag beta = on\n")
    cm = await env.cm()
    assert cm is not None
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ConfigTemplate", "app", True)

    async def rendered() -> bool:
        st = await env.status("app")
        return bool(st.get("hash")) and st["conditions"][0]["status"] == "True"
    await eventually(rendered)
    st = await env.status("app")
    assert st["renderedAt"] and st["dependencies"] == {"keys": ["app/max_conns"], "prefixes": ["app/flags/"],
                                                       "services": ["web"]}

    await env.put("app/max_conns", "64")  # a key it read: re-rendered from the hub's event, no polling
    await env.has_text("max_conns = 64\nflag beta = on\n")
    await env.put("app/flags/gamma", "off")  # a new key under a prefix it listed
    await env.has_text("max_conns = 64\nflag beta = on\nflag gamma = off\n")
    await env.part.kv.delete("app/flags/beta", who="test")
    await env.has_text("max_conns = 64\nflag gamma = off\n")
    def ours() -> list[ChangeEvent]:
        return [e for e in env.sink.events if e.source == "pitwall-config-template"]

    async def four() -> bool:  # recorded just after each write
        return len(ours()) == 4
    await eventually(four)
    assert all(e.kind == "config" and e.service == "default/app" for e in ours())
    events = (await env.c.list("v1", "Event", "default")).items
    assert any(e["reason"] == "Rendered" and e["involvedObject"]["name"] == "app" for e in events)


async def test_the_catalog_is_a_dependency(env: Env) -> None:
    await env.c.create(template("svc", '{{ range service "web" }}{{ .Address }}:{{ .Port }} {{ end }}.'))
    await env.has_text(".")
    await env.c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}})
    await env.c.create({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
                        "subsets": [{"addresses": [{"ip": "127.42.0.7"}], "notReadyAddresses": [{"ip": "127.42.0.8"}],
                                     "ports": [{"port": 8080}]}]})
    await env.has_text("127.42.0.7:8080 .")  # healthy only: the not-ready address is critical


async def test_failures_keep_the_previous_text(env: Env) -> None:
    await env.put("app/name", "alpha")
    await env.c.create(template("app", 'name = {{ key "app/name" }}\n'))
    await env.has_text("name = alpha\n")
    await env.set_template("app", 'name = {{ key "app/name" }}\n{{ nosuch }}')

    async def failed() -> bool:
        c = (await env.status("app")).get("conditions") or [{}]
        return c[0].get("reason") == "RenderFailed"
    await eventually(failed)
    cond = (await env.status("app"))["conditions"][0]
    assert cond["status"] == "False" and cond["message"] == '2: function "nosuch" not defined'
    assert await env.text() == "name = alpha\n"

    await env.set_template("app", 'name = {{ key "app/other" }}\n')  # a key that does not exist: waits for it

    async def waiting() -> bool:
        c = (await env.status("app")).get("conditions") or [{}]
        return c[0].get("reason") == "WaitingForKey"
    await eventually(waiting)
    assert await env.text() == "name = alpha\n"
    await env.put("app/other", "beta")  # the missing key was recorded as a dependency
    await env.has_text("name = beta\n")


async def test_restart_rolls_the_named_deployments(env: Env) -> None:
    await env.put("app/mode", "blue")
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "app", "image": "x"}],
                                        "volumes": [{"name": "c", "configMap": {"name": "app-config"}}]}}}}
    await env.c.create(d)
    await env.c.create(template("app", 'mode={{ key "app/mode" }}', action="restart", deployments=["web", "ghost"]))
    await env.has_text("mode=blue")
    pod_ann = (await env.c.get("apps/v1", "Deployment", "web", "default"))["spec"]["template"]["metadata"]
    assert LAST_RELOADED_FROM not in (pod_ann.get("annotations") or {})  # the first render rolls nothing

    await env.put("app/mode", "green")
    await env.has_text("mode=green")

    async def rolled() -> bool:
        t = (await env.c.get("apps/v1", "Deployment", "web", "default"))["spec"]["template"]["metadata"]
        return LAST_RELOADED_FROM in (t.get("annotations") or {})
    await eventually(rolled)
    t = (await env.c.get("apps/v1", "Deployment", "web", "default"))["spec"]["template"]["metadata"]
    src = orjson.loads(t["annotations"][LAST_RELOADED_FROM])
    assert src["type"] == "CONFIGMAP" and src["name"] == "app-config" and src["containerRefs"] == []

    async def warned() -> bool:
        evs = (await env.c.list("v1", "Event", "default")).items
        return any(e["reason"] == "RestartFailed" and "ghost" in e["message"] for e in evs)
    await eventually(warned)

    async def counted() -> bool:  # the status is written after the actions ran
        return (await env.status("app")).get("actions") == 1
    await eventually(counted)


HUP_APP = ("import signal, sys, time\n"
           "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")


async def test_signal_reaches_the_selected_containers(env: Env) -> None:
    proc = subprocess.Popen([sys.executable, "-u", "-c", HUP_APP], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        env.groups["default/web-1"] = {"app": proc.pid}
        for name, app in (("web-1", "web"), ("other-1", "other")):
            await env.c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": "default", "labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "x"}]}})
        await env.put("app/level", "info")
        await env.c.create(template("app", 'level={{ key "app/level" }}', action="signal",
                                    podSelector={"matchLabels": {"app": "web"}}))
        await env.has_text("level=info")
        await env.put("app/level", "debug")
        await env.has_text("level=debug")
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "HUP"

        async def said() -> bool:
            evs = (await env.c.list("v1", "Event", "default")).items
            return any(e["reason"] == "Signalled" and "SIGHUP sent to web-1/app" in e["message"] for e in evs)
        await eventually(said)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_events_wake_only_the_templates_that_read_them() -> None:
    ctl = ConfigTemplateController.__new__(ConfigTemplateController)
    ctl.deps, ctl._by_key = {}, {}
    woken: list[str] = []
    ctl.enqueue = woken.append
    ctl._track("ns/a", Deps(keys={"app/x"}))
    ctl._track("ns/b", Deps(prefixes={"app/flags/"}))
    ctl._track("ns/c", Deps(services={"web-shop"}))
    ctl._track("ns/d", Deps(all_services=True))

    def ev(key: str) -> Event:
        return Event("PUT", KeyValue(key, b"", 1, 2, 1, 0))

    for key, want in [("/pitwall/consul/kv/app/x", ["ns/a"]), ("/pitwall/consul/kv/app/flags/z", ["ns/b"]),
                      ("/pitwall/consul/kv/app/xy", []), ("/registry/services/endpoints/shop/web", ["ns/c", "ns/d"]),
                      ("/registry/services/specs/default/db", ["ns/d"])]:
        woken.clear()
        ctl.on_events([ev(key)])
        assert sorted(woken) == want, key
    ctl._track("ns/a", None)
    woken.clear()
    ctl.on_events([ev("/pitwall/consul/kv/app/x")])
    assert woken == [] and "app/x" not in ctl._by_key


async def test_signal_without_a_selector_signals_nobody(env: Env) -> None:
    env.groups["default/web-1"] = {"app": 2 ** 22 + 12345}  # never signalled: the selector is refused first
    await env.put("app/level", "info")
    await env.c.create(template("app", 'level={{ key "app/level" }}', action="signal"))
    await env.has_text("level=info")
    await env.put("app/level", "debug")
    await env.has_text("level=debug")

    async def refused() -> bool:
        evs = (await env.c.list("v1", "Event", "default")).items
        return any(e["reason"] == "SignalFailed" and "non-empty spec.podSelector" in e["message"] for e in evs)
    await eventually(refused)
    assert (await env.status("app")).get("actions", 0) == 0
