"""Generated rules equal Sloth's own output for its examples and integration fixtures.

``../shared/conformance/wave2/sloth`` (Sloth at 0e395d8, v0.16.0+2): every
``examples/X.yml`` against ``examples/_gen/X.yml`` (generated upstream with
``--extra-labels cmd=examplesgen.sh``), and the ``sloth generate`` /
``sloth validate`` integration cases, compared as parsed YAML (the generator
header is a comment). The Go-plugin cases are left out (the plugins are Go code).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pitwall.slo.errors import SpecError
from pitwall.slo.files import discover, generate_files, validate_paths
from pitwall.slo.generate import GenerateOptions
from pitwall.slo.windows import WindowsCatalog

pytestmark = pytest.mark.timeout(60)

SLOTH = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "wave2" / "sloth"
needs_shared = pytest.mark.skipif(not SLOTH.is_dir(), reason="../shared is not beside the repo")
EXAMPLES = SLOTH / "examples"
INTEG = SLOTH / "test" / "integration" / "prometheus"
DAY = 86_400_000
# The SLI plugin of these two is Go code from Sloth's examples/plugins (loaded by Sloth at run time).
NEEDS_GO_PLUGINS = {"plugin-getting-started.yml", "plugin-k8s-getting-started.yml"}


def _docs(text: str) -> list[object]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _examples() -> list[str]:
    if not EXAMPLES.is_dir():
        return ["missing"]
    return sorted(p.name for p in EXAMPLES.glob("*.y*ml") if p.name not in NEEDS_GO_PLUGINS)


@needs_shared
@pytest.mark.parametrize("name", _examples())
def test_example_equals_sloth_output(name: str) -> None:
    src = EXAMPLES / name
    expected = next((EXAMPLES / "_gen").glob(src.stem + ".y*ml"))
    out = generate_files([src], GenerateOptions(extra_labels={"cmd": "examplesgen.sh"}, version="dev"), 30 * DAY)
    assert _docs(out) == _docs(expected.read_text())


@needs_shared
def test_every_example_is_covered_or_named() -> None:
    names = {p.name for p in EXAMPLES.glob("*.y*ml")}
    assert names - NEEDS_GO_PLUGINS == set(_examples())
    assert len(set(_examples())) == 16


def _expected(tpl: str, version: str) -> list[object]:
    text = (INTEG / "testdata" / tpl).read_text().replace("{{ .version }}", version)
    return _docs(text.replace('{{"{{', "{{").replace('}}"}}', "}}"))


CASES = [
    ("in-base.yaml", {}, 30, None, "out-base.yaml.tpl"),
    ("in-base-k8s.yaml", {}, 30, None, "out-base-k8s.yaml.tpl"),
    ("in-base.yaml", {"disable_alerts": True}, 30, None, "out-base-no-alerts.yaml.tpl"),
    ("in-base.yaml", {"disable_recordings": True}, 30, None, "out-base-no-recordings.yaml.tpl"),
    ("in-base.yaml", {"extra_labels": {"exk1": "exv1", "exk2": "exv2"}}, 30, None, "out-base-extra-labels.yaml.tpl"),
    ("in-multifile.yaml", {}, 30, None, "out-multifile.yaml.tpl"),
    ("in-multifile-k8s.yaml", {}, 30, None, "out-multifile-k8s.yaml.tpl"),
    ("in-openslo.yaml", {}, 30, None, "out-openslo.yaml.tpl"),
    ("in-base.yaml", {}, 28, None, "out-base-28d.yaml.tpl"),
    ("in-base.yaml", {}, 7, "windows", "out-base-custom-windows-7d.yaml.tpl"),
]


@needs_shared
@pytest.mark.parametrize(("src", "flags", "days", "windows", "expected"), CASES,
                         ids=[c[4].removesuffix(".yaml.tpl") for c in CASES])
def test_integration_case(src: str, flags: dict[str, object], days: int, windows: str | None,
                          expected: str) -> None:
    catalog = WindowsCatalog.from_dir(INTEG / windows) if windows else WindowsCatalog(strict=True)
    opts = GenerateOptions(windows=catalog, version="v-test", **flags)  # type: ignore[arg-type]
    out = generate_files([INTEG / "testdata" / src], opts, days * DAY)
    assert _docs(out) == _expected(expected, "v-test")


@needs_shared
def test_invalid_version_is_an_error_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"in-invalid-version.yaml: version: invalid spec version 'prometheus/v999'"):
        generate_files([INTEG / "testdata" / "in-invalid-version.yaml"], GenerateOptions(), 30 * DAY)


@needs_shared
def test_period_without_windows_is_refused_when_strict() -> None:
    with pytest.raises(SpecError, match="the 1w SLO period time window is not supported"):
        generate_files([INTEG / "testdata" / "in-base.yaml"], GenerateOptions(windows=WindowsCatalog(strict=True)),
                       7 * DAY)


def _failed(path: Path, *, ignore_duplicates: bool = False, include: str = "", exclude: str = "") -> list[str]:
    files = discover(path, include, exclude)
    assert files, path
    res = validate_paths(files, GenerateOptions(), 30 * DAY, ignore_duplicates=ignore_duplicates)
    return [f"{v.file}: {e}" for v in res for e in v.errors]


@needs_shared
def test_validate_good_bad_and_filters() -> None:
    data = INTEG / "testdata"
    assert _failed(data / "validate" / "good", ignore_duplicates=True) == []
    bad = _failed(data / "validate" / "bad")
    assert bad
    assert any("objective: must be >0 and <=100, got 101" in e for e in bad)
    assert _failed(data / "validate")
    assert _failed(data / "validate", ignore_duplicates=True, exclude="bad") == []
    assert _failed(data / "validate", ignore_duplicates=True, include="good") == []


@needs_shared
def test_validate_duplicates() -> None:
    dup = INTEG / "testdata" / "validate_with_duplicates"
    errs = _failed(dup)
    assert any("SLO duplicated" in e for e in errs)
    assert _failed(dup, ignore_duplicates=True) == []
    for sub in ("prom", "k8s", "openslo"):
        assert any("SLO duplicated" in e for e in _failed(dup / sub)), sub
    assert _failed(dup / "bad-prom-multi-duplicates.yaml")


@pytest.mark.parametrize("query", ['{{printf "%99999999d" 1}}[{{.window}}]', '{{printf "%*d" 99999999 1}}[{{.window}}]',
                                   '{{printf "%.99999999f" 1.0}}[{{.window}}]'])
def test_template_cannot_allocate_gigabytes(tmp_path: Path, query: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: 99\n"
                    f"    sli: {{raw: {{error_ratio_query: '{query}'}}}}\n"
                    "    alerting: {page_alert: {disable: true}, ticket_alert: {disable: true}}\n")
    with pytest.raises(SpecError, match="printf: width"):
        generate_files([spec], GenerateOptions(), 30 * DAY)
