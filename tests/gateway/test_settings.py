"""The gateway's settings: off by default, its address checked with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.traffic.gateway.wiring import build_gateway_part

pytestmark = pytest.mark.timeout(10)


def test_gateway_is_off_by_default(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.gateway.listen is None and s.gateway.declarative_config is None
    assert build_gateway_part(s, metrics=None).components() == []


def test_gateway_settings_from_file(tmp_path: Path) -> None:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("gateway:\n  listen: 127.0.0.1:8000\n  declarative_config: /etc/kong.yaml\n")
    s = load_settings(cfg, data_dir=tmp_path)
    assert s.gateway.listen == "127.0.0.1:8000" and s.gateway.declarative_config == Path("/etc/kong.yaml")
    part = build_gateway_part(s, metrics=None)
    assert part.components() == [part]


@pytest.mark.parametrize(("gateway", "problem"), [
    ({"listen": "8000"}, "gateway.listen: listen: expected HOST:PORT, got '8000'"),
    ({"listen": "127.0.0.1:8000", "admin": True}, "gateway.admin: unknown setting"),
])
def test_bad_gateway_settings_name_their_key(tmp_path: Path, gateway: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(data_dir=tmp_path, gateway=gateway)
    assert problem in e.value.message


def test_gateway_native_setting(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.gateway.native is True and build_gateway_part(s, metrics=None).native is True
    s = load_settings(data_dir=tmp_path, gateway={"listen": "127.0.0.1:8000", "native": False})
    assert build_gateway_part(s, metrics=None).native is False
