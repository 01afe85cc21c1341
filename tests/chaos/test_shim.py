"""The chaos shim on its own (a process started with it in LD_PRELOAD and a control file), and the control
file lines TimeChaos and IOChaos specs become."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pitwall.chaos.model import ChaosSpecError
from pitwall.chaos.shimfaults import glob_escape, io_rule, time_line
from pitwall.node.chaosshim import is_static, write_control
from pitwall.node.podconfig import chaos_shim_library, preload_env

pytestmark = pytest.mark.timeout(60)

# A child reading commands on stdin and answering one JSON line each: the shim is loaded once, faults change.
CHILD = r"""
import ctypes, ctypes.util, json, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.time.restype = ctypes.c_long
class TV(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("us", ctypes.c_long)]
def run(cmd):
    op, arg = cmd.split(" ", 1) if " " in cmd else (cmd, "")
    if op == "clocks":
        tv = TV(); libc.gettimeofday(ctypes.byref(tv), None)
        return {"time": time.time(), "mono": time.monotonic(), "gtod": tv.s + tv.us / 1e6, "libc_time": libc.time(None)}
    t0 = time.perf_counter()
    try:
        if op == "read":
            with open(arg) as f: f.read()
        elif op == "write":
            with open(arg, "a") as f: f.write("x")
        elif op == "mkdir":
            os.mkdir(arg)
        elif op == "unlink":
            os.unlink(arg)
        elif op == "fsync":
            fd = os.open(arg, os.O_RDONLY); os.fsync(fd); os.close(fd)
        return {"ok": True, "s": time.perf_counter() - t0}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "s": time.perf_counter() - t0}
for line in sys.stdin:
    sys.stdout.write(json.dumps(run(line.strip())) + "\n"); sys.stdout.flush()
"""


class Child:
    def __init__(self, control: Path) -> None:
        env = {**os.environ, **preload_env("", str(control))}
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", CHILD], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def child(tmp_path: Path) -> Any:
    if not chaos_shim_library():
        pytest.skip("pitwall.node._chaosshim was not built (no C compiler)")
    c = Child(tmp_path / "control")
    try:
        yield c
    finally:
        c.close()


def put(control: Path, *lines: str) -> None:
    write_control(control, {"k": list(lines)})
    time.sleep(0.25)  # the shim looks at its control file at most every 100 ms


def test_time_offset_comes_and_goes_in_a_running_process(child: Child, tmp_path: Path) -> None:
    control = tmp_path / "control"
    before = child.ask("clocks")
    assert abs(before["time"] - time.time()) < 5
    put(control, time_line({"timeOffset": "-10m"}))
    skewed = child.ask("clocks")
    for clock in ("time", "gtod", "libc_time"):
        assert -610 < skewed[clock] - time.time() < -590, (clock, skewed)
    assert skewed["mono"] >= before["mono"]  # only CLOCK_REALTIME by default
    put(control, time_line({"timeOffset": "1h2m3s", "clockIds": ["CLOCK_REALTIME", "CLOCK_MONOTONIC"]}))
    both = child.ask("clocks")
    assert 3700 < both["time"] - time.time() < 3730 and both["mono"] - time.monotonic() > 3700
    control.unlink()
    time.sleep(0.25)
    after = child.ask("clocks")
    assert abs(after["time"] - time.time()) < 5 and abs(after["mono"] - time.monotonic()) < 5


def test_a_corrupt_control_file_is_no_fault(child: Child, tmp_path: Path) -> None:
    control = tmp_path / "control"
    put(control, "time garbage", "io x 1 2", "io f 0 5 100 0", "\x00\x01 nonsense " * 500)
    assert abs(child.ask("clocks")["time"] - time.time()) < 5
    target = tmp_path / "f"
    target.write_text("data")
    assert child.ask(f"read {target}")["ok"]


def test_io_fault_by_glob_method_and_percent(child: Child, tmp_path: Path) -> None:
    control, vol = tmp_path / "control", tmp_path / "vol[1]"
    (vol / "sub").mkdir(parents=True)
    top, deep, other = vol / "a.log", vol / "sub" / "b.log", tmp_path / "other.log"
    for f in (top, deep, other):
        f.write_text("data")
    base = glob_escape(str(vol))
    put(control, f"io f 0 {errno.EIO} 100 0 {base}/*.log")
    assert child.ask(f"read {top}")["errno"] == errno.EIO
    assert child.ask(f"read {deep}")["ok"], "'*' stays within one directory"
    assert child.ask(f"read {other}")["ok"]
    put(control, f"io f 0 {errno.EIO} 100 0 {base}/**")
    assert child.ask(f"read {deep}")["errno"] == errno.EIO
    assert child.ask(f"mkdir {vol}/new")["errno"] == errno.EIO
    assert child.ask(f"read {tmp_path}/vol[1]/../vol[1]/a.log")["errno"] == errno.EIO, "paths are resolved"
    write_only = 1 << 2
    put(control, f"io f 0 {errno.ENOSPC} 100 {write_only} {base}/**")
    assert child.ask(f"read {top}")["ok"]
    assert child.ask(f"write {top}") == {"ok": False, "errno": errno.ENOSPC, "s": pytest.approx(0, abs=1)}
    put(control, f"io f 0 {errno.EIO} 0 0 {base}/**")
    assert all(child.ask(f"read {top}")["ok"] for _ in range(20)), "percent 0 never injects"
    put(control, f"io f 0 {errno.EIO} 50 1 {base}/**")  # open: one call per read command
    failed = sum(not child.ask(f"read {top}")["ok"] for _ in range(200))
    assert 60 < failed < 140, failed
    control.unlink()
    time.sleep(0.25)
    assert child.ask(f"read {top}")["ok"] and child.ask(f"unlink {deep}")["ok"]


def test_io_latency_on_reads_only(child: Child, tmp_path: Path) -> None:
    control = tmp_path / "control"
    target = tmp_path / "f"
    target.write_text("data")
    put(control, f"io l 1000000000 0 100 {1 << 1} {glob_escape(str(tmp_path))}/**")
    slow = child.ask(f"read {target}")
    assert slow["ok"] and slow["s"] >= 1.0  # Python's read() of a small file calls read(2) at least once
    # not a read, then no fault at all: well under the delay (bounds loose enough for a loaded machine)
    assert child.ask(f"fsync {target}")["s"] < 1.0
    put(control)
    assert child.ask(f"read {target}")["s"] < 1.0


def test_spec_lines() -> None:
    assert time_line({"timeOffset": "-10m"}) == "time -600000000000 1"
    assert time_line({"timeOffset": "100ms", "clockIds": ["CLOCK_MONOTONIC", "CLOCK_BOOTTIME"]}) == \
        f"time 100000000 {(1 << 1) | (1 << 7)}"
    for bad, field in (({}, "spec.timeOffset"), ({"timeOffset": "10x"}, "spec.timeOffset"),
                       ({"timeOffset": "1s", "clockIds": ["CLOCK_NOPE"]}, "spec.clockIds")):
        with pytest.raises(ChaosSpecError, match=field):
            time_line(bad)
    assert io_rule({"action": "latency", "delay": "100ms", "volumePath": "/data", "methods": ["read", "write"]}) == \
        ("l", 100_000_000, 0, 100, 0b110)
    assert io_rule({"action": "fault", "errno": 5, "percent": 30, "volumePath": "/d", "path": "/d/**/*"}) == \
        ("f", 0, 5, 30, 0)
    io_cases: list[tuple[dict[str, Any], str]] = [
        ({"action": "fault", "volumePath": "/d"}, "spec.errno"),
        ({"action": "latency", "volumePath": "/d"}, "spec.delay"),
        ({"action": "latency", "delay": "1s"}, "spec.volumePath"),
        ({"action": "fault", "errno": 5, "volumePath": "/d", "percent": 101}, "spec.percent"),
        ({"action": "fault", "errno": 5, "volumePath": "/d", "methods": ["eat"]}, "spec.methods"),
        ({"action": "fault", "errno": 5, "volumePath": "/d", "path": "/etc/*"}, "spec.path"),
        ({"action": "mistake", "volumePath": "/d"}, "spec.action")]
    for bad, field in io_cases:
        with pytest.raises(ChaosSpecError, match=field):
            io_rule(bad)
    assert glob_escape("/tmp/t[1]/a*b?") == r"/tmp/t\[1\]/a\*b\?"


def test_static_executables_are_told_apart(tmp_path: Path) -> None:
    assert not is_static(sys.executable)
    assert not is_static(str(tmp_path))  # not a file
    # the smallest static ELF: a header and one PT_LOAD program header
    head = bytearray(64)
    head[:5] = b"\x7fELF\x02"
    head[32:40] = (64).to_bytes(8, "little")
    head[54:56], head[56:58] = (56).to_bytes(2, "little"), (1).to_bytes(2, "little")
    ph = bytearray(56)
    ph[:4] = (1).to_bytes(4, "little")
    (tmp_path / "static").write_bytes(bytes(head + ph))
    assert is_static(str(tmp_path / "static"))
    ph[:4] = (3).to_bytes(4, "little")  # PT_INTERP: dynamically linked
    (tmp_path / "dynamic").write_bytes(bytes(head + ph))
    assert not is_static(str(tmp_path / "dynamic"))
