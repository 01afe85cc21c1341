"""Target discovery: static and file_sd target groups, turned into targets.

Contract: ``read_sd_file`` parses one file_sd file (JSON or YAML list of
``{targets, labels}``), raising ``ValueError`` for a malformed one;
``read_file_groups`` re-reads every file a job's globs match, keeping a
file's last good groups when it fails to read; ``target_groups`` lists the
job's groups (static first, then files by path, with ``__meta_filepath``);
``targets_of`` runs ``populate_labels`` over them. No tasks: the manager
decides when to re-read.
"""

from __future__ import annotations

import json
import logging
from glob import glob

import yaml

from pitwall.core.labels import Labels
from pitwall.metrics.scrape.config import ScrapeConfig
from pitwall.metrics.scrape.targets import DroppedTarget, Target, populate_labels

__all__ = ["Groups", "read_file_groups", "read_sd_file", "target_groups", "targets_of"]

log = logging.getLogger(__name__)

Groups = list[tuple[list[str], dict[str, str]]]  # (targets, group labels)


def read_sd_file(path: str) -> Groups:
    """Target groups of a file_sd file (JSON or YAML list of {targets, labels})."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError("expected a list of target groups")
    groups = []
    for g in data:
        if not isinstance(g, dict) or set(g) - {"targets", "labels"}:
            raise ValueError(f"invalid target group {g!r}")
        targets = g.get("targets") or []
        labels = g.get("labels") or {}
        if not all(isinstance(t, str) for t in targets) or not isinstance(labels, dict):
            raise ValueError(f"invalid target group {g!r}")
        for t in targets:
            if "/" in t:
                raise ValueError(f'"{t}" is not a valid hostname')
        groups.append((list(targets), {str(k): str(v) for k, v in labels.items()}))
    return groups


def read_file_groups(cfg: ScrapeConfig, previous: dict[str, Groups]) -> dict[str, Groups]:
    """Re-read file_sd files; a file that fails to read keeps its last good targets."""
    new: dict[str, Groups] = {}
    for sd in cfg.file_sd_configs:
        for pattern in sd.files:
            for path in sorted(glob(pattern)):
                try:
                    new[path] = read_sd_file(path)
                except (OSError, ValueError, yaml.YAMLError) as e:
                    log.error("error reading file_sd file %s: %s", path, e)
                    if path in previous:
                        new[path] = previous[path]
    return new


def target_groups(cfg: ScrapeConfig, file_groups: dict[str, Groups]) -> Groups:
    """The job's target groups: static ones, then each file's, labelled with its path."""
    out = [(list(s.targets), dict(s.labels)) for s in cfg.static_configs]
    for path in sorted(file_groups):
        for targets, labels in file_groups[path]:
            out.append((targets, {**labels, "__meta_filepath": path}))
    return out


def targets_of(groups: Groups, cfg: ScrapeConfig) -> tuple[dict[tuple[Labels, str], Target], list[DroppedTarget]]:
    """Targets by key (first of duplicates wins) and the targets relabeling dropped."""
    wanted: dict[tuple[Labels, str], Target] = {}
    dropped: list[DroppedTarget] = []
    for targets, glabels in groups:
        for addr in targets:
            disc = {**glabels, "__address__": addr}
            try:
                tgt, pre = populate_labels(disc, cfg)
            except ValueError as e:
                log.error("creating target for %s in job %s failed: %s", addr, cfg.job_name, e)
                continue
            if tgt is None:
                dropped.append(DroppedTarget(pre, cfg.job_name))
            else:
                wanted.setdefault(tgt.key, tgt)
    return wanted, dropped
