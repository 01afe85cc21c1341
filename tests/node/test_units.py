"""Pure pieces of the node: back-off sequence, ConfigMap volume writes, the log buffer, the wiring part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pitwall.node.container import BackOff
from pitwall.node.logs import LogBuffer
from pitwall.node.spec import ConfigError
from pitwall.node.volumes import mount_env, project, write_atomic


@pytest.mark.timeout(10)
def test_back_off_sequence_as_the_kubelet() -> None:
    b = BackOff()
    assert [b.next_delay(1) for _ in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert b.next_delay(600) == 0  # a run of ten minutes starts over
    assert b.next_delay(1) == 10


@pytest.mark.timeout(10)
def test_configmap_volume_items_modes_and_atomic_update(tmp_path: Path) -> None:
    vol = tmp_path / "v"
    src = {"a": b"1", "b": b"2"}
    assert write_atomic(vol, project(src, {"defaultMode": 0o600}, kind="configmap", name="cm"))
    assert (vol / "a").read_bytes() == b"1" and os.readlink(vol / "a") == "..data/a"
    assert ((vol / "a").stat().st_mode & 0o777) == 0o600
    first = os.readlink(vol / "..data")
    assert not write_atomic(vol, project(src, {"defaultMode": 0o600}, kind="configmap", name="cm"))  # unchanged
    assert write_atomic(vol, project({"a": b"9"}, {}, kind="configmap", name="cm"))
    assert (vol / "a").read_bytes() == b"9" and not (vol / "b").exists()
    assert os.readlink(vol / "..data") != first and not (vol / first).exists()
    items = project(src, {"items": [{"key": "b", "path": "sub/dir/b.txt", "mode": 0o400}]}, kind="configmap",
                    name="cm")
    write_atomic(vol, items)
    assert (vol / "sub" / "dir" / "b.txt").read_bytes() == b"2" and not (vol / "a").exists()
    with pytest.raises(ConfigError, match="couldn't find key zz"):
        project(src, {"items": [{"key": "zz", "path": "x"}]}, kind="configmap", name="cm")
    assert mount_env("my-config.v1") == "PITWALL_MOUNT_MY_CONFIG_V1"


@pytest.mark.timeout(10)
async def test_log_buffer_bounds_and_sequence() -> None:
    b = LogBuffer(max_lines=3)
    for i in range(5):
        b.append(i, f"l{i}")
    assert [e[2] for e in b.after(0)] == ["l2", "l3", "l4"]
    assert [e[2] for e in b.after(4)] == ["l4"]
    b.close()
    await b.wait(0.01)
    assert b.closed
