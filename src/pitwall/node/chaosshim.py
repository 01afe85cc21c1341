"""The node's side of the chaos shim (``_native/chaosshim.c``): its control files and whether a container's
process runs it.

A container started with ``kube.chaos_preload`` has ``$PITWALL_CHAOS_FILE``
naming its control file; the shim in each of its processes reads the faults
there (one per line, see chaosshim.c) at most every 100 ms, so a fault put
in or taken out reaches running processes without a restart.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pitwall.node.podconfig import chaos_shim_library

__all__ = ["is_static", "shim_missing", "write_control"]


def write_control(path: Path, faults: dict[str, list[str]]) -> None:
    """Replace the control file at ``path`` with ``faults``' lines (by rename: the shim never reads half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for key in sorted(faults) for line in faults[key]))
    tmp.replace(path)


def shim_missing(pid: int) -> str:
    """Why process ``pid`` does not run the chaos shim, or "" when it does (the library is in its maps)."""
    lib = chaos_shim_library()
    try:
        maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return f"process {pid} is gone"
    if lib and (lib in maps or os.path.realpath(lib) in maps):
        return ""
    exe = ""
    with contextlib.suppress(OSError):
        exe = os.readlink(f"/proc/{pid}/exe")
    if exe and is_static(exe):
        return f"{exe} is a static executable: LD_PRELOAD, hence the chaos shim, does not reach it"
    return f"{exe or f'process {pid}'} did not load the chaos shim (does the container's env set LD_PRELOAD?)"


def is_static(exe: str) -> bool:
    """A 64-bit ELF executable without an interpreter (no PT_INTERP program header) is statically linked."""
    try:
        with open(exe, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize, phnum = int.from_bytes(head[54:56], "little"), int.from_bytes(head[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return phentsize > 0 and all(int.from_bytes(table[i:i + 4], "little") != 3
                                 for i in range(0, len(table), phentsize))
