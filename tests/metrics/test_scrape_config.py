"""scrape_configs parsing: defaults, global fallbacks, errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.core.durations import format_duration_ms as format_duration
from pitwall.core.durations import parse_duration_ms as parse_duration
from pitwall.core.errors import ConfigError
from pitwall.metrics.scrape.config import GlobalScrapeDefaults, parse_scrape_configs, parse_size


@pytest.mark.parametrize(
    ("text", "ms"),
    [("15s", 15_000), ("1m30s", 90_000), ("1h", 3_600_000), ("100ms", 100), ("1d", 86_400_000), ("1w", 604_800_000), ("1y", 31_536_000_000), ("0", 0), ("0s", 0)],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "15", "1.5s", "s", "1m1h", "-1s", "1 s"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("ms", "text"), [(0, "0s"), (90_000, "1m30s"), (60_000, "1m"), (10_000, "10s"), (1500, "1s500ms"), (86_400_000, "1d")])
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_sizes() -> None:
    assert parse_size("10MB") == 10 << 20
    assert parse_size("512KiB") == 512 << 10
    assert parse_size(0) == 0


def test_defaults() -> None:
    [c] = parse_scrape_configs([{"job_name": "node", "static_configs": [{"targets": ["a:9100"]}]}])
    assert (c.scrape_interval, c.scrape_timeout) == (60_000, 10_000)
    assert (c.metrics_path, c.scheme, c.honor_labels, c.honor_timestamps) == ("/metrics", "http", False, True)
    assert c.relabel_configs == [] and c.sample_limit == 0
    assert c.scrape_protocols == ["OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"]


def test_global_defaults_apply() -> None:
    g = {"scrape_interval": "15s", "scrape_timeout": "5s", "sample_limit": 100, "external_labels": {"dc": "x"}}
    a, b = parse_scrape_configs([{"job_name": "a"}, {"job_name": "b", "scrape_interval": "30s", "sample_limit": 7}], g)
    assert (a.scrape_interval, a.scrape_timeout, a.sample_limit) == (15_000, 5_000, 100)
    assert (b.scrape_interval, b.scrape_timeout, b.sample_limit) == (30_000, 5_000, 7)


def test_timeout_capped_by_short_interval() -> None:
    # Global timeout (10s) above the job's interval: the interval becomes the timeout.
    [c] = parse_scrape_configs([{"job_name": "a", "scrape_interval": "5s"}])
    assert c.scrape_timeout == 5_000
    [c] = parse_scrape_configs([{"job_name": "a"}], GlobalScrapeDefaults.model_validate({"scrape_interval": "2s"}))
    assert c.scrape_timeout == 2000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([{"job_name": "a", "scrape_interval": "5s", "scrape_timeout": "10s"}], 'scrape_configs[0].scrape_timeout: scrape timeout greater than scrape interval for scrape config with job name "a"'),
        ([{"job_name": "a"}, {"job_name": "a"}], 'scrape_configs[1].job_name: found multiple scrape configs with job name "a"'),
        ([{"job_name": ""}], "scrape_configs[0].job_name: job_name is empty"),
        ([{"scrape_interval": "1m"}], "scrape_configs[0].job_name: Field required"),
        ([{"job_name": "a", "scrape_interval": "1minute"}], 'scrape_configs[0].scrape_interval: not a valid duration string: "1minute"'),
        ([{"job_name": "a", "unknown_key": 1}], "scrape_configs[0].unknown_key: field unknown_key not found"),
        ([{"job_name": "a", "scheme": "ftp"}], "scrape_configs[0].scheme:"),
        ([{"job_name": "a", "relabel_configs": [{"action": "hashmod", "target_label": "x"}]}], "scrape_configs[0].relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus"),
        ([{"job_name": "a", "metric_relabel_configs": [{}, {"action": "bogus"}]}], 'scrape_configs[0].metric_relabel_configs[1].action: unknown relabel action "bogus"'),
        ([{"job_name": "a", "static_configs": [{"targets": ["http://x:1"]}]}], 'scrape_configs[0].static_configs[0].targets: "http://x:1" is not a valid hostname'),
        ([{"job_name": "a", "file_sd_configs": [{"files": ["foo/*/x.json"]}]}], "scrape_configs[0].file_sd_configs[0].files: path name"),
        ([{"job_name": "a", "file_sd_configs": [{"files": ["x.txt"]}]}], 'path name "x.txt" is not valid for file discovery'),
        ([{"job_name": "a", "bearer_token": "t", "basic_auth": {"username": "u"}}], "scrape_configs[0].basic_auth: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"),
        ([{"job_name": "a", "authorization": {"type": "Basic", "credentials": "x"}}], "scrape_configs[0].authorization.type:"),
        ([{"job_name": "a", "scrape_protocols": ["PrometheusText0.0.4", "PrometheusText0.0.4"]}], "scrape_configs[0].scrape_protocols: duplicated protocol"),
        ([{"job_name": "a", "sample_limit": -1}], "scrape_configs[0].sample_limit:"),
        ([{"job_name": "a", "metric_name_validation_scheme": "legacy", "relabel_configs": [{"target_label": "bad-name"}]}], "scrape_configs[0].relabel_configs[0]: \"bad-name\" is invalid 'target_label' for replace action"),
    ],
)
def test_errors_name_the_key(raw: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_scrape_configs(raw)
    assert expected in ei.value.message


def test_all_problems_reported_one_per_line() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_scrape_configs([{"job_name": "a", "foo": 1}, {"job_name": "b", "scrape_timeout": "2m"}])
    lines = ei.value.message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("scrape_configs[0].foo:")
    assert lines[1].startswith("scrape_configs[1].scrape_timeout:")


def test_global_errors() -> None:
    with pytest.raises(ConfigError, match=r"global\.scrape_timeout: global scrape timeout greater than scrape interval"):
        parse_scrape_configs([], {"scrape_interval": "5s", "scrape_timeout": "6s"})
    with pytest.raises(ConfigError, match=r"global\.bogus: field bogus not found"):
        parse_scrape_configs([], {"bogus": 1})


def test_full_entry_accepted() -> None:
    raw = {
        "job_name": "full",
        "honor_labels": True,
        "honor_timestamps": False,
        "scrape_interval": "15s",
        "scrape_timeout": "5s",
        "metrics_path": "/m",
        "scheme": "https",
        "params": {"module": ["http_2xx"]},
        "static_configs": [{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}],
        "file_sd_configs": [{"files": ["/etc/sd/*.json", "x.yml"], "refresh_interval": "30s"}],
        "relabel_configs": [{"source_labels": ["__address__"], "target_label": "host"}],
        "metric_relabel_configs": [{"regex": "go_.*", "source_labels": ["__name__"], "action": "drop"}],
        "sample_limit": 10, "label_limit": 5, "label_name_length_limit": 50, "label_value_length_limit": 100,
        "body_size_limit": "10MB",
        "basic_auth": {"username": "u", "password": "p"},
        "tls_config": {"insecure_skip_verify": True, "ca_file": "/ca.pem"},
        "enable_http2": False,
        "follow_redirects": False,
    }
    [c] = parse_scrape_configs([raw])
    assert c.body_size_limit == 10 << 20
    assert c.file_sd_configs[0].refresh_interval == 30_000
    assert c.tls_config.insecure_skip_verify
