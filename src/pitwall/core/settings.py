"""Settings sections of core's parts, apart from the parts themselves.

``pitwall.config`` builds its ``Settings`` from these; keeping them here (pydantic
only) lets the config and the CLI load without gRPC, httpx, FastAPI or the
JWT library that the audit log, the OTLP/gRPC receiver and OIDC import. Each
is re-exported by its part's module under the same name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitwall.core.listen import split_listen

__all__ = ["AuditSettings", "OIDCSettings", "OtlpGrpcSettings"]


class AuditSettings(BaseModel):
    """The ``audit`` section."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="record writes and refused requests in the audit tenant")
    queue_size: int = Field(10_000, gt=0, description="entries waiting for the log store; more are dropped")


class OtlpGrpcSettings(BaseModel):
    """The ``otlp_grpc:`` section: OTLP/gRPC receiver for traces, metrics and logs."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    listen: str = "127.0.0.1:4317"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v


class OIDCSettings(BaseModel):
    """The ``oidc`` section."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(pattern=r"^https?://", description="the provider's issuer URL, exactly as in its tokens")
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, repr=False)
    client_secret_file: Path | None = None
    audiences: list[str] | None = Field(None, description="accepted 'aud' values of API bearer tokens; "
                                                          "unset: the client ID")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    groups_claim: str = "groups"
    username_claim: str = "sub"
    leeway: float = Field(30.0, ge=0, le=300, description="seconds of clock skew allowed on exp/nbf/iat")
    jwks_refresh: float = Field(3600.0, gt=0, description="seconds between JWKS refreshes")
    session_ttl: float = Field(8 * 3600.0, gt=0, description="seconds a UI session lasts")
    redirect_url: str | None = Field(None, description="the callback URL registered with the provider; "
                                                       "unset: <this server>/auth/callback as requested")

    @model_validator(mode="after")
    def _secret(self) -> OIDCSettings:
        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError("set at most one of client_secret and client_secret_file")
        if self.client_secret_file is not None:
            try:
                self.client_secret = self.client_secret_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise ValueError(f"client_secret_file: cannot read {self.client_secret_file}: {reason}") from None
        if "openid" not in self.scopes:
            raise ValueError("scopes: must include 'openid'")
        return self
