"""CI/CD pipelines from GitLab CI's ``.gitlab-ci.yml``, run by pitwall.

``spec`` parses and lints the file (GitLab's keywords, includes, ``extends``, ``!reference``), ``plan``
applies rules and ``parallel`` for one pipeline, ``runner`` moves jobs through GitLab's statuses and runs them
with the shell ``executor``; ``api`` speaks GitLab's REST API v4 subset. State is keys in the revisioned store.

Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can import the settings module cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.pipelines.dora import Incident as DoraIncident
    from pitwall.pipelines.runner import PipelineRunner
    from pitwall.pipelines.settings import PipelinesSettings
    from pitwall.pipelines.spec import CiConfig, load_config
    from pitwall.pipelines.wiring import PipelinesPart, build_pipelines_part
    from pitwall.pipelines.yamlload import SpecError

_EXPORTS = {
    "CiConfig": "pitwall.pipelines.spec",
    "DoraIncident": "pitwall.pipelines.dora:Incident",
    "PipelineRunner": "pitwall.pipelines.runner",
    "PipelinesPart": "pitwall.pipelines.wiring",
    "PipelinesSettings": "pitwall.pipelines.settings",
    "SpecError": "pitwall.pipelines.yamlload",
    "build_pipelines_part": "pitwall.pipelines.wiring",
    "load_config": "pitwall.pipelines.spec",
}

__all__ = ["CiConfig", "DoraIncident", "PipelineRunner", "PipelinesPart", "PipelinesSettings", "SpecError", "build_pipelines_part",
           "load_config"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
