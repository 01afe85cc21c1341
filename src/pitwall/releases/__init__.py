"""Releases: Flagger's Canary (progressive canary, A/B testing, blue/green) on pitwall's mesh, the statistical
judge (Kayenta's NetflixACAJudge) and A/B reports.

``__all__`` is the pillar's public interface.

Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can import the settings module cheaply.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.releases.abtest import (
        ABReport,
        Variant,
        ab_report,
        sample_size_per_variant,
        variants_from_ratio,
    )
    from pitwall.releases.abtest_query import ABTestResult, run_abtest
    from pitwall.releases.abtest_spec import FIELDS as ABTEST_FIELDS
    from pitwall.releases.abtest_spec import ROW_KEYS as ABTEST_ROW_KEYS
    from pitwall.releases.abtest_spec import ABTestInputError, spec_from_json, spec_from_pairs
    from pitwall.releases.console import ReleasesConsole
    from pitwall.releases.crds import flagger_crds
    from pitwall.releases.judge import JudgeConfig, JudgeResult, MetricInput, MetricVerdict, judge
    from pitwall.releases.workload import compute_hash

_EXPORTS = {
    "ABTEST_FIELDS": "pitwall.releases.abtest_spec:FIELDS",
    "ABTEST_ROW_KEYS": "pitwall.releases.abtest_spec:ROW_KEYS",
    "ABReport": "pitwall.releases.abtest",
    "ABTestInputError": "pitwall.releases.abtest_spec",
    "ABTestResult": "pitwall.releases.abtest_query",
    "JudgeConfig": "pitwall.releases.judge",
    "JudgeResult": "pitwall.releases.judge",
    "MetricInput": "pitwall.releases.judge",
    "MetricVerdict": "pitwall.releases.judge",
    "ReleasesConsole": "pitwall.releases.console",
    "Variant": "pitwall.releases.abtest",
    "ab_report": "pitwall.releases.abtest",
    "compute_hash": "pitwall.releases.workload",
    "flagger_crds": "pitwall.releases.crds",
    "judge": "pitwall.releases.judge",
    "run_abtest": "pitwall.releases.abtest_query",
    "sample_size_per_variant": "pitwall.releases.abtest",
    "spec_from_json": "pitwall.releases.abtest_spec",
    "spec_from_pairs": "pitwall.releases.abtest_spec",
    "variants_from_ratio": "pitwall.releases.abtest",
}

__all__ = [
    "ABTEST_FIELDS",
    "ABTEST_ROW_KEYS",
    "ABReport",
    "ABTestInputError",
    "ABTestResult",
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
    "run_abtest",
    "sample_size_per_variant",
    "spec_from_json",
    "spec_from_pairs",
    "variants_from_ratio",
]



class _Package(types.ModuleType):
    """Keeps ``pitwall.releases.judge`` the function: importing the submodule of that name binds the module on
    its package, which an eager ``from .judge import judge`` used to overwrite."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "judge" and isinstance(value, types.ModuleType):
            value = value.judge
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
