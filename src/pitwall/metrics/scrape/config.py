"""Prometheus ``scrape_configs`` as strict pydantic models.

Keys, defaults and checks follow Prometheus' ``config/config.go``: unknown keys
are rejected, ``scrape_interval``/``scrape_timeout`` fall back to the ``global``
section (1m / 10s), the timeout may not exceed the interval, job names are
unique. ``parse_scrape_configs`` turns every problem into a ``ConfigError``
whose message starts with the key path, e.g.
``scrape_configs[0].scrape_timeout: scrape timeout greater than scrape interval ...``.

Durations are kept as integer milliseconds (``core.durations`` parses and
renders them as Prometheus does, ``1m30s``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import ConfigError
from pitwall.core.httpconfig import HTTPClientConfig, http_config_problems
from pitwall.metrics.relabel import RelabelConfig

__all__ = [
    "DEFAULT_SCRAPE_PROTOCOLS",
    "SCRAPE_PROTOCOL_HEADERS",
    "FileSDConfig",
    "GlobalScrapeDefaults",
    "KubernetesNamespaces",
    "KubernetesSDConfig",
    "KubernetesSelector",
    "ScrapeConfig",
    "StaticConfig",
    "parse_scrape_configs",
    "parse_size",
]


def _duration_field(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f'not a valid duration string: "{v}"')
    if isinstance(v, int) and v == 0:
        return 0
    if isinstance(v, str):
        return parse_duration_ms(v)
    raise ValueError(f'not a valid duration string: "{v}"')


# A duration in integer milliseconds, written as a Prometheus duration string.
DurationMs = Annotated[int, BeforeValidator(_duration_field)]

_SIZE_RE = re.compile(r"(\d+)(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB|EB|EiB)?\Z")
_SIZE_MULT = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}


def parse_size(v: Any) -> int:
    """Parse ``body_size_limit`` ("10MB", "512KiB", 0): base-2 units as Go's units.Base2Bytes."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            raise ValueError("size must not be negative")
        return v
    if not isinstance(v, str):
        raise ValueError(f"invalid size {v!r}")
    m = _SIZE_RE.match(v.strip())
    if m is None:
        raise ValueError(f'invalid size "{v}"')
    unit = (m.group(2) or "")[:1]
    return int(m.group(1)) * _SIZE_MULT[unit]


SizeBytes = Annotated[int, BeforeValidator(parse_size)]

ScrapeProtocol = Literal[
    "PrometheusProto",
    "PrometheusText0.0.4",
    "PrometheusText1.0.0",
    "OpenMetricsText0.0.1",
    "OpenMetricsText1.0.0",
]

SCRAPE_PROTOCOL_HEADERS: dict[str, str] = {
    "PrometheusProto": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
}

DEFAULT_SCRAPE_PROTOCOLS: tuple[str, ...] = (
    "OpenMetricsText1.0.0",
    "OpenMetricsText0.0.1",
    "PrometheusText1.0.0",
    "PrometheusText0.0.4",
)

DEFAULT_SCRAPE_INTERVAL_MS = 60_000
DEFAULT_SCRAPE_TIMEOUT_MS = 10_000

_FILE_SD_NAME = re.compile(r"[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)\Z")


def _check_protocols(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    if len(set(v)) != len(v):
        raise ValueError(f"duplicated protocol in scrape_protocols, got {v}")
    if "PrometheusProto" in v:
        # Native histograms / protobuf exposition are not parsed by pitwall.
        raise ValueError("PrometheusProto is not supported by pitwall's scraper")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticConfig(_Strict):
    """A target group: ``targets`` (host:port) sharing ``labels``."""

    targets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for t in v:
            if "/" in t:
                raise ValueError(f'"{t}" is not a valid hostname')
        return v


class FileSDConfig(_Strict):
    """Targets read from JSON/YAML files (globs allowed in the last path element)."""

    files: list[str]
    refresh_interval: DurationMs = 300_000

    @field_validator("files")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for name in v:
            if _FILE_SD_NAME.match(name) is None:
                raise ValueError(f'path name "{name}" is not valid for file discovery')
        return v


class KubernetesNamespaces(_Strict):
    """Which namespaces a ``kubernetes_sd_configs`` entry watches (all when ``names`` is empty)."""

    own_namespace: bool = False
    names: list[str] = Field(default_factory=list)


class KubernetesSelector(_Strict):
    """A label and/or field selector applied to the objects of ``role``."""

    role: str
    label: str = ""
    field: str = ""


class KubernetesSDConfig(HTTPClientConfig):
    """Prometheus' ``kubernetes_sd_config``, answered from pitwall's own Kubernetes API (in process).

    Only ``role: pod`` is served; ``api_server`` and ``kubeconfig_file`` are
    rejected, since the objects come from this pitwall, not a remote cluster.
    The HTTP client keys are accepted (a copied config loads) and unused.
    """

    role: Literal["pod", "node", "service", "endpoints", "endpointslice", "ingress"]
    api_server: str | None = None
    kubeconfig_file: str | None = None
    namespaces: KubernetesNamespaces = Field(default_factory=KubernetesNamespaces)
    selectors: list[KubernetesSelector] = Field(default_factory=list)
    attach_metadata: dict[str, bool] = Field(default_factory=dict)

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v != "pod":
            raise ValueError(f'role "{v}" is not supported by pitwall\'s in-process discovery (only "pod")')
        return v

    @field_validator("api_server", "kubeconfig_file")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("pitwall discovers pods from its own Kubernetes API; "
                             "api_server and kubeconfig_file are not supported")
        return v


class GlobalScrapeDefaults(_Strict):
    """The scrape-related part of Prometheus' ``global`` section (other keys accepted, unused)."""

    scrape_interval: DurationMs | None = None
    scrape_timeout: DurationMs | None = None
    scrape_protocols: list[ScrapeProtocol] | None = None
    body_size_limit: SizeBytes = 0
    sample_limit: int = Field(default=0, ge=0)
    target_limit: int = Field(default=0, ge=0)
    label_limit: int = Field(default=0, ge=0)
    label_name_length_limit: int = Field(default=0, ge=0)
    label_value_length_limit: int = Field(default=0, ge=0)
    keep_dropped_targets: int = Field(default=0, ge=0)
    metric_name_validation_scheme: Literal["utf8", "legacy"] = "utf8"
    metric_name_escaping_scheme: str | None = None
    # Keys of ``global`` that concern other parts of the server.
    evaluation_interval: DurationMs | None = None
    rule_query_offset: DurationMs | None = None
    external_labels: dict[str, str] = Field(default_factory=dict)
    query_log_file: str | None = None
    scrape_failure_log_file: str | None = None

    _check_protocols = field_validator("scrape_protocols")(_check_protocols)

    def interval_ms(self) -> int:
        return self.scrape_interval if self.scrape_interval is not None else DEFAULT_SCRAPE_INTERVAL_MS

    def timeout_ms(self) -> int:
        """Global timeout: 10s, but never above the global interval."""
        if self.scrape_timeout is not None:
            return self.scrape_timeout
        return min(DEFAULT_SCRAPE_TIMEOUT_MS, self.interval_ms())


class ScrapeConfig(HTTPClientConfig):
    """One ``scrape_configs`` entry. After ``parse_scrape_configs`` interval/timeout are set.

    The HTTP client keys (auth, TLS, proxy) are inline, as in Prometheus.
    """

    job_name: str
    honor_labels: bool = False
    honor_timestamps: bool = True
    track_timestamps_staleness: bool = False
    scrape_interval: DurationMs | None = None
    scrape_timeout: DurationMs | None = None
    scrape_protocols: list[ScrapeProtocol] | None = None
    fallback_scrape_protocol: ScrapeProtocol | None = None
    metrics_path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    params: dict[str, list[str]] = Field(default_factory=dict)
    enable_compression: bool = True
    body_size_limit: SizeBytes | None = None
    sample_limit: int | None = Field(default=None, ge=0)
    target_limit: int | None = Field(default=None, ge=0)
    label_limit: int | None = Field(default=None, ge=0)
    label_name_length_limit: int | None = Field(default=None, ge=0)
    label_value_length_limit: int | None = Field(default=None, ge=0)
    keep_dropped_targets: int | None = Field(default=None, ge=0)
    metric_name_validation_scheme: Literal["utf8", "legacy"] | None = None
    metric_name_escaping_scheme: str | None = None
    static_configs: list[StaticConfig] = Field(default_factory=list)
    file_sd_configs: list[FileSDConfig] = Field(default_factory=list)
    kubernetes_sd_configs: list[KubernetesSDConfig] = Field(default_factory=list)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    # Native-histogram knobs: accepted so real configs load; pitwall scrapes classic text formats.
    scrape_classic_histograms: bool = False
    always_scrape_classic_histograms: bool = False
    convert_classic_histograms_to_nhcb: bool = False
    native_histogram_bucket_limit: int = 0
    native_histogram_min_bucket_factor: float = 0.0

    _check_protocols = field_validator("scrape_protocols")(_check_protocols)

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, v: str) -> str:
        if v == "":
            raise ValueError("job_name is empty")
        return v

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            # Prometheus builds the URL from scheme + address + path; a relative path is a config bug.
            raise ValueError(f'metrics_path must start with "/", got "{v}"')
        return v

    @property
    def interval_ms(self) -> int:
        """Scrape interval; Prometheus' default (1m) when unresolved."""
        return self.scrape_interval if self.scrape_interval is not None else DEFAULT_SCRAPE_INTERVAL_MS

    @property
    def timeout_ms(self) -> int:
        """Scrape timeout; 10s capped at the interval when unresolved."""
        if self.scrape_timeout is not None:
            return self.scrape_timeout
        return min(DEFAULT_SCRAPE_TIMEOUT_MS, self.interval_ms)

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.scrape_protocols) if self.scrape_protocols else DEFAULT_SCRAPE_PROTOCOLS

    @property
    def name_scheme(self) -> Literal["utf8", "legacy"]:
        return self.metric_name_validation_scheme or "utf8"


def _loc_path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _messages(prefix: str, err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = _loc_path(prefix, loc)
        if e["type"] == "extra_forbidden":
            msg = f"field {loc[-1]} not found"
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {msg}")
    return lines


def _global(global_defaults: GlobalScrapeDefaults | Mapping[str, Any] | None) -> GlobalScrapeDefaults:
    if isinstance(global_defaults, GlobalScrapeDefaults):
        g = global_defaults
    else:
        try:
            g = GlobalScrapeDefaults.model_validate(dict(global_defaults or {}))
        except ValidationError as e:
            raise ConfigError("\n".join(_messages("global", e))) from e
    if g.scrape_timeout is not None and g.scrape_timeout > g.interval_ms():
        raise ConfigError("global.scrape_timeout: global scrape timeout greater than scrape interval")
    return g


def _resolve(cfg: ScrapeConfig, g: GlobalScrapeDefaults) -> ScrapeConfig:
    """Fill unset keys from ``global`` as Prometheus' ``ScrapeConfig.Validate`` does."""
    upd: dict[str, Any] = {}
    interval = cfg.scrape_interval if cfg.scrape_interval is not None else g.interval_ms()
    upd["scrape_interval"] = interval
    if cfg.scrape_timeout is None:
        gt = g.timeout_ms()
        upd["scrape_timeout"] = interval if gt > interval else gt
    for key in (
        "body_size_limit",
        "sample_limit",
        "target_limit",
        "label_limit",
        "label_name_length_limit",
        "label_value_length_limit",
        "keep_dropped_targets",
        "metric_name_validation_scheme",
        "metric_name_escaping_scheme",
    ):
        if getattr(cfg, key) is None:
            upd[key] = getattr(g, key)
    if cfg.scrape_protocols is None:
        upd["scrape_protocols"] = list(g.scrape_protocols or DEFAULT_SCRAPE_PROTOCOLS)
    return cfg.model_copy(update=upd)


def parse_scrape_configs(
    raw: Sequence[Mapping[str, Any]],
    global_defaults: GlobalScrapeDefaults | Mapping[str, Any] | None = None,
) -> list[ScrapeConfig]:
    """Validate ``scrape_configs`` entries, apply global defaults, and run cross checks.

    Raises ``ConfigError`` listing every problem, one per line, each starting
    with its key path (``scrape_configs[2].relabel_configs[0].action: ...``).
    """
    g = _global(global_defaults)
    problems: list[str] = []
    out: list[ScrapeConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        prefix = f"scrape_configs[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{prefix}: expected a mapping, got {type(entry).__name__}")
            continue
        try:
            cfg = _resolve(ScrapeConfig.model_validate(dict(entry)), g)
        except ValidationError as e:
            problems.extend(_messages(prefix, e))
            continue
        problems.extend(_cross_checks(prefix, cfg, seen, i))
        out.append(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def _cross_checks(prefix: str, cfg: ScrapeConfig, seen: dict[str, int], i: int) -> list[str]:
    problems: list[str] = []
    if cfg.job_name in seen:
        problems.append(f'{prefix}.job_name: found multiple scrape configs with job name "{cfg.job_name}"')
    else:
        seen[cfg.job_name] = i
    if cfg.timeout_ms > cfg.interval_ms:
        problems.append(
            f"{prefix}.scrape_timeout: scrape timeout greater than scrape interval "
            f'for scrape config with job name "{cfg.job_name}"'
        )
    if cfg.interval_ms == 0:
        problems.append(f"{prefix}.scrape_interval: scrape interval cannot be 0")
    for key, msg in http_config_problems(cfg):
        problems.append(f"{prefix}.{key}: {msg}")
    if cfg.name_scheme == "legacy":
        for key in ("relabel_configs", "metric_relabel_configs"):
            for j, rc in enumerate(getattr(cfg, key)):
                try:
                    rc.validate_names("legacy")
                except ValueError as e:
                    problems.append(f"{prefix}.{key}[{j}]: {e}")
    return problems
