"""A sha256 manifest of every file a backup holds, written into the snapshot at backup time
(``pitwall-sha256.json`` at its root), so a restore drill can prove the files it got back are the ones
that were backed up, independently of restic's own pack checks."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["CHECKSUMS", "read_checksums", "verify_checksums", "write_checksums", "write_checksums_of"]

CHECKSUMS = "pitwall-sha256.json"
_CHUNK = 1 << 20
_MAX_PROBLEMS = 20  # named in a failure message; the count is always exact


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    """Regular files below ``root`` (symlinks are not followed: restic stores them as links)."""
    out: list[Path] = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return sorted(out)


def write_checksums(root: Path) -> int:
    """Write the manifest of the files below ``root`` into ``root``; the number of files it hashes.

    A file with more than one link is a hard link to a live file (the self-backup links what it does not
    copy): it may change before restic reads it, so it is listed under ``linked`` without a checksum (restic's
    own check covers it) rather than given a checksum a later drill would wrongly fail on."""
    copied: list[str] = []
    linked: list[str] = []
    for p in _files(root):
        rel = p.relative_to(root).as_posix()
        if rel != CHECKSUMS:
            (linked if p.stat().st_nlink > 1 else copied).append(rel)
    return write_checksums_of(root, copied, linked)


def write_checksums_of(root: Path, copied: Iterable[str], linked: Iterable[str]) -> int:
    """``write_checksums`` for a tree whose maker knows what it holds (the self-backup's copy): the ``copied``
    files (relative paths) are hashed, the ``linked`` ones listed; nothing else below ``root`` is read, so a
    tree of 20k hard links costs no walk. The number of files hashed."""
    files: dict[str, Any] = {}
    for rel in copied:
        p = root / rel
        files[rel] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
    (root / CHECKSUMS).write_text(json.dumps({"format": 1, "algorithm": "sha256", "files": files,
                                              "linked": sorted(linked)}, sort_keys=True))
    return len(files)


def read_checksums(root: Path) -> dict[str, Any] | None:
    p = root / CHECKSUMS
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def verify_checksums(root: Path) -> tuple[int, list[str]] | None:
    """Compare the restored files below ``root`` with its manifest: (files checked, problems), or None when
    the backup has no manifest (made before manifests were written)."""
    doc = read_checksums(root)
    if doc is None:
        return None
    problems: list[str] = []
    files: dict[str, Any] = doc["files"]
    for rel, want in sorted(files.items()):
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif _sha256(p) != want.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the backup's manifest")
    return len(files), problems
