"""The docs stay true: every settings key and CLI command is documented, every YAML example parses.

In the manner of Datasette's documentation tests: the code is the list of
what must be documented, so a new key or command without docs fails here.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from pitwall.cli.main import app as cli_app
from pitwall.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_DOTTED = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*|\[\])+)")


def _docs() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(DOCS.glob("*.md"))}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _settings_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = prefix + (field.alias or name)
        sub = _model_of(field.annotation)
        if sub is None:
            yield key
        else:
            yield from _settings_keys(sub, key + ".")


def _yaml_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}{k}"
            yield key
            yield from _yaml_paths(v, key + ".")
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_paths(item, prefix)


def _documented_keys() -> set[str]:
    """Dotted keys shown in YAML examples (nested) or named inline (`storage.retention`)."""
    found: set[str] = set()
    for text in _docs().values():
        for lang, body in _FENCE.findall(text):
            if lang == "yaml":
                doc = yaml.safe_load(body)
                found.update(_yaml_paths(doc))
        found.update(m.replace("[]", "") for m in _DOTTED.findall(text))
    return found


def test_every_settings_key_is_documented() -> None:
    documented = _documented_keys()
    missing = [k for k in _settings_keys(Settings) if k not in documented]
    assert not missing, f"settings keys named nowhere in docs/: {missing}"


def _commands(cmd: Any, path: str) -> Iterator[str]:
    subs = getattr(cmd, "commands", None)  # a group (typer vendors its own click)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, f"{path} {name}")
    else:
        yield path


def test_every_cli_command_is_documented() -> None:
    text = "\n".join(_docs().values())
    commands = list(_commands(typer.main.get_command(cli_app), "pitwall"))
    assert len(commands) > 5
    missing = [c for c in commands if c not in text]
    assert not missing, f"CLI commands named nowhere in docs/: {missing}"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_yaml_examples_parse(page: str) -> None:
    for lang, body in _FENCE.findall((DOCS / page).read_text()):
        if lang == "yaml":
            yaml.safe_load(body)


def test_the_configuration_reference_is_a_valid_configuration(tmp_path: Path) -> None:
    from pitwall.config import load_settings

    text = (DOCS / "configuration.md").read_text()
    ref = text.split("## File reference", 1)[1]
    body = next(b for lang, b in _FENCE.findall(ref) if lang == "yaml")
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(body)
    settings = load_settings(cfg)
    assert settings.storage.retention == 15 * 86_400_000
