"""SLOs as Sloth generates them: Sloth ``prometheus/v1``, Kubernetes ``PrometheusServiceLevel`` and
OpenSLO specs -> recording and multi-window multi-burn-rate alerting rules; error budgets.

``__all__`` is the capability's public interface (``tests/test_layout.py``). The SLO status other
capabilities gate on is ``SLOStatusQuery`` (``await slo_status(name) -> SLOStatus``): the composition
root hands them ``SLOPart.slo_status`` (``pitwall.slo.wiring``).
Names load on first use (``pitwall.core.exports``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.slo.budget import BudgetUse, SLOService, SLOStatus, SLOStatusQuery
    from pitwall.slo.errors import SLONotFound, SpecError
    from pitwall.slo.generate import GenerateOptions, generate_group
    from pitwall.slo.model import SLO, SLOGroup, SLOResult
    from pitwall.slo.render import render_rule_file
    from pitwall.slo.spec import load_documents, load_files
    from pitwall.slo.windows import WindowsCatalog

_EXPORTS = {
    "BudgetUse": "pitwall.slo.budget",
    "SLOService": "pitwall.slo.budget",
    "SLOStatus": "pitwall.slo.budget",
    "SLOStatusQuery": "pitwall.slo.budget",
    "GenerateOptions": "pitwall.slo.generate",
    "SLO": "pitwall.slo.model",
    "SLOGroup": "pitwall.slo.model",
    "SLONotFound": "pitwall.slo.errors",
    "SLOResult": "pitwall.slo.model",
    "SpecError": "pitwall.slo.errors",
    "WindowsCatalog": "pitwall.slo.windows",
    "generate_group": "pitwall.slo.generate",
    "load_documents": "pitwall.slo.spec",
    "load_files": "pitwall.slo.spec",
    "render_rule_file": "pitwall.slo.render",
}

__all__ = [
    "SLO",
    "BudgetUse",
    "GenerateOptions",
    "SLOGroup",
    "SLONotFound",
    "SLOResult",
    "SLOService",
    "SLOStatus",
    "SLOStatusQuery",
    "SpecError",
    "WindowsCatalog",
    "generate_group",
    "load_documents",
    "load_files",
    "render_rule_file",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
