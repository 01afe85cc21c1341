"""CI/CD pipelines from GitLab CI's ``.gitlab-ci.yml``, run by pitwall.

``spec`` parses and lints the file (GitLab's keywords, includes, ``extends``, ``!reference``), ``plan``
applies rules and ``parallel`` for one pipeline, ``runner`` moves jobs through GitLab's statuses and runs them
with the shell ``executor``; ``api`` speaks GitLab's REST API v4 subset. State is keys in the revisioned store.
"""

from __future__ import annotations

from pitwall.pipelines.dora import Incident as DoraIncident
from pitwall.pipelines.runner import PipelineRunner
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.pipelines.spec import CiConfig, load_config
from pitwall.pipelines.wiring import PipelinesPart, build_pipelines_part
from pitwall.pipelines.yamlload import SpecError

__all__ = ["CiConfig", "DoraIncident", "PipelineRunner", "PipelinesPart", "PipelinesSettings", "SpecError", "build_pipelines_part",
           "load_config"]
