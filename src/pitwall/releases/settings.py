"""The ``releases:`` section of pitwall.yaml (only pydantic here, so ``pitwall.config`` can load it cheaply)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LoadTesterSettings", "NotifierSettings", "ReleasesSettings"]


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


class NotifierSettings(BaseModel):
    """``releases.notifier``: Flagger's global notifier (its ``-slack-*`` and ``-msteams-*`` flags), for the
    alerts of Canaries that name no ``analysis.alerts``; MS Teams when ``msteams_url`` is set, else Slack."""

    model_config = ConfigDict(extra="forbid")

    slack_url: str = Field("", repr=False, description="Slack hook URL (-slack-url)")
    slack_token: str = Field("", repr=False, description="Slack bot token, sent as a bearer token (-slack-token)")
    slack_proxy_url: str = Field("", description="Slack proxy URL (-slack-proxy-url)")
    slack_user: str = Field("flagger", description="Slack user name (-slack-user)")
    slack_channel: str = Field("", description="Slack channel (-slack-channel)")
    msteams_url: str = Field("", repr=False, description="MS Teams incoming webhook URL (-msteams-url)")
    msteams_proxy_url: str = Field("", description="MS Teams proxy URL (-msteams-proxy-url)")

    @model_validator(mode="after")
    def _complete(self) -> NotifierSettings:
        # Flagger starts without alerts (a log line) when these are missing; a configuration error says so
        if self.slack_url and not self.msteams_url and not (self.slack_user and self.slack_channel):
            raise ValueError("slack_url needs slack_user and slack_channel (Flagger sends nothing without them)")
        return self


class ReleasesSettings(BaseModel):
    """``releases``: Flagger's controller flags that matter here, and the load tester's."""

    model_config = ConfigDict(extra="forbid")

    loadtester: LoadTesterSettings = Field(default_factory=LoadTesterSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    include_label_prefix: list[str] = Field(
        default_factory=list, description="prefixes of the target's labels and annotations copied to the primary "
                                          "and of tracked configs' labels to their copies; '*' for all "
                                          "(-include-label-prefix; none by default, as Flagger)")
    cluster_name: str = Field("", description="a Cluster field in every alert (-cluster-name)")
    event_webhook: str = Field("", description="where every Canary with no `event` webhook of its own sends "
                                               "its events (-event-webhook)")
