"""``pipelines:`` settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pitwall.core.durations import DurationMs

__all__ = ["PipelinesSettings", "WatchedRepo"]


class WatchedRepo(BaseModel):
    """A local git repository whose pushes start pipelines (its refs are polled)."""

    model_config = ConfigDict(extra="forbid")

    repo: Path = Field(description="the repository (bare or with a working tree) on the server's machine")
    refs: list[str] = Field(default_factory=list, description="branch/tag names or globs (main, release-*); "
                                                              "empty: every branch")


class PipelinesSettings(BaseModel):
    """CI/CD pipelines from ``.gitlab-ci.yml``, run by the shell executor."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false turns the runner and the GitLab API off")
    concurrency: int = Field(2, ge=1, le=64, description="jobs running at once (the job pool)")
    job_timeout: DurationMs = Field(3_600_000, gt=0, description="a job's timeout unless its `timeout:` says less")
    max_log_bytes: int = Field(4 << 20, ge=1024, description="a job's log is cut here, with a note (GitLab: 4 MiB)")
    artifacts_retention: DurationMs = Field(30 * 86_400_000, ge=0,
                                            description="artifacts without expire_in are removed after this; 0 keeps")
    max_artifacts_bytes: int = Field(100 << 20, ge=1024, description="a job's artifacts (GitLab: 100 MiB)")
    watch: list[WatchedRepo] = Field(default_factory=list, description="repositories whose pushes run pipelines")
    watch_interval: DurationMs = Field(5_000, ge=200, description="how often watched repositories are polled")
