"""Configuration: TOML + environment, errors naming the key, exit code 78, masked secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from s5vec.daemon.config import EX_CONFIG, ConfigError, load_config

SECRET = "supersecretkey-0123456789"


def test_defaults_listen_on_loopback_port_7533_with_data_in_dot_data() -> None:
    config = load_config(env={})
    assert (config.http.host, config.http.port, str(config.data_dir)) == ("127.0.0.1", 7533, "data")


def test_toml_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s5vec.toml"
    path.write_text('data_dir = "/srv/a"\n[http]\nport = 8000\nhost = "127.0.0.1"\n'
                    '[engine]\ncheckpoint_interval_s = 30\n')
    config = load_config(path, env={"S5VEC_PORT": "8001", "S5VEC_ENGINE__MAX_PENDING": "500"},
                         overrides={"data_dir": "/srv/b"})
    assert config.http.port == 8001
    assert config.engine.checkpoint_interval_s == 30 and config.engine.max_pending == 500
    assert str(config.data_dir) == "/srv/b"


@pytest.mark.parametrize("env,key", [
    ({"S5VEC_PORT": "eighty"}, "http.port"),
    ({"S5VEC_PORT": "70000"}, "http.port"),
    ({"S5VEC_HTTP__COLOUR": "red"}, "http.colour"),
    ({"S5VEC_LOG_LEVEL": "loud"}, "log_level"),
    ({"S5VEC_ENGINE__MAX_PENDING": "-1"}, "engine.max_pending"),
    ({"S5VEC_ENGINE__GRAPH_CHUNK": "0"}, "engine.graph_chunk"),
    ({"S5VEC_API_KEYS": "short:read"}, "auth.keys[0].key"),
    ({"S5VEC_API_KEYS": f"{SECRET}:root"}, "auth.keys[0].scopes"),
    ({"S5VEC_HOST": "0.0.0.0"}, "http.host"),
    ({"S5VEC_DEFAULT_COLLECTION__METRIC": "manhattan"}, "default_collection.metric"),
])
def test_invalid_values_raise_an_error_naming_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(env=env)


def test_binding_beyond_loopback_is_allowed_with_api_keys() -> None:
    config = load_config(env={"S5VEC_HOST": "0.0.0.0", "S5VEC_API_KEYS": f"{SECRET}:admin"})
    assert config.auth.keys[0].scopes == ("admin",)


def test_summary_masks_api_keys() -> None:
    config = load_config(env={"S5VEC_API_KEYS": f"{SECRET}:read"})
    assert SECRET not in config.summary() and "***" in config.summary()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_serve_with_a_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[http]\nport = 'x'\n")
    result = run_cli("serve", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EX_CONFIG
    assert "http.port" in result.stderr


def test_serve_with_unparsable_toml_or_missing_file_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[http\n")
    assert run_cli("serve", "--config", str(path)).returncode == EX_CONFIG
    assert run_cli("serve", "--config", str(tmp_path / "absent.toml")).returncode == EX_CONFIG


def test_serve_refuses_public_bind_without_keys_and_never_prints_secrets(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EX_CONFIG and "auth.keys" in result.stderr
    result = run_cli("serve", "--port", "x1", env={"S5VEC_API_KEYS": f"{SECRET}:read"})
    assert SECRET not in result.stderr + result.stdout
