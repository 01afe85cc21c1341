"""Fixtures for the logs pillar: Loki's official push.proto compiled with protoc, push helpers."""

from __future__ import annotations

import importlib
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import SHARED

PUSH_PROTO = SHARED / "conformance" / "loki" / "pkg" / "push" / "push.proto"


def compile_official_push_proto(out: Path) -> ModuleType:
    """Loki's ``logproto`` as protoc generates it, gogoproto options stripped (they only steer Go codegen)."""
    grpc_tools = pytest.importorskip("grpc_tools")
    from grpc_tools import protoc

    text = PUSH_PROTO.read_text()
    text = text.replace('import "gogoproto/gogo.proto";', "")
    text = re.sub(r"\[\s*\(gogoproto\.[^\]]*\]", "", text, flags=re.S)
    src = out / "logproto_official"
    src.mkdir(parents=True, exist_ok=True)
    (src / "push.proto").write_text(text)
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={src}", str(src / "push.proto")])
    assert rc == 0, "protoc failed on Loki's push.proto"
    sys.path.insert(0, str(src))
    try:
        sys.modules.pop("push_pb2", None)
        return importlib.import_module("push_pb2")
    finally:
        sys.path.remove(str(src))


@pytest.fixture(scope="session")
def official_logproto(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_official_push_proto(tmp_path_factory.mktemp("proto"))


def now_ns() -> int:
    return time.time_ns()


def push_body(streams: dict[tuple[tuple[str, str], ...], list[Any]]) -> dict[str, Any]:
    """A Loki JSON push body from {labels: [[ts, line(, md)], ...]}."""
    return {"streams": [{"stream": dict(lbl), "values": [[str(v[0]), *v[1:]] for v in vals]}
                        for lbl, vals in streams.items()]}
