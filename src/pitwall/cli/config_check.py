"""``pitwall config check FILE``: everything a server would load from a pitwall.yaml, checked offline.

The settings themselves (every key named in its error), then each file they
point at, with the loader the server uses for it: scrape configs, PromQL and
LogQL rule files, the Alertmanager file, the gateway's Kong declarative file, the encryption config,
the TLS pair and the dashboards folder (pitwall's YAML and Grafana's JSON). Output in promtool's shape
(``Checking X`` / ``SUCCESS`` / ``FAILED:``); exit 1 when anything fails.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pitwall.core.errors import ConfigError, PitwallError

Check = Callable[[], str]  # returns a one-line success note, raises a PitwallError (or OSError) with the problems


def check_config_file(path: Path) -> int:
    """Check ``path`` and what it names; print promtool-style results; return the exit code."""
    from pitwall.config import load_settings

    print(f"Checking {path}")
    try:
        settings = load_settings(path)
    except ConfigError as e:
        _failed(str(e))
        return 1
    print("  SUCCESS: settings are valid")
    print()
    failed = False
    for what, check in _checks(settings):
        print(f"Checking {what}")
        try:
            note = check()
        except (PitwallError, OSError, ValueError) as e:
            _failed(str(e))
            failed = True
            continue
        print(f"  SUCCESS: {note}")
        print()
    return 1 if failed else 0


def _failed(message: str) -> None:
    sys.stdout.flush()
    print("  FAILED:", file=sys.stderr)
    print(message, file=sys.stderr, flush=True)
    print()


def _resolve(settings: Any, path: Path) -> Path:
    """Relative paths are relative to pitwall.yaml's folder, as the server resolves them."""
    base = Path(settings.config_file).parent if settings.config_file else Path(".")
    return path if path.is_absolute() else base / path


def _checks(settings: Any) -> list[tuple[str, Check]]:
    out: list[tuple[str, Check]] = []
    if settings.scrape_configs:
        out.append(("scrape_configs", lambda: _scrape(settings)))
    from pitwall.alerting.rules.wiring import rule_files_of

    for language, files in rule_files_of(settings).items():
        for f in files:
            out.append((f"{f} ({language} rules)", functools.partial(_rules, f, language)))
    patterns = [*settings.rule_files, *settings.rules.logql_rule_files]
    if patterns and not any(rule_files_of(settings).values()):
        out.append(("rule_files", lambda: _raise(f"no file matches {', '.join(patterns)}")))
    if settings.alertmanager_config is not None:
        p = _resolve(settings, settings.alertmanager_config)
        out.append((f"{p} (alertmanager_config)", lambda: _alertmanager(p)))
    if settings.gateway.declarative_config is not None:
        p = _resolve(settings, settings.gateway.declarative_config)
        out.append((f"{p} (gateway.declarative_config)", lambda: _gateway(p)))
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        cert, key = _resolve(settings, settings.tls_cert_file), _resolve(settings, settings.tls_key_file)
        out.append((f"{cert} and {key} (tls_cert_file, tls_key_file)", lambda: _tls(cert, key)))
    if settings.kube.encryption_config is not None:
        p = _resolve(settings, settings.kube.encryption_config)
        out.append((f"{p} (kube.encryption_config)", lambda: _encryption(p)))
    if settings.ui.dashboards_dir is not None:
        d = _resolve(settings, settings.ui.dashboards_dir)
        out.append((f"{d} (ui.dashboards_dir)", lambda: _dashboards(d)))
    return out


def _raise(message: str) -> str:
    raise ConfigError(message)


def _scrape(settings: Any) -> str:
    from pitwall.metrics.wiring import scrape_configs_of

    jobs = scrape_configs_of(settings)
    return f"{len(jobs)} scrape jobs"


def _rules(path: str, language: str) -> str:
    from pitwall.alerting.rules.base import logql_check
    from pitwall.alerting.rules.manager import promql_check
    from pitwall.alerting.rules.rulefmt import parse_rule_file

    groups, errs = parse_rule_file(path, promql_check if language == "promql" else logql_check)
    if errs:
        raise ConfigError("\n".join(errs))
    return f"{sum(len(g.rules) for g in groups)} rules found"


def _alertmanager(path: Path) -> str:
    from pitwall.alerting.notify.config import load_config_file

    loaded = load_config_file(path)
    return f"{len(loaded.config.receivers)} receivers"


def _gateway(path: Path) -> str:
    from pitwall.traffic.gateway.declarative import load_declarative
    from pitwall.traffic.gateway.wiring import parse_config_text

    state = load_declarative(parse_config_text(path.read_bytes(), str(path)))
    return f"{len(state.services)} services, {len(state.routes)} routes"


def _encryption(path: Path) -> str:
    from pitwall.kube.encryption import load_encryption

    enc = load_encryption(path)
    return f"{len(enc.rules)} resource entries, Secrets {'encrypted' if enc.encrypts('', 'secrets') else 'plain'}"


def _tls(cert: Path, key: Path) -> str:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ConfigError(f"tls_cert_file/tls_key_file: {e.reason or e}") from None
    return "certificate and key load and match"


def _dashboards(folder: Path) -> str:
    from pitwall.ui.dashboards import parse_any

    if not folder.is_dir():
        raise ConfigError(f"ui.dashboards_dir: {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    problems = []
    for f in files:
        try:
            parse_any(f.read_text(), str(f))  # pitwall's YAML or Grafana's JSON, by content
        except PitwallError as e:
            problems.append(f"{f.name}: {e}")
    if problems:
        raise ConfigError("\n".join(problems))
    return f"{len(files)} dashboards"
