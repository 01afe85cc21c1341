"""Releases: Flagger's Canary (progressive canary, A/B testing, blue/green) on pitwall's mesh, the statistical
judge (Kayenta's NetflixACAJudge) and A/B reports.

``__all__`` is the pillar's public interface.
"""

from __future__ import annotations

from pitwall.releases.abtest import ABReport, Variant, ab_report, sample_size_per_variant, variants_from_ratio
from pitwall.releases.console import ReleasesConsole
from pitwall.releases.crds import flagger_crds
from pitwall.releases.judge import JudgeConfig, JudgeResult, MetricInput, MetricVerdict, judge
from pitwall.releases.workload import compute_hash

__all__ = [
    "ABReport",
    "JudgeConfig",
    "JudgeResult",
    "MetricInput",
    "MetricVerdict",
    "ReleasesConsole",
    "Variant",
    "ab_report",
    "compute_hash",
    "flagger_crds",
    "judge",
    "sample_size_per_variant",
    "variants_from_ratio",
]
