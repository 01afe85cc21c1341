"""``sloth generate``/``sloth validate`` over files and directories: discovery with include/exclude
regexes (RE2), one output per input document, duplicate SLO ids across files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pitwall.core import regex
from pitwall.core.errors import PitwallError
from pitwall.slo.generate import GenerateOptions, generate_group
from pitwall.slo.model import SLOGroup, SLOResult
from pitwall.slo.render import render_rule_file
from pitwall.slo.spec import load_documents, load_files

__all__ = ["FileValidation", "discover", "generate_files", "validate_paths"]


def discover(path: str | Path, include: str = "", exclude: str = "") -> list[Path]:
    """YAML files below ``path`` (or ``path`` itself), filtered as Sloth does: exclude wins over include."""
    p = Path(path)
    if p.is_file():
        return [p]
    inc = regex.compile(include) if include else None
    exc = regex.compile(exclude) if exclude else None
    out = []
    for f in sorted(p.rglob("*")):
        if not f.is_file() or f.suffix.lower() not in (".yml", ".yaml"):
            continue
        if exc is not None and exc.search(str(f)) is not None:
            continue
        if inc is not None and inc.search(str(f)) is None:
            continue
        out.append(f)
    return out


def generate_files(paths: Sequence[str | Path], opts: GenerateOptions, default_period_ms: int,
                   notes: list[str] | None = None) -> str:
    """The rule file(s) for ``paths`` as ``pitwall slo generate`` prints them; SLO notes go to ``notes``."""
    groups = load_files(paths, default_period_ms)
    if notes is not None:
        notes.extend(f"{s.id}: {n}" for g in groups for s in g.slos for n in s.notes)
    docs: list[tuple[SLOGroup, Sequence[SLOResult]]] = [(g, generate_group(g, opts)) for g in groups]
    from pitwall.slo.generate import info_version

    return render_rule_file(docs, info_version(opts))


@dataclass
class FileValidation:
    file: str
    errors: list[str] = field(default_factory=list)


def validate_paths(paths: Sequence[Path], opts: GenerateOptions, default_period_ms: int, *,
                   ignore_duplicates: bool = False) -> list[FileValidation]:
    """Every file's problems (``sloth validate``): load, generate, and SLO ids seen in an earlier file."""
    seen: dict[str, str] = {}
    out = []
    for p in paths:
        v = FileValidation(str(p))
        out.append(v)
        try:
            groups = load_documents([(str(p), p.read_text())], default_period_ms)
        except (PitwallError, OSError) as e:
            v.errors.append(getattr(e, "message", str(e)))
            continue
        for g in groups:
            try:
                results = generate_group(g, opts)
            except PitwallError as e:
                v.errors.append(e.message)
                continue
            if ignore_duplicates:
                continue
            for r in results:
                first = seen.get(r.slo.id)
                if first is None:
                    seen[r.slo.id] = v.file
                else:
                    v.errors.append(f"SLO duplicated. SLO{{service={r.slo.service}, name={r.slo.name}}}, "
                                    f"ID={r.slo.id} already exists in a file: {first}")
    return out
