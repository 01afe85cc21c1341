"""``pipelines:`` settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pitwall.core.durations import DurationMs

__all__ = ["PipelineSchedule", "PipelinesSettings", "WatchedRepo"]


class PipelineSchedule(BaseModel):
    """A pipeline on a cron schedule (GitLab's pipeline schedules)."""

    model_config = ConfigDict(extra="forbid")

    repo: Path = Field(description="the repository on the server's machine")
    ref: str = Field("", description="branch or tag (default: the checked-out branch)")
    cron: str = Field(description="5-field cron or @daily/@hourly/..., as Kubernetes CronJobs take it")
    cron_timezone: str = Field("", description="IANA time zone of cron (default UTC)")
    description: str = ""
    variables: dict[str, str] = Field(default_factory=dict, description="pipeline variables")
    active: bool = True

    @model_validator(mode="after")
    def _cron(self) -> PipelineSchedule:
        from pitwall.controllers import CronError, Schedule  # here: loading settings imports no controllers

        try:
            Schedule.parse(self.cron, self.cron_timezone or None)
        except CronError as e:
            raise ValueError(f"cron {self.cron!r}: {e}") from None
        return self


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
    schedules: list[PipelineSchedule] = Field(default_factory=list, description="pipelines on cron schedules")
    podman: list[str] = Field(["podman"], min_length=1, description="the podman command (with global options, "
                                                                    "e.g. [podman, --runtime, runc]) for `image:` jobs")
    podman_run_args: list[str] = Field(default_factory=list, description="extra `podman run` options "
                                                                         "(e.g. [--ulimit, nofile=1024:1024])")
    image_fallback: Literal["fail", "shell"] = Field("fail", description="an `image:` job when podman or the image "
                                                     "is not present: fail it (fail) or run it in the shell (shell)")
    wait_for_services_timeout: DurationMs = Field(30_000, ge=0, description="how long a job waits for its "
                                                  "`services:` to listen (GitLab Runner's wait_for_services_timeout); "
                                                  "0: no wait")
    github_secret: str = Field("", description="the GitHub webhook secret (X-Hub-Signature-256); empty (and no "
                                              "github_secret_file): GitHub webhooks are refused")
    github_secret_file: Path | None = Field(None, description="file holding the GitHub webhook secret (surrounding "
                                                              "whitespace ignored)")

    def github_webhook_secret(self) -> bytes:
        """The configured GitHub webhook secret (the file read on each call, so a rotation needs no restart)."""
        if self.github_secret_file is not None:
            try:
                return self.github_secret_file.read_text().strip().encode()
            except OSError:
                return b""
        return self.github_secret.encode()
