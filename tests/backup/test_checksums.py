"""The sha256 manifest a backup writes and a drill verifies: hard links to live files are listed, not hashed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pitwall.backup.checksums import CHECKSUMS, verify_checksums, write_checksums

pytestmark = pytest.mark.timeout(30)


def test_manifest_hashes_copies_lists_links_and_catches_changes(tmp_path: Path) -> None:
    live, root = tmp_path / "live", tmp_path / "staging"
    live.mkdir()
    (root / "sub").mkdir(parents=True)
    (root / "a.db").write_bytes(os.urandom(5000))
    (root / "sub" / "b.txt").write_text("hello")
    (live / "volume.bin").write_bytes(b"x" * 100)
    os.link(live / "volume.bin", root / "sub" / "volume.bin")  # as the self-backup links what it does not copy
    assert write_checksums(root) == 2
    doc = json.loads((root / CHECKSUMS).read_text())
    assert sorted(doc["files"]) == ["a.db", "sub/b.txt"] and doc["linked"] == ["sub/volume.bin"]
    (live / "volume.bin").write_bytes(b"y" * 100)  # the live file changes: not a checksum failure
    assert verify_checksums(root) == (2, [])
    (root / "sub" / "b.txt").write_text("hellO")
    (root / "a.db").unlink()
    assert verify_checksums(root) == (2, ["a.db: missing", "sub/b.txt: sha256 differs from the backup's manifest"])
    (root / CHECKSUMS).unlink()
    assert verify_checksums(root) is None
