"""Start-up footprint (issue 13): what importing the config and the CLI pulls in.

Import-set assertions, not timings: the CLI and ``pitwall.config`` must load
without the server's heavy native libraries, and the lazily exported public
names must still be the objects they were. Figures are in ``bench/startup.py``.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

HEAVY = ("duckdb", "numpy", "fastapi", "grpc", "pyarrow", "uvicorn", "jwt")

# Run in a fresh interpreter: print which heavy modules and which pitwall modules are loaded afterwards.
_PROBE = """
import json, sys
{body}
print(json.dumps({{"heavy": sorted(m for m in {heavy!r} if m in sys.modules),
                  "pitwall": sorted(m for m in sys.modules if m.startswith("pitwall."))}}))
"""


def _probe(body: str) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(body=body, heavy=HEAVY)], capture_output=True,
                         text=True, check=True, timeout=100)
    got: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def _run_cli(*argv: str) -> str:
    """The ``pitwall`` entry point with ``argv``, as the console script runs it (typer exits with SystemExit)."""
    return ("import contextlib, io\nfrom pitwall.cli.main import main\n"
            f"sys.argv = ['pitwall', *{argv!r}]\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    main()\n")


def test_importtime_of_the_cli_lists_no_heavy_module() -> None:
    """``python -X importtime`` names every module imported: none of the server's native stack is among them."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pitwall.cli.main"], capture_output=True,
                         text=True, check=True, timeout=100)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pitwall.cli.main" in imported  # the probe saw the import itself
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize("argv", [("--version",), ("query", "--help"), ("--help",), ("slo", "--help"),
                                  ("backup", "--help"), ("chaos", "run", "--help"),
                                  ("import", "metrics", "--help")])
def test_the_cli_runs_without_the_heavy_stack(argv: tuple[str, ...]) -> None:
    got = _probe(_run_cli(*argv))
    assert got["heavy"] == [], argv
    assert "pitwall.config" not in got["pitwall"] and "pitwall.server" not in got["pitwall"]


def test_config_imports_only_settings_modules_of_pillars() -> None:
    """``pitwall.config`` loads each pillar's package root (lazy) and settings, never an engine or a store."""
    got = _probe("import pitwall.config\npitwall.config.Settings()")
    assert got["heavy"] == []
    pillar_modules = {m for m in got["pitwall"] if m.split(".")[1] not in {"config", "core"}}
    # beside package roots, settings and the models they validate with: the incident model's alert grouping
    light = {"pitwall.alerting.notify", "pitwall.alerting.rules", "pitwall.incidents.grouping"}
    engines = sorted(m for m in pillar_modules - light
                     if len(m.split(".")) > 2 and not m.endswith((".settings", ".model")))
    assert engines == []
    assert {"pitwall.pipelines.settings", "pitwall.releases.settings", "pitwall.chaos.settings"} <= pillar_modules
    assert "pitwall.pipelines.runner" not in got["pitwall"]


def test_a_used_part_still_imports_its_engine() -> None:
    """Laziness defers, it does not drop: naming a public export loads its module (the probe is not vacuous)."""
    got = _probe("import pitwall.releases\npitwall.releases.judge\nimport pitwall.pipelines\n"
                 "pitwall.pipelines.PipelineRunner")
    assert "numpy" in got["heavy"]
    assert {"pitwall.releases.judge", "pitwall.pipelines.runner"} <= set(got["pitwall"])


def test_the_server_defers_pyarrow_compute_until_a_call_computes() -> None:
    """Importing the server maps no ``pyarrow._compute``; the first call that computes loads it, and from then on
    every module's ``pc`` holds ``pyarrow.compute``'s own functions in its namespace (read without a hook)."""
    out = subprocess.run([sys.executable, "-c", (
        "import sys, types\nimport pitwall.server\nprint('pyarrow._compute' in sys.modules)\n"
        "import pyarrow as pa\nfrom pitwall.storage import logs_store, traces_store\n"
        "from pitwall.core import regex\nimport pyarrow.compute\n"
        "print(traces_store.pc.sum(pa.array([1, 2])).as_py(), 'pyarrow._compute' in sys.modules)\n"
        "print(type(pyarrow.compute) is types.ModuleType, logs_store.pc.sum is regex.pc.sum is pyarrow.compute.sum,"
        " 'sum' in vars(traces_store.pc))")],
        capture_output=True, text=True, check=True, timeout=100)
    assert out.stdout.split() == ["False", "3", "True", "True", "True", "True"]


def test_lazy_module_of_an_imported_or_missing_module() -> None:
    import json as plain

    from pitwall.core.exports import lazy_module

    assert lazy_module("json") is plain
    with pytest.raises(ModuleNotFoundError):
        lazy_module("pitwall_no_such_module")


@pytest.mark.parametrize("pillar", ["backup", "chaos", "incidents", "pipelines", "releases"])
def test_lazy_exports_are_the_defining_modules_objects(pillar: str) -> None:
    package = importlib.import_module(f"pitwall.{pillar}")
    for name, target in package._EXPORTS.items():
        module, _, attr = target.partition(":")
        assert getattr(package, name) is getattr(importlib.import_module(module), attr or name), name
        assert name in dir(package)


def test_releases_judge_stays_the_function_after_its_module_loads() -> None:
    """``pitwall.releases.judge`` is both a submodule and the exported function, as before the exports were lazy:
    importing the submodule (in either order) leaves the package attribute the function."""
    for body in ("import pitwall.releases.judge\nfrom pitwall.releases import judge",
                 "from pitwall.releases import judge\nimport pitwall.releases.checks\nimport pitwall.releases as r\n"
                 "judge = r.judge"):
        code = body + "\nprint(type(judge).__name__, judge.__module__)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=100)
        assert out.stdout.split() == ["function", "pitwall.releases.judge"], body


def test_core_settings_are_reexported_where_they_were() -> None:
    from pitwall.core import audit, oidc, otlp_grpc, settings

    assert audit.AuditSettings is settings.AuditSettings
    assert oidc.OIDCSettings is settings.OIDCSettings
    assert otlp_grpc.OtlpGrpcSettings is settings.OtlpGrpcSettings


def test_migration_heads_are_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pitwall.storage import state

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(state.__file__).parent / "migrations"))
    assert state.migration_heads() == frozenset(ScriptDirectory.from_config(cfg).get_heads())


def test_a_state_store_at_head_opens_without_alembic(tmp_path: Path) -> None:
    """An empty database is created and stamped without Alembic, later opens see it at head and leave Alembic
    unimported; a database made before migrations (tables, no version row) is migrated by Alembic."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    body = f"from pitwall.storage.state import StateStore\nStateStore({url!r}).close()\n" \
           "print('alembic' in sys.modules)"

    def opened() -> bool:
        out = subprocess.run([sys.executable, "-c", "import sys\n" + body], capture_output=True, text=True,
                             check=True, timeout=100)
        return out.stdout.split()[-1] == "True"

    assert opened() is False  # empty: the declared tables, stamped at head
    assert opened() is False  # at head
    with sqlite3.connect(tmp_path / "state.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"silences", "nflog", "alembic_version"} <= tables
        db.execute("DROP TABLE alembic_version")
    assert opened() is True  # no version: Alembic runs and stamps it
    assert opened() is False


@pytest.mark.slow
@pytest.mark.parametrize("grpc_on", [False, True])
def test_grpc_loads_only_when_otlp_grpc_listens(tmp_path: Path, grpc_on: bool) -> None:
    """The composition root imports the OTLP/gRPC receiver (and gRPC) and the gateway only for parts it builds."""
    body = ("from pathlib import Path\nfrom pitwall.config import load_settings\nimport pitwall.server\n"
            f"s = load_settings(None, data_dir=Path({str(tmp_path)!r}), listen='127.0.0.1:0')\n"
            f"s.otlp_grpc.enabled = {grpc_on}\ns.otlp_grpc.listen = '127.0.0.1:0'\n"
            "app = pitwall.server.create_app(s)\n"
            "assert (app.state.components.otlp_grpc is not None) is s.otlp_grpc.enabled\n")
    got = _probe(body)
    assert ("grpc" in got["heavy"]) is grpc_on
    assert "pitwall.traffic.gateway.wiring" not in got["pitwall"]  # gateway.listen is unset


@pytest.mark.parametrize(("backend", "cls", "client"), [("sqlite", "SqliteRevStore", None),
                                                        ("etcd", "EtcdRevStore", None),
                                                        ("postgres", "PostgresRevStore", "psycopg")])
def test_the_state_backend_loads_only_its_own_client(tmp_path: Path, backend: str, cls: str,
                                                     client: str | None) -> None:
    body = ("from pathlib import Path\nfrom types import SimpleNamespace\n"
            "from pitwall.kube.wiring import build_revstore\n"
            "assert 'psycopg' not in sys.modules\n"
            f"state = SimpleNamespace(backend={backend!r}, endpoints=['http://127.0.0.1:1'], "
            "dsn='postgresql://u@127.0.0.1:1/db', compact_interval=0)\n"
            f"store = build_revstore(state, Path({str(tmp_path)!r}))\n"
            "print(type(store).__name__, 'psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + body], capture_output=True, text=True, check=True,
                         timeout=100)
    assert out.stdout.split() == [cls, str(client == "psycopg")]


# The shipped Istio and Gateway API CRDs installed as the server installs them; CEL is loaded only by an object
# of a kind with rules, and a shipped CRD changed to hold a rule that does not compile is still refused.
_CEL_PROBE = """
import asyncio, copy, json, sys, tempfile
from pathlib import Path
from pitwall.kube.errors import Invalid
from pitwall.traffic.gateway.crds import gateway_api_crds
from pitwall.traffic.istio_crds import istio_crds
from tests.kube_fixture import started_kube

seen = {}

async def main():
    async with started_kube(Path(tempfile.mkdtemp()), istio_crds(), gateway_api_crds()) as api:
        seen["installed"] = "celpy" in sys.modules
        await api.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "c", "namespace": "default"}})
        seen["configmap"] = "celpy" in sys.modules
        vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
              "metadata": {"name": "r", "namespace": "default"},
              "spec": {"hosts": ["r"], "http": [{"timeout": "0.5ms", "route": [{"destination": {"host": "r"}}]}]}}
        try:
            await api.client.create(vs)
        except Invalid as e:
            seen["vs"] = str(e)
        seen["after_vs"] = "celpy" in sys.modules
        crd = await api.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                   "virtualservices.networking.istio.io")
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [{"rule": "self.("}]
        try:
            await api.client.update(crd)
        except Invalid as e:
            seen["crd"] = str(e)

asyncio.run(main())
print(json.dumps(seen))
"""


def test_cel_loads_only_for_an_object_of_a_kind_with_rules() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CEL_PROBE], capture_output=True, text=True, check=True,
                         timeout=100, cwd=root)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["installed"] is False and seen["configmap"] is False
    assert "must be a valid duration greater than 1ms" in seen["vs"]
    assert seen["after_vs"] is True
    assert "compilation failed" in seen["crd"]


async def test_the_registry_serves_the_shipped_crd_objects_not_a_parsed_copy(tmp_path: Path) -> None:
    """Installed shipped CRDs are served from the very objects shipped (one copy of their schemas); a CRD whose
    stored spec is not the shipped one (changed since by a user) is served from the store, as before."""
    from pitwall.traffic.istio_crds import istio_crds
    from tests.kube_fixture import started_kube

    shipped = istio_crds()
    by_name = {c["metadata"]["name"]: c for c in shipped}
    async with started_kube(tmp_path, shipped) as api:
        served = [rt for rt in api.registry if rt.crd_name in by_name]
        assert {rt.crd_name for rt in served} == set(by_name)
        for rt in served:
            assert any(rt.crd is v for v in by_name[rt.crd_name]["spec"]["versions"]), rt.crd_name
        name = "telemetries.telemetry.istio.io"
        crd = await api.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        for v in crd["spec"]["versions"]:
            v["schema"]["openAPIV3Schema"]["description"] = "changed"
        await api.client.update(crd)
    async with started_kube(tmp_path, []) as api:  # restarted without shipping it: read from the store
        rts = [rt for rt in api.registry if rt.crd_name == name]
        assert rts and all(rt.crd is not None and rt.crd["schema"]["openAPIV3Schema"]["description"] == "changed"
                           for rt in rts)
