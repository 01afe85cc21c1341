"""Prometheus' common http_config: one model, its validation and the header it yields."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pitwall.core.httpconfig import HTTPClientConfig, auth_header, http_config_problems, ssl_context


def test_valid_configs_have_no_problems_and_the_right_header(tmp_path: Path) -> None:
    assert auth_header(HTTPClientConfig()) is None
    assert auth_header(HTTPClientConfig.model_validate({"bearer_token": "t"})) == "Bearer t"
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = HTTPClientConfig.model_validate({"basic_auth": {"username": "u", "password_file": str(pw)}})
    assert not http_config_problems(cfg)
    assert auth_header(cfg) == "Basic " + base64.b64encode(b"u:s3cret").decode()
    cfg = HTTPClientConfig.model_validate({"authorization": {"type": "Token", "credentials": "c"}})
    assert auth_header(cfg) == "Token c"


@pytest.mark.parametrize(("raw", "key", "message"), [
    ({"bearer_token": "a", "bearer_token_file": "f"}, "bearer_token", "at most one of bearer_token & bearer_token_file"),
    ({"bearer_token": "a", "basic_auth": {"username": "u"}}, "basic_auth", "at most one of basic_auth, oauth2, bearer"),
    ({"authorization": {"type": "Basic"}}, "authorization.type", 'cannot be set to "basic"'),
    ({"basic_auth": {"password": "p", "password_file": "f"}}, "basic_auth", "basic_auth password & password_file"),
])
def test_prometheus_validation(raw: dict[str, object], key: str, message: str) -> None:
    problems = http_config_problems(HTTPClientConfig.model_validate(raw))
    assert problems and problems[0][0] == key and message in problems[0][1]


def test_missing_secret_file_raises_oserror(tmp_path: Path) -> None:
    cfg = HTTPClientConfig.model_validate({"bearer_token_file": str(tmp_path / "absent")})
    with pytest.raises(OSError):
        auth_header(cfg)


def test_insecure_skip_verify_turns_verification_off() -> None:
    ctx = ssl_context(HTTPClientConfig.model_validate({"tls_config": {"insecure_skip_verify": True}}).tls_config)
    assert not ctx.check_hostname
