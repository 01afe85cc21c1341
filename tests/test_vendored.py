"""Every vendored YAML file ships with an up-to-date parsed twin, and the twin reads as the YAML does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pitwall.core.vendored import TWIN_SUFFIX, twin_of, yaml_documents

pytestmark = pytest.mark.timeout(120)

SRC = Path(__file__).resolve().parents[1] / "src" / "pitwall"
FILES = sorted(SRC.rglob("crds/*.yaml"))


def test_there_are_vendored_files() -> None:
    assert len(FILES) >= 15


@pytest.mark.parametrize("f", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_the_twin_is_current(f: Path) -> None:
    twin = f.with_name(f.name + TWIN_SUFFIX)
    assert twin.exists() and twin.read_bytes() == twin_of(f), \
        f"{twin.name} is stale: run `python -m pitwall.core.vendored` and commit the twins"


@pytest.mark.parametrize("f", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_documents_read_as_the_yaml_says(f: Path) -> None:
    rel = f.relative_to(SRC).parts
    package = ".".join(("pitwall", *rel[:-2]))
    got = yaml_documents(package, *rel[-2:])
    assert list(got) == [d for d in yaml.safe_load_all(f.read_text()) if d]


def test_an_edited_yaml_is_parsed_not_read_from_its_stale_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "vendortest"
    (pkg / "crds").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "crds" / "x.yaml").write_text("a: 1\n---\nb: 2\n")
    (pkg / "crds" / ("x.yaml" + TWIN_SUFFIX)).write_bytes(twin_of(pkg / "crds" / "x.yaml"))
    (pkg / "crds" / "x.yaml").write_text("a: 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert yaml_documents("vendortest", "crds", "x.yaml") == ({"a": 3},)
