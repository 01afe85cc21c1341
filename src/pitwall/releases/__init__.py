"""Releases: progressive delivery, its statistical judge and A/B reports."""

from pitwall.releases.abtest import ABReport, Variant, ab_report, sample_size_per_variant, variants_from_ratio
from pitwall.releases.judge import JudgeConfig, JudgeResult, MetricInput, MetricVerdict, judge

__all__ = [
    "ABReport",
    "JudgeConfig",
    "JudgeResult",
    "MetricInput",
    "MetricVerdict",
    "Variant",
    "ab_report",
    "judge",
    "sample_size_per_variant",
    "variants_from_ratio",
]
