"""Tokens by file or environment, and never printed: config errors, reprs and the server's log."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from pathlib import Path

import httpx
import pytest
import yaml

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready

SHORT = "shh-0123456"  # 11 characters: too short, and must appear nowhere
FILE_TOKEN = "file-token-0123456789abcdef"
INLINE_TOKEN = "inline-token-0123456789abcdef"


def _error(tmp_path: Path, data: dict[str, object] | str) -> ConfigError:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    return e.value


def _printed(err: ConfigError) -> str:
    """Everything a user or a log could see of the error: its message and full traceback."""
    return err.message + "".join(traceback.format_exception(err))


@pytest.mark.timeout(30)
def test_a_short_token_is_named_by_key_not_value(tmp_path: Path) -> None:
    err = _error(tmp_path, {"auth_tokens": [{"token": SHORT, "scopes": ["read"]}]})
    assert "auth_tokens[0].token: String should have at least 16 characters" in err.message
    assert SHORT not in _printed(err)


@pytest.mark.timeout(30)
def test_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(FILE_TOKEN + "\n")
    s = load_settings(auth_tokens=[{"token_file": str(secret), "name": "prom", "scopes": ["write"]}])
    assert s.auth_tokens[0].secret == FILE_TOKEN
    assert FILE_TOKEN not in repr(s) and FILE_TOKEN not in str(s.auth_tokens)

    secret.write_text(SHORT)
    err = _error(tmp_path, {"auth_tokens": [{"token_file": str(secret)}]})
    assert f"auth_tokens[0]: token_file: {secret} holds {len(SHORT)} characters" in err.message
    assert SHORT not in _printed(err)

    err = _error(tmp_path, {"auth_tokens": [{"token_file": str(tmp_path / "missing")}]})
    assert "auth_tokens[0]: token_file: cannot read" in err.message and "No such file" in err.message
    err = _error(tmp_path, {"auth_tokens": [{"token": INLINE_TOKEN, "token_file": str(secret)}]})
    assert "auth_tokens[0]: set exactly one of token and token_file" in err.message
    assert INLINE_TOKEN not in _printed(err)
    err = _error(tmp_path, {"auth_tokens": [{"name": "x"}]})
    assert "auth_tokens[0]: set exactly one of token and token_file" in err.message


@pytest.mark.timeout(30)
def test_tokens_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(FILE_TOKEN)
    monkeypatch.setenv("PITWALL_AUTH_TOKENS", json.dumps([{"token_file": str(secret), "scopes": ["admin"]},
                                                          {"token": INLINE_TOKEN}]))
    s = load_settings()
    assert [t.secret for t in s.auth_tokens] == [FILE_TOKEN, INLINE_TOKEN]
    monkeypatch.setenv("PITWALL_AUTH_TOKENS", json.dumps([{"token": SHORT}]))
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "auth_tokens[0].token" in e.value.message and SHORT not in _printed(e.value)


@pytest.mark.timeout(30)
def test_a_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, f"auth_tokens:\n  - token: {INLINE_TOKEN}: oops\n")
    assert "invalid YAML" in err.message and "line 2" in err.message
    assert INLINE_TOKEN not in _printed(err)


@pytest.mark.timeout(120)
def test_the_server_log_never_holds_a_token(tmp_path: Path) -> None:
    """Start, requests with good and bad tokens, a reload, a failed reload: the log has no token."""
    secret = tmp_path / "token"
    secret.write_text(FILE_TOKEN)
    cfg = tmp_path / "pitwall.yaml"
    good = {"log_level": "debug", "storage": {"fsync": False},
            "auth_tokens": [{"token_file": str(secret), "scopes": ["admin"], "name": "operator"},
                            {"token": INLINE_TOKEN, "scopes": ["read"], "name": "grafana"}]}
    cfg.write_text(yaml.safe_dump(good))
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/api/v1/query", params={"query": "up"},
                         headers={"Authorization": f"Bearer {INLINE_TOKEN}"}).status_code == 200
            assert c.post("/loki/api/v1/push", json={"streams": []},
                          headers={"Authorization": f"Bearer {INLINE_TOKEN}"}).status_code == 403
            assert c.get("/api/v1/query", headers={"Authorization": f"Bearer {SHORT}xxxxxxxx"}).status_code == 401
            assert c.post("/-/reload", headers={"Authorization": f"Bearer {FILE_TOKEN}"}).status_code == 200
            broken = dict(good, auth_tokens=[{"token": SHORT}, {"token": INLINE_TOKEN}])
            cfg.write_text(yaml.safe_dump(broken))
            r = c.post("/-/reload", headers={"Authorization": f"Bearer {FILE_TOKEN}"})
            assert r.status_code == 500 and "auth_tokens[0].token" in r.text and SHORT not in r.text
            os.kill(proc.pid, signal.SIGHUP)  # the same failure, logged with its traceback
            for _ in range(100):
                if "configuration reload failed" in (tmp_path / f"pitwall-{port}.log").read_text():
                    break
                time.sleep(0.05)
    finally:
        stop_pitwall_process(proc)
    out = (tmp_path / f"pitwall-{port}.log").read_text()
    assert "configuration reload failed" in out and "auth_tokens[0].token" in out
    for token in (FILE_TOKEN, INLINE_TOKEN, SHORT):
        assert token not in out


@pytest.mark.timeout(60)
async def test_a_rotated_token_file_applies_on_reload(tmp_path: Path) -> None:
    from pitwall.server import create_app

    secret = tmp_path / "token"
    secret.write_text(FILE_TOKEN)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"auth_tokens": [{"token_file": str(secret), "scopes": ["admin"]}]}))
    app = create_app(load_settings(cfg, data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                    base_url="http://localhost") as c:
        old, new = {"Authorization": f"Bearer {FILE_TOKEN}"}, {"Authorization": f"Bearer {INLINE_TOKEN}"}
        assert (await c.get("/api/v1/labels", headers=old)).status_code == 200
        secret.write_text(INLINE_TOKEN + "\n")
        assert (await c.get("/api/v1/labels", headers=old)).status_code == 200  # not before the reload
        assert (await c.post("/-/reload", headers=old)).status_code == 200
        assert (await c.get("/api/v1/labels", headers=old)).status_code == 401
        assert (await c.get("/api/v1/labels", headers=new)).status_code == 200

        cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}}))  # no tokens: the old ones stay
        assert (await c.post("/-/reload", headers=new)).status_code == 200
        assert (await c.get("/api/v1/labels")).status_code == 401
        assert (await c.get("/api/v1/labels", headers=new)).status_code == 200
