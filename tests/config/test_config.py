"""Settings: good files load, bad files fail with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.metrics.wiring import scrape_configs_of

TESTDATA = Path(__file__).parent / "testdata"

EXPECTED_ERRORS = {
    "unknown_key.bad.yaml": "storage.retension: unknown setting",
    "bad_duration.bad.yaml": 'storage.retention: not a valid duration string: "30 days"',
    "retention_below_block.bad.yaml": "storage: retention must be at least the block duration",
    "public_listen.bad.yaml": "listen: refusing to listen on non-loopback address '0.0.0.0' without auth_tokens",
    "short_token.bad.yaml": "auth_tokens[0].token: String should have at least 16 characters",
    "bad_scope.bad.yaml": "auth_tokens[0].scopes[0]: Input should be 'read', 'write' or 'admin'",
    "negative_limit.bad.yaml": "limits.max_series_per_request: Input should be greater than 0",
    "not_a_mapping.bad.yaml": "top level must be a mapping",
    "tls_half.bad.yaml": "tls_cert_file and tls_key_file must be set together",
    "bad_tenant.bad.yaml": "auth_tokens[0].tenants[1]: invalid tenant ID 'a/b'",
    "empty_tenants.bad.yaml": "auth_tokens[0].tenants: name at least one tenant",
    "duplicate_token.bad.yaml": "auth_tokens[1].token: the same token as auth_tokens[0]",
    "bad_allowed_host.bad.yaml": "allowed_hosts[1]: expected a host name or IP address without scheme, port or path",
    "bad_allowed_origin.bad.yaml": "allowed_origins[0]: expected an origin such as https://grafana.example.com:3000",
}


@pytest.mark.parametrize("name", sorted(p.name for p in TESTDATA.glob("*.good.yaml")))
def test_good_files_load(name: str) -> None:
    s = load_settings(TESTDATA / name)
    scrape_configs_of(s)  # the embedded Prometheus sections validate too


def test_every_bad_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in TESTDATA.glob("*.bad.yaml")) == sorted(EXPECTED_ERRORS)


@pytest.mark.parametrize(("name", "message"), sorted(EXPECTED_ERRORS.items()))
def test_bad_files_name_the_key(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(TESTDATA / name)
    assert message in e.value.message


def test_values_and_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(TESTDATA / "full.good.yaml")
    assert s.storage.retention == 30 * 86_400_000
    assert s.query.timeout == 60_000
    monkeypatch.setenv("PITWALL_STORAGE__RETENTION", "7d")
    assert load_settings(TESTDATA / "full.good.yaml").storage.retention == 7 * 86_400_000  # env beats file
    s = load_settings(TESTDATA / "full.good.yaml", storage={"retention": "1d"})
    assert s.storage.retention == 86_400_000  # flags beat env


def test_scrape_config_errors_name_the_key() -> None:
    s = load_settings(scrape_configs=[{"job_name": "a", "scrape_interval": "5s", "scrape_timeout": "10s"}])
    with pytest.raises(ConfigError, match=r"scrape_configs\[0\]"):
        scrape_configs_of(s)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(TESTDATA / "nope.yaml")


def test_token_tenants_default_by_scope() -> None:
    s = load_settings(auth_tokens=[
        {"token": "r" * 16}, {"token": "a" * 16, "scopes": ["admin"]},
        {"token": "t" * 16, "tenants": ["team-a"]}, {"token": "s" * 16, "tenants": ["*"]}])
    read, admin, team, anyone = (t.principal() for t in s.auth_tokens)
    assert read.tenants == frozenset({"default"})  # a read or write token: the default tenant only
    assert admin.tenants is None  # an admin token: any tenant, as before
    assert team.tenants == frozenset({"team-a"}) and anyone.tenants is None


def test_allowed_hosts_default_from_the_listen_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().host_allow_list() == {"localhost", "127.0.0.1", "::1"}
    assert load_settings(listen="[::1]:9900").host_allow_list() == {"localhost", "127.0.0.1", "::1"}
    assert load_settings(listen="127.0.0.5:9900").host_allow_list() == {"localhost", "127.0.0.1", "::1",
                                                                          "127.0.0.5"}
    assert load_settings(listen="0.0.0.0:9900", insecure=True).host_allow_list() is None
    s = load_settings(TESTDATA / "full.good.yaml")
    assert s.host_allow_list() == {"localhost", "127.0.0.1", "::1", "pitwall.example.com", "*.pitwall.example.com"}
    monkeypatch.setenv("PITWALL_ALLOWED_HOSTS", '["pitwall.internal"]')
    assert load_settings(listen="0.0.0.0:9900", insecure=True).host_allow_list() == {"pitwall.internal"}
