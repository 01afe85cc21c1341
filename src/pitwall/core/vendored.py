"""Vendored YAML files (upstream CRDs) read fast: each ships with a parsed JSON twin.

The YAML file stays the source of truth, byte for byte as upstream wrote it.
Beside it, ``<file>.json.gz`` holds its documents already parsed, with the
YAML's SHA-256: parsing the 4 MB of CRDs pitwall installs took a second and
more of every start (PyYAML, even with libyaml); the twin loads in a few
hundredths. A twin whose hash does not match (the YAML was edited) is
ignored and the YAML parsed, so a stale twin costs time, never correctness;
``tests/test_vendored.py`` fails until ``python -m pitwall.core.vendored``
has rewritten the twins.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["twin_of", "write_twins", "yaml_documents"]

TWIN_SUFFIX = ".json.gz"


def yaml_documents(package: str, *path: str) -> tuple[Any, ...]:
    """The documents of the YAML file at ``path`` inside ``package`` (empty ones dropped), parsed afresh on
    each call: the twin parses in hundredths of a second, and a process-long cache kept a second copy of
    every CRD (~6 MiB of objects) beside the one the kube API holds."""
    base = resources.files(package)
    raw = base.joinpath(*path).read_bytes()
    twin = _read_twin(base.joinpath(*path[:-1], path[-1] + TWIN_SUFFIX))
    if twin is not None and twin.get("sha256") == hashlib.sha256(raw).hexdigest():
        return tuple(twin["documents"])
    return _parse(raw)


def _read_twin(t: Traversable) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(gzip.decompress(t.read_bytes()))
    except (OSError, ValueError):
        return None
    return data


def _parse(raw: bytes) -> tuple[Any, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all(raw, Loader=loader) if d)


def twin_of(yaml_file: Path) -> bytes:
    """The twin's bytes for ``yaml_file`` (deterministic: gzip without a timestamp)."""
    raw = yaml_file.read_bytes()
    doc = {"sha256": hashlib.sha256(raw).hexdigest(), "documents": list(_parse(raw))}
    return gzip.compress(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), mtime=0)


def write_twins(root: Path) -> list[Path]:
    """(Re)write the twin of every ``crds/*.yaml`` below ``root``; the paths written."""
    out = []
    for f in sorted(root.rglob("crds/*.yaml")):
        twin = f.with_name(f.name + TWIN_SUFFIX)
        data = twin_of(f)
        if not twin.exists() or twin.read_bytes() != data:
            twin.write_bytes(data)
            out.append(twin)
    return out


if __name__ == "__main__":  # python -m pitwall.core.vendored: refresh the twins after updating a vendored file
    for p in write_twins(Path(__file__).resolve().parents[1]):
        sys.stdout.write(f"wrote {p}\n")
