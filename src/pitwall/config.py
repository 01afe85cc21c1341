"""Settings: one validated tree from a YAML file, ``PITWALL_*`` env vars and flags.

Precedence: flags > environment > file > defaults. Environment variables
nest with ``__``: ``PITWALL_STORAGE__RETENTION=30d``. Every validation error
names its key: ``storage.retention: not a valid duration string: 'abc'``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.alerting.rules.settings import AlertingSettings, RulesSettings
from pitwall.backup.settings import BackupSettings
from pitwall.chaos.settings import ChaosSettings
from pitwall.core.durations import DurationMs
from pitwall.core.errors import ConfigError
from pitwall.core.limits import LimitsSettings
from pitwall.core.listen import split_listen
from pitwall.core.rbac import Binding, Grant, RBACSettings
from pitwall.core.settings import AuditSettings, OIDCSettings, OtlpGrpcSettings
from pitwall.core.tenancy import ANY_TENANT, DEFAULT_TENANT, Principal, tenant_problem
from pitwall.incidents.settings import IncidentsSettings
from pitwall.logs.settings import LogsSettings
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.releases.settings import ReleasesSettings
from pitwall.traces.settings import TracesSettings
from pitwall.ui.settings import UISettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageSettings(_Section):
    retention: DurationMs = Field(15 * 86_400_000, description="how long samples are kept, e.g. 15d; 0 keeps them")
    block_duration: DurationMs = Field(2 * 3_600_000, gt=0)
    head_max_samples: int = Field(2_000_000, gt=0)
    head_max_age: DurationMs = Field(15 * 60_000, gt=0)
    fsync: bool = True
    duckdb_memory_limit: str = "1GB"

    @model_validator(mode="after")
    def _retention_covers_block(self) -> StorageSettings:
        if self.retention and self.retention < self.block_duration:
            raise ValueError("retention must be at least the block duration")
        return self


class StateSettings(_Section):
    """The revisioned state store under the control plane (Kubernetes objects and what follows)."""

    backend: Literal["sqlite", "etcd", "postgres"] = Field(
        "sqlite", description="sqlite (embedded, in data_dir), etcd or postgres")
    endpoints: list[str] = Field(default_factory=list, description="etcd client URLs, e.g. http://127.0.0.1:2379")
    dsn: str = Field("", description="PostgreSQL connection string, e.g. postgresql://pitwall@db:5432/pitwall; "
                                     "keep the password out of it with PGPASSWORD or PGPASSFILE")
    compact_interval: DurationMs = Field(300_000, ge=0, description="history compaction period; 0 turns it off")
    election_ttl: DurationMs = Field(10_000, ge=2_000, description="controller leader lease (several servers, one etcd)")

    @model_validator(mode="after")
    def _etcd_needs_endpoints(self) -> StateSettings:
        if self.backend == "etcd" and not self.endpoints:
            raise ValueError("the etcd backend needs state.endpoints")
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("the postgres backend needs state.dsn")
        for url in self.endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
        return self


class RetryBudgetSettings(_Section):
    """Linkerd's ServiceProfile ``retryBudget``, with its defaults."""

    retry_ratio: float = Field(0.2, ge=0, description="retries as a share of the requests in the window")
    min_retries_per_second: float = Field(10.0, ge=0, description="retries allowed a second on top")
    ttl: DurationMs = Field(10_000, gt=0, description="the window the ratio is counted over")

    def as_tuple(self) -> tuple[float, float, float]:
        return self.retry_ratio, self.min_retries_per_second, self.ttl / 1000


class KubeSettings(_Section):
    """The control plane: Kubernetes API, controllers, node and service proxy (on by default)."""

    enabled: bool = Field(True, description="false runs pitwall as telemetry only, without the control plane")
    node_name: str = Field("", description="this server's Node (default: the host name); unique per server")
    pod_cidr: str = Field("", description="this node's pod addresses, inside 127.42.0.0/16 (default: all of it); "
                                          "servers sharing an etcd on one machine need disjoint ranges")
    service_cidr: str = Field("127.96.0.0/16", description="the ClusterIPs Services get (kube-apiserver's "
                                                           "--service-cluster-ip-range), inside 127.0.0.0/8: pitwall "
                                                           "serves them on loopback")
    mesh_mtls: bool = Field(True, description="hops to pods on other nodes go over mutual TLS through their "
                                              "node's inbound mesh listener (pitwall's CA, SPIFFE identities)")
    mesh_inbound_port: int = Field(0, ge=0, le=65535, description="this node's mutual-TLS inbound mesh port on "
                                                                  "127.0.0.1 (0: any free port, advertised on the "
                                                                  "Node)")
    mesh_leaf_ttl_s: float = Field(86400.0, gt=60, description="lifetime of workload certificates (rotated at 2/3)")
    mesh_retry_budget: RetryBudgetSettings | None = Field(
        None, description="Linkerd's retry budget on every destination of the mesh: retries add at most "
                          "retry_ratio of the requests of the last ttl, plus min_retries_per_second "
                          "(unset: only the routes' attempts and maxRetries bound retries)")
    mesh_access_log: Literal["off", "text", "json"] = Field(
        "off", description="Envoy's access log of every mesh request into the log store, mesh-wide unless a "
                           "Telemetry object says otherwise (Istio's accessLogEncoding TEXT or JSON; off as in "
                           "Istio's default profile); also the encoding a Telemetry's envoy provider uses")
    mesh_egress_listener: bool = Field(True, description="each pod gets an egress listener on <pod IP>:15001, "
                                                         "handed to its containers in HTTP_PROXY/http_proxy, so "
                                                         "their HTTP calls reach the mesh as that pod")
    chaos_preload: bool = Field(True, description="put pitwall's chaos shim in every container's LD_PRELOAD, so "
                                                  "TimeChaos and IOChaos can act on their processes (not on "
                                                  "static binaries); false: both report the shim is off")
    encryption_config: Path | None = Field(
        None, description="an EncryptionConfiguration file (apiserver.config.k8s.io/v1, as kube-apiserver's "
                          "--encryption-provider-config); unset: Secrets are sealed with aesgcm under "
                          "$PITWALL_SECRETS_KEY or data_dir/secrets.key (made once)")
    watch_cache: bool = Field(True, description="serve lists and watches from memory, fed by one watch of the state "
                                                "store (kube-apiserver's watch cache); false reads the store each time")

    @field_validator("pod_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if v:
            net = ipaddress.ip_network(v, strict=True)
            if not net.subnet_of(ipaddress.ip_network("127.42.0.0/16")):  # type: ignore[arg-type]
                raise ValueError(f"{v} is not inside 127.42.0.0/16")
        return v

    @field_validator("service_cidr")
    @classmethod
    def _service_cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v, strict=True)
        if not net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
            raise ValueError(f"{v} is not inside 127.0.0.0/8")
        return v


class ConsulSettings(_Section):
    """Consul's HTTP API on pitwall's port."""

    max_blocking_queries: int = Field(
        10_000, gt=0, le=100_000,
        description="blocking queries held open at once (beyond it: 429); the HTTP server's connection limit "
                    "is this plus 1000 for other requests")


class GatewaySettings(_Section):
    """The API gateway: a public proxy configured by a Kong 3.x declarative file (off while ``listen`` is unset)."""

    listen: str | None = Field(None, description="host:port of the public proxy, e.g. 127.0.0.1:8000")
    declarative_config: Path | None = Field(None, description="a Kong 3.x declarative file (_format_version 3.0)")
    native: bool = Field(True, description="serve plain-HTTP connections with the C extension when it is built "
                                           "(false: the pure-Python path for every connection)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            split_listen(v)
        return v


def _http_url(v: str) -> str:
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"want an http(s) URL, got {v!r}")
    return v.rstrip("/")


class MetricsBackendSettings(_Section):
    """Metrics kept by an existing Prometheus-API engine (VictoriaMetrics, Prometheus, Mimir, Thanos)."""

    type: Literal["prometheus-api"] = "prometheus-api"
    write_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="remote-write endpoint, e.g. http://vm:8428/api/v1/write")
    query_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="the engine's Prometheus API root (the part before /api/v1), e.g. http://vm:8428")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every read and write")
    timeout: DurationMs = Field(30_000, gt=0, description="per request to the engine")
    batch_samples: int = Field(10_000, gt=0, le=1_000_000, description="samples per remote-write request")


class LogsBackendSettings(_Section):
    """Logs kept by an existing Loki-API engine (Grafana Loki, or another pitwall)."""

    type: Literal["loki-api"] = "loki-api"
    push_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="the engine's push endpoint, e.g. http://loki:3100/loki/api/v1/push")
    query_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="the engine's root (the part before /loki/api/v1), e.g. http://loki:3100")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every read and write")
    timeout: DurationMs = Field(30_000, gt=0, description="per request to the engine")
    batch_entries: int = Field(10_000, gt=0, le=1_000_000, description="log entries per push request")


class TracesBackendSettings(_Section):
    """Traces kept by an existing engine taking OTLP/HTTP and answering Tempo's API (Grafana Tempo, or a pitwall)."""

    type: Literal["otlp+tempo"] = "otlp+tempo"
    otlp_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="the engine's OTLP/HTTP traces endpoint, e.g. http://tempo:4318/v1/traces")
    query_url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="the engine's Tempo API root (the part before /api), e.g. http://tempo:3200")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every read and write")
    timeout: DurationMs = Field(30_000, gt=0, description="per request to the engine")
    batch_spans: int = Field(10_000, gt=0, le=1_000_000, description="spans per OTLP export request")


class BackendsSettings(_Section):
    """Telemetry kept elsewhere; absent: the embedded stores."""

    metrics: MetricsBackendSettings | None = None
    logs: LogsBackendSettings | None = None
    traces: TracesBackendSettings | None = None


class QuerySettings(_Section):
    timeout: DurationMs = Field(120_000, gt=0)
    max_samples: int = Field(50_000_000, gt=0)
    lookback_delta: DurationMs = Field(300_000, gt=0)
    max_points_per_series: int = Field(11_000, gt=0)


class GlobalSettings(_Section):
    """Prometheus' ``global`` section (defaults for scrape and rule configs)."""

    scrape_interval: str = "1m"
    scrape_timeout: str = "10s"
    evaluation_interval: str = "1m"
    rule_query_offset: str = "0s"
    external_labels: dict[str, str] = Field(default_factory=dict)


Scope = Literal["read", "write", "admin"]


def _tenant_id(v: str) -> str:
    problem = None if v == ANY_TENANT else tenant_problem(v)
    if problem:
        raise ValueError(problem)
    return v


MIN_TOKEN_LENGTH = 16


class AuthToken(_Section):
    """One bearer token: what it may do (scopes) and as which tenants (``X-Scope-OrgID``).

    The token is given inline (``token``) or as a file holding it (``token_file``, read at load: at
    start and on every reload). No message, ``repr`` or log line carries its value."""

    token: str | None = Field(None, min_length=MIN_TOKEN_LENGTH, repr=False)
    token_file: Path | None = Field(None, description="file holding the token (surrounding whitespace ignored)")
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read"]),
                                description="read | write | admin; [] for a token whose roles come from rbac.bindings")
    name: str = ""
    tenants: list[Annotated[str, AfterValidator(_tenant_id)]] | None = Field(
        None, description="tenants the token may use; '*' for any; unset: any for admin tokens, else 'default'")

    @field_validator("tenants")
    @classmethod
    def _some_tenant(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("name at least one tenant ('*' for any), or leave the key out")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> AuthToken:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token and token_file")
        if self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise ValueError(f"token_file: cannot read {self.token_file}: {reason}") from None
            if len(value) < MIN_TOKEN_LENGTH:
                raise ValueError(f"token_file: {self.token_file} holds {len(value)} characters; "
                                 f"a token needs at least {MIN_TOKEN_LENGTH}")
            self.token = value
        return self

    @property
    def secret(self) -> str:
        """The token itself (from ``token`` or ``token_file``)."""
        assert self.token is not None  # set by the validator
        return self.token

    def principal(self, bindings: list[Binding] | None = None) -> Principal:
        """The principal the auth middleware binds requests with this token to; ``bindings`` naming the
        token (``kind: token``, its ``name``) add their roles."""
        if self.tenants is None:
            tenants = None if "admin" in self.scopes else frozenset({DEFAULT_TENANT})
        else:
            tenants = None if ANY_TENANT in self.tenants else frozenset(self.tenants)
        grants = tuple(Grant(b.role, b.tenants) for b in bindings or () if self.name and b.names("token", self.name, ()))
        return Principal(self.name, frozenset(self.scopes), tenants, grants)


_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?")
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _allowed_host(v: str) -> str:
    h = v.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h == "*":
        return h
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(h):
        raise ValueError(f"expected a host name or IP address without scheme, port or path "
                         f"('*.example.com' for its subdomains, '*' for any), got {v!r}")
    return h.rstrip(".")


def _allowed_origin(v: str) -> str:
    o = v.strip().lower().rstrip("/")
    if not _ORIGIN.fullmatch(o):
        raise ValueError(f"expected an origin such as https://grafana.example.com:3000 "
                         f"(scheme, host, optional port; no path), got {v!r}")
    return o


class Settings(BaseSettings):
    """The whole configuration of one pitwall server."""

    model_config = SettingsConfigDict(
        env_prefix="PITWALL_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    listen: str = "127.0.0.1:9900"
    data_dir: Path = Path("./pitwall-data")
    insecure: bool = False
    auth_tokens: list[AuthToken] = Field(default_factory=list)
    allowed_hosts: list[Annotated[str, AfterValidator(_allowed_host)]] | None = Field(
        None, description="host names the server answers for; unset: localhost names and the listen "
                          "address on a loopback listen, any name otherwise")
    allowed_origins: list[Annotated[str, AfterValidator(_allowed_origin)]] = Field(
        default_factory=list, description="other sites whose pages may send writes and open websockets")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    audit: AuditSettings = Field(default_factory=AuditSettings)
    rbac: RBACSettings = Field(default_factory=RBACSettings)
    oidc: OIDCSettings | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    storage: StorageSettings = Field(default_factory=StorageSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    consul: ConsulSettings = Field(default_factory=ConsulSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    backends: BackendsSettings = Field(default_factory=BackendsSettings)
    traces: TracesSettings = Field(default_factory=TracesSettings)
    otlp_grpc: OtlpGrpcSettings = Field(default_factory=OtlpGrpcSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    ui: UISettings = Field(default_factory=UISettings)
    global_: GlobalSettings = Field(default_factory=GlobalSettings, alias="global")
    scrape_configs: list[dict[str, Any]] = Field(default_factory=list)
    scrape_config_files: list[str] = Field(default_factory=list)
    rule_files: list[str] = Field(default_factory=list, description="globs of Prometheus rule files")
    rules: RulesSettings = Field(default_factory=RulesSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    alertmanager_config: Path | None = Field(None, description="Alertmanager configuration file (notifications)")
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    incidents: IncidentsSettings = Field(default_factory=IncidentsSettings)
    pipelines: PipelinesSettings = Field(default_factory=PipelinesSettings)
    chaos: ChaosSettings = Field(default_factory=ChaosSettings)
    releases: ReleasesSettings = Field(default_factory=ReleasesSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    config_file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        host, _port = split_listen(self.listen)
        if not self.insecure and not self.auth_tokens and self.oidc is None and not _is_loopback(host):
            raise ValueError(
                f"listen: refusing to listen on non-loopback address {host!r} without auth_tokens; "
                "configure bearer tokens or pass --insecure"
            )
        grpc_host, _ = split_listen(self.otlp_grpc.listen)
        if self.otlp_grpc.enabled and not self.insecure and not self.auth_tokens and not _is_loopback(grpc_host):
            raise ValueError(
                f"otlp_grpc.listen: refusing to listen on non-loopback address {grpc_host!r} without "
                "auth_tokens; configure bearer tokens or pass --insecure"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        seen: dict[str, int] = {}
        for i, t in enumerate(self.auth_tokens):
            if t.secret in seen:
                raise ValueError(f"auth_tokens[{i}].token: the same token as auth_tokens[{seen[t.secret]}]")
            seen[t.secret] = i
        return self

    def host_allow_list(self) -> frozenset[str] | None:
        """The host names answered (None: any): ``allowed_hosts``, else the localhost names and the
        listen address when listening on loopback; a non-loopback listen answers any name by default,
        as the names clients use for it (DNS, containers, load balancers) cannot be guessed."""
        if self.allowed_hosts is not None:
            return frozenset(self.allowed_hosts)
        host = self.host.lower()
        if not _is_loopback(host):
            return None
        return frozenset({*LOCAL_HOSTS, host})

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _format_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        parts: list[str] = []
        for p in err["loc"]:
            if isinstance(p, int):
                parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
            else:
                parts.append("global" if p == "global_" else str(p))
        key = ".".join(parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        if msg.startswith(f"{key}:"):
            lines.append(msg)
        elif key:
            lines.append(f"{key}: {msg}")
        else:
            lines.append(msg)
    return "\n".join(lines)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the line (which may hold a token)."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{e.problem or e.context or 'syntax error'}{where}"
    return type(e).__name__


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {_yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from file, environment and explicit overrides (flags)."""
    file_data = read_config_file(config_file) if config_file else {}
    flags = {k: v for k, v in overrides.items() if v is not None}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        s = _Loaded(**flags)
    except ValidationError as e:
        # Not chained: a ValidationError's text quotes the input, tokens included, and a traceback would show it.
        raise ConfigError(_format_error(e)) from None
    s.config_file = config_file
    return s
