"""Pod volumes as directories under ``<data_dir>/pods/<uid>/volumes/<name>``, mounts as symlinks.

Processes share the host's file system (no mount namespace), so a
``volumeMount`` cannot appear at its ``mountPath``. Instead each pod has a
root directory, ``<data_dir>/pods/<uid>/root``, and every mount is a
symlink at ``<root>/<mountPath>`` to the volume (or its ``subPath``). A
container's default working directory is that root, and it gets
``PITWALL_POD_ROOT`` and one ``PITWALL_MOUNT_<VOLUME>`` variable per
mounted volume: an app reads ``$PITWALL_POD_ROOT/etc/config/app.yaml`` where
a cluster has ``/etc/config/app.yaml``.

ConfigMap and Secret volumes are written as the kubelet writes them: the
files live in a timestamped ``..<ts>`` directory, ``..data`` is a symlink to
it, each key is a symlink through ``..data``; an update writes a new
directory and swaps ``..data`` atomically (rename), so a reader sees the old
or the new set of files, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pitwall.node.spec import ConfigError

__all__ = ["Projection", "mount_env", "project", "write_atomic"]

Obj = dict[str, Any]
_MAX_FILE_BYTES = 1 << 20


class Projection:
    """The files one ConfigMap/Secret volume should hold: relative path -> (bytes, mode)."""

    def __init__(self, files: dict[str, tuple[bytes, int]]) -> None:
        self.files = files

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            data, mode = self.files[path]
            h.update(f"{path}\0{mode}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()


def project(source: dict[str, bytes], volume: Obj, *, kind: str, name: str) -> Projection:
    """Which files a ``configMap``/``secret`` volume source makes of the object's keys (``items``, modes)."""
    default_mode = int(volume.get("defaultMode", 0o644))
    items = volume.get("items")
    files: dict[str, tuple[bytes, int]] = {}
    if items:
        for it in items:
            key, path = str(it.get("key", "")), str(it.get("path", ""))
            if key not in source:
                if volume.get("optional"):
                    continue
                raise ConfigError(f'couldn\'t find key {key} in {kind} {name}')
            if not path or path.startswith("/") or ".." in Path(path).parts:
                raise ConfigError(f"invalid path {path!r} for key {key}")
            files[path] = (source[key], int(it.get("mode", default_mode)))
    else:
        for key, data in source.items():
            files[key] = (data, default_mode)
    return Projection(files)


def write_atomic(vol_dir: Path, proj: Projection) -> bool:
    """Make ``vol_dir`` hold ``proj`` through a ``..data`` swap; False when it already did."""
    vol_dir.mkdir(parents=True, exist_ok=True)
    stamp = vol_dir / "..digest"
    digest = proj.digest()
    with contextlib.suppress(OSError):
        if stamp.read_text() == digest:
            return False
    ts = vol_dir / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9}"
    ts.mkdir()
    for rel, (data, mode) in proj.files.items():
        f = ts / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data[:_MAX_FILE_BYTES * 8])
        f.chmod(mode & 0o7777)
    data_link = vol_dir / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    tmp = vol_dir / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(ts.name)
    os.replace(tmp, data_link)
    tops = {Path(rel).parts[0] for rel in proj.files}
    for top in tops:
        link = vol_dir / top
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link, ignore_errors=True)
            link.symlink_to(Path("..data") / top)
    for entry in vol_dir.iterdir():  # keys that went away
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old and old != ts.name:
        shutil.rmtree(vol_dir / old, ignore_errors=True)
    stamp.write_text(digest)
    return True


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def mount_env(volume_name: str) -> str:
    """The variable naming a mounted volume's path: ``PITWALL_MOUNT_<NAME>`` (upper case, ``_`` for others)."""
    return "PITWALL_MOUNT_" + _NON_ALNUM.sub("_", volume_name).upper()


def link_mount(root: Path, mount_path: str, target: Path) -> Path:
    """Expose ``target`` at ``<root>/<mount_path>`` (a symlink); returns the link."""
    rel = Path(mount_path.lstrip("/"))
    if not rel.parts or ".." in rel.parts:
        raise ConfigError(f"invalid mountPath {mount_path!r}")
    link = root / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link, ignore_errors=True)
    link.symlink_to(target)
    return link
