"""The Containerfile: it cannot be built here (no container registry to pull python:3.11-slim from), so
its instructions are checked against the repository, and its first stage's wheel build is run as is."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)

CONTAINERFILE = REPO / "Containerfile"


def _instructions() -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, list[str]]] = []
    pending = ""
    for line in CONTAINERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            if word.upper() == "RUN":
                args = [rest]
            elif rest.startswith("["):  # exec form
                args = json.loads(rest)
            else:
                args = shlex.split(rest)
            out.append((word.upper(), args))
            pending = ""
    assert not pending, "a continued line runs off the end of the file"
    return out


def _copies() -> list[list[str]]:
    return [args for word, args in _instructions() if word == "COPY"]


def test_stages_and_base_image() -> None:
    ins = _instructions()
    known = {"ARG", "FROM", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"}
    assert {w for w, _ in ins} <= known
    args = {a[0].split("=", 1)[0]: a[0].split("=", 1)[1] for w, a in ins if w == "ARG" and "=" in a[0]}
    assert args["PYTHON_IMAGE"].endswith("/python:3.11-slim")
    froms = [a for w, a in ins if w == "FROM"]
    assert [f[0] for f in froms] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    stages = {f[2] for f in froms if len(f) == 3 and f[1].upper() == "AS"}
    for c in _copies():
        for flag in (a for a in c if a.startswith("--from=")):
            assert flag.removeprefix("--from=") in stages
    assert ins[0][0] == "ARG" and ins[-1][0] == "CMD"


def test_copy_sources_exist() -> None:
    local = [c for c in _copies() if not any(a.startswith("--from=") for a in c)]
    assert local
    for c in local:
        *sources, _dest = [a for a in c if not a.startswith("--")]
        for s in sources:
            assert (REPO / s).exists(), f"COPY {s}: not in the repository"


def test_what_it_installs_and_runs() -> None:
    ins = _instructions()
    runs = " ".join(a[0] for w, a in ins if w == "RUN")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "[postgres]" in runs and "postgres" in extras
    [entry] = [a for w, a in ins if w == "ENTRYPOINT"]
    assert entry == ["pitwall"]
    [cmd] = [a for w, a in ins if w == "CMD"]
    assert cmd[0] == "server" and "--data-dir" in cmd
    [user] = [a for w, a in ins if w == "USER"]
    sts = next(d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/base/statefulset.yaml").read_text()) if d)
    assert user == ["10001:10001"] and sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    exposed = {int(p) for w, a in ins if w == "EXPOSE" for p in a}
    ports = {p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert exposed == ports


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_stage_builds_from_what_it_copies(tmp_path: Path) -> None:
    """Stage 1 with only the COPYed paths: `pip wheel` makes a complete pitwall wheel (native decoders too)."""
    ctx = tmp_path / "build"
    ctx.mkdir()
    for c in _copies():
        if any(a.startswith("--from=") for a in c):
            continue
        *sources, _ = [a for a in c if not a.startswith("--")]
        for s in sources:
            src = REPO / s
            if src.is_dir():
                shutil.copytree(src, ctx / s, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
            else:
                shutil.copy(src, ctx / s)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(tmp_path / "dist"), str(ctx)], capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    [whl] = (tmp_path / "dist").glob("pitwall-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "pitwall/storage/revstore/postgres.py" in names
    assert any(n.startswith("pitwall/ui/templates/") for n in names)
    if shutil.which("cc") or shutil.which("gcc"):
        assert any(n.startswith("pitwall/_rwdecode.") and n.endswith(".so") for n in names)
