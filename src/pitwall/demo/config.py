"""Render the demo's shipped configuration for one run.

The package ships ``pitwall.yaml``, ``demo.rules.yaml`` and
``alertmanager.yml`` with ``${name}`` placeholders for what changes per run
(pitwall's own address, the files' absolute paths). :func:`render` fills them in and
writes the three files into a directory, ready for ``pitwall server
--config``. Settings this build of pitwall does not know yet are left out of
the rendered ``pitwall.yaml`` and reported, so the demo runs with whichever
pillars are present.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pitwall.config import Settings

__all__ = ["RenderedConfig", "render", "shipped_text"]

PITWALL_FILE = "pitwall.yaml"
RULES_FILE = "demo.rules.yaml"
ALERTMANAGER_FILE = "alertmanager.yml"


@dataclass
class RenderedConfig:
    pitwall_file: Path
    rules_file: Path
    alertmanager_file: Path
    skipped: list[str] = field(default_factory=list)  # top-level settings this build does not know


def shipped_text(name: str) -> str:
    """The text of a config file shipped in ``pitwall.demo``."""
    return resources.files("pitwall.demo").joinpath(name).read_text()


def render(directory: Path, pitwall_addr: str, webhook_url: str) -> RenderedConfig:
    """Write the demo's config files into ``directory``.

    ``pitwall_addr`` (``host:port``) is the server's own scrape target; the
    shop's pods are found by Kubernetes discovery, so they need no address here.
    """
    directory.mkdir(parents=True, exist_ok=True)
    out = RenderedConfig(directory / PITWALL_FILE, directory / RULES_FILE, directory / ALERTMANAGER_FILE)
    out.rules_file.write_text(shipped_text(RULES_FILE))
    out.alertmanager_file.write_text(
        string.Template(shipped_text(ALERTMANAGER_FILE)).substitute(webhook_url=webhook_url))
    text = string.Template(shipped_text(PITWALL_FILE)).substitute(
        pitwall=pitwall_addr, rules_file=str(out.rules_file), alertmanager_file=str(out.alertmanager_file),
        dashboards_dir=str(resources.files("pitwall.demo").joinpath("dashboards")))
    settings: dict[str, Any] = yaml.safe_load(text)
    known = known_settings()
    out.skipped = [k for k in settings if k not in known]
    kept = {k: v for k, v in settings.items() if k in known}
    out.pitwall_file.write_text(yaml.safe_dump(kept, sort_keys=False))
    return out


def known_settings() -> set[str]:
    """Top-level keys ``Settings`` accepts (field names and aliases)."""
    keys = set()
    for name, f in Settings.model_fields.items():
        keys.add(f.alias or name)
    return keys
