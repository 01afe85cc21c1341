"""The ``releases:`` section of pitwall.yaml (only pydantic here, so ``pitwall.config`` can load it cheaply)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LoadTesterSettings", "ReleasesSettings"]


class LoadTesterSettings(BaseModel):
    """``releases.loadtester``: the built-in flagger-loadtester (its command-line flags, renamed)."""

    model_config = ConfigDict(extra="forbid")

    allow_shell: bool = Field(False, description="run commands other than hey (cmd, bash) in a shell: off, "
                                                 "since anyone who can POST a webhook could run anything")
    namespace_regexp: str = Field("", description="only canaries in matching namespaces (-namespace-regexp)")
    timeout_s: float = Field(3600.0, gt=0, description="longest run of one command (-timeout)")
    max_duration_s: float = Field(3600.0, gt=0, description="the longest hey -z accepted")
    kubectl_service_account: str = Field(
        "", pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="namespace/name of the ServiceAccount `type: kubectl` tasks run as (its RBAC decides what "
                    "they may do); empty: kubectl tasks are refused")


class ReleasesSettings(BaseModel):
    """``releases``: Flagger's Canary controller needs none; the load tester has a few."""

    model_config = ConfigDict(extra="forbid")

    loadtester: LoadTesterSettings = Field(default_factory=LoadTesterSettings)
