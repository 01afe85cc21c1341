"""The import rules of DESIGN.md's layout, checked over every module of ``src/pitwall`` with ``ast``.

* ``core`` imports no other part of pitwall.
* ``storage`` imports a pillar only as ``<pillar>.model``, ``<pillar>.errors``
  or ``<pillar>.store`` (the types and Protocols it stores and implements).
* A pillar imports another pillar only from that pillar's package root
  (``from pitwall.metrics import Engine``), and only names in its ``__all__``;
  it never imports the composition root or the edge (server, config, cli, demo).
* A concrete telemetry store (``MetricStore``, ``LogStore``, ``TraceStore``)
  is named only in ``server.py``, ``*/wiring.py`` and ``storage/``; everything
  else is handed a Protocol.
* ``server.py``, ``cli/``, ``demo/`` and ``instrument.py`` are the composition
  root and the edge: exempt. ``config.py`` may import pillars' ``settings``
  modules and nothing else of theirs.

Imports inside functions and ``if TYPE_CHECKING:`` blocks count like the rest.
A failure lists every offending import as ``file:line``.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pitwall"

# DESIGN.md's pillars, present and planned: a new directory under one of these names is checked at once.
PILLARS = frozenset({
    "metrics", "logs", "traces", "alerting", "ui", "kube", "node", "controllers", "traffic", "registry",
    "incidents", "slo", "releases", "chaos", "pipelines", "backup",
})
EDGE = frozenset({"server", "cli", "demo", "instrument"})  # composition root and clients: exempt
STORAGE_MAY_IMPORT = frozenset({"model", "errors", "store"})
CONCRETE_STORES = frozenset({"MetricStore", "LogStore", "TraceStore"})


@dataclass(frozen=True)
class Import:
    path: Path  # relative to src/pitwall
    line: int
    module: str  # absolute, e.g. "pitwall.metrics.query"
    names: tuple[str, ...]  # for ``from m import a, b``; empty for ``import m``

    def where(self) -> str:
        return f"src/pitwall/{self.path}:{self.line}"

    def text(self) -> str:
        return f"from {self.module} import {', '.join(self.names)}" if self.names else f"import {self.module}"


def _modules() -> list[Path]:
    return sorted(p.relative_to(SRC) for p in SRC.rglob("*.py"))


def _module_name(rel: Path) -> str:
    parts = ["pitwall", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _imports(rel: Path, tree: ast.AST) -> list[Import]:
    """Every import of a pitwall module in ``tree``; ``from pkg import submodule`` counts as importing the submodule."""
    here = _module_name(rel)
    package = here if rel.name == "__init__.py" else here.rpartition(".")[0]
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(rel, node.lineno, a.name, ()) for a in node.names if a.name.split(".")[0] == "pitwall"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "pitwall":
                continue
            plain = [a.name for a in node.names if not _is_module(f"{module}.{a.name}")]
            out += [Import(rel, node.lineno, f"{module}.{a.name}", ()) for a in node.names
                    if _is_module(f"{module}.{a.name}")]
            if plain:
                out.append(Import(rel, node.lineno, module, tuple(plain)))
    return out


def _area(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _public_names(pillar: str) -> set[str] | None:
    """The literal ``__all__`` of a pillar's ``__init__.py``, or None when it has none."""
    init = SRC / pillar / "__init__.py"
    if not init.is_file():
        return None
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return set(ast.literal_eval(value))
    return None


def _problem(imp: Import, area: str) -> str | None:
    """Why ``imp``, made by a module of ``area``, breaks the layout; None when it is fine."""
    parts = imp.module.split(".")
    target = parts[1] if len(parts) > 1 else ""  # "" is the pitwall package itself (__version__)
    if not target or target == area or target == "core":
        return None
    if area == "core":
        return "core imports no other part of pitwall"
    if area == "storage":
        if target in PILLARS and len(parts) == 3 and parts[2] in STORAGE_MAY_IMPORT:
            return None
        if target in PILLARS:
            return f"storage may import a pillar's model, errors or store only, not {imp.module}"
        return f"storage may not import pitwall.{target}"
    if area == "config":
        if target in PILLARS and parts[-1] == "settings":
            return None
        return f"config.py may import pillars' settings modules only, not {imp.module}"
    if area in PILLARS:
        if target == "storage":
            return None
        if target not in PILLARS:
            return f"a pillar may not import pitwall.{target} (the composition root and edge import pillars)"
        if len(parts) > 2:
            return f"import pitwall.{target}'s public interface (its package root), not {imp.module}"
        public = _public_names(target) or set()
        private = sorted(set(imp.names) - public)
        if private or not imp.names:
            return f"not in pitwall.{target}.__all__: {', '.join(private) or '(plain import of the package)'}"
        return None
    return None


def _concrete_store_uses(rel: Path, tree: ast.AST) -> list[tuple[int, str]]:
    uses: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            uses += [(node.lineno, a.name) for a in node.names if a.name in CONCRETE_STORES]
        elif isinstance(node, ast.Name) and node.id in CONCRETE_STORES:
            uses.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr in CONCRETE_STORES:
            uses.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in CONCRETE_STORES:
            uses.append((node.lineno, node.value))  # a quoted annotation
    return sorted(set(uses))


def _parsed() -> list[tuple[Path, ast.AST]]:
    return [(rel, ast.parse((SRC / rel).read_text(), str(rel))) for rel in _modules()]


def test_every_area_is_classified() -> None:
    known = PILLARS | EDGE | {"core", "storage", "config", "__init__", "_native"}
    unknown = sorted({_area(rel) for rel in _modules()} - known)
    assert not unknown, f"classify these parts of src/pitwall in tests/test_layout.py: {unknown}"


def test_imports_flow_one_way() -> None:
    bad: list[str] = []
    for rel, tree in _parsed():
        area = _area(rel)
        if area in EDGE:
            continue
        for imp in _imports(rel, tree):
            why = _problem(imp, area)
            if why is not None:
                bad.append(f"{imp.where()}: {imp.text()}  -- {why}")
    assert not bad, "imports against DESIGN.md's layout:\n" + "\n".join(bad)


def test_only_wiring_names_a_concrete_store() -> None:
    bad: list[str] = []
    for rel, tree in _parsed():
        if _area(rel) in EDGE | {"storage"} or rel.name == "wiring.py":
            continue
        bad += [f"src/pitwall/{rel}:{line}: {name}" for line, name in _concrete_store_uses(rel, tree)]
    assert not bad, ("a concrete store is named outside server.py and */wiring.py "
                     "(take the pillar's Protocol instead):\n" + "\n".join(bad))


def _pillar_packages() -> list[str]:
    return sorted(p for p in PILLARS if (SRC / p / "__init__.py").is_file())


@pytest.mark.parametrize("pillar", _pillar_packages())
def test_pillar_declares_its_public_interface(pillar: str) -> None:
    public = _public_names(pillar)
    assert public is not None, f"src/pitwall/{pillar}/__init__.py must declare __all__ (its public interface)"
    package = importlib.import_module(f"pitwall.{pillar}")
    missing = sorted(n for n in public if not hasattr(package, n))
    assert not missing, f"pitwall.{pillar}.__all__ names what it does not provide: {missing}"
    lazy = getattr(package, "_EXPORTS", None)
    if lazy is not None:
        assert set(lazy) == public, f"pitwall.{pillar}: _EXPORTS and __all__ differ: {sorted(set(lazy) ^ public)}"


def test_rules_catch_a_bad_import() -> None:
    """The checker itself: each rule fires on a made-up offender."""
    cases = {
        ("core", "from pitwall.metrics.model import SampleBatch"): "core imports no other part",
        ("storage", "from pitwall.logs.api import LogsApiDeps"): "model, errors or store only",
        ("storage", "from pitwall.logs.model import EntryColumns"): None,
        ("alerting", "from pitwall.metrics.query import InstantQuery"): "package root",
        ("alerting", "from pitwall.metrics import InstantQuery"): None,
        ("alerting", "from pitwall.metrics import NotExported"): "not in pitwall.metrics.__all__",
        ("logs", "from pitwall.config import Settings"): "may not import pitwall.config",
        ("config", "from pitwall.logs.settings import LogsSettings"): None,
        ("config", "from pitwall.logs.api import LogsApiDeps"): "settings modules only",
    }
    for (area, code), expected in cases.items():
        rel = Path(area if area == "config" else f"{area}/x.py").with_suffix(".py")
        (imp,) = _imports(rel, ast.parse(code))
        why = _problem(imp, area)
        assert (why is None) if expected is None else (why is not None and expected in why), (area, code, why)
    uses = _concrete_store_uses(Path("metrics/x.py"), ast.parse("def f(s: 'MetricStore', t: LogStore) -> None: ..."))
    assert {n for _, n in uses} == {"MetricStore", "LogStore"}
