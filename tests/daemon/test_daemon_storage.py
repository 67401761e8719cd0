"""The [storage] section, ``s5vec keys``, and storage health over REST (in process)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from s5vec.daemon.config import EX_CONFIG, ConfigError, load_config
from s5vec.storage.s5 import generate_phrase, validate_phrase
from s5vec.testing.portal import BRIDGE, FAULTS, create_test_bridge, create_test_portal

PHRASE = generate_phrase()
TOKEN = "portal-token-5d1e0c9b"


def phrase_file(tmp_path: Path, phrase: str = PHRASE, mode: int = 0o600) -> Path:
    path = tmp_path / "seed-phrase"
    path.write_text(phrase + "\n")
    path.chmod(mode)
    return path


def mistyped(phrase: str, index: int = 2, word: str = "zzqx") -> str:
    words = phrase.split()
    words[index] = word
    return " ".join(words)


def leaks(phrase: str, text: str) -> bool:
    """True if ``text`` holds the phrase or two of its words in a row (single words are
    ordinary English and may appear by chance)."""
    words = phrase.split()
    return any(f"{a} {b}" in text for a, b in itertools.pairwise(words)) or phrase in text


def portal_env(**extra: str) -> dict[str, str]:
    return {"S5_MODE": "portal", "S5_PORTAL_URL": "https://s5.example.com", **extra}


@pytest.mark.parametrize("env,key", [
    ({"S5_MODE": "s3"}, "storage.mode"),
    (portal_env(S5_PORTAL_URL=""), "storage.portal_url"),
    ({"S5_MODE": "portal", "S5_SEED_PHRASE": PHRASE}, "storage.portal_url"),
    (portal_env(), "storage.seed_phrase"),
    (portal_env(S5_PORTAL_URL="ftp://s5.example.com", S5_SEED_PHRASE=PHRASE), "storage.portal_url"),
    (portal_env(S5_PORTAL_URL="https://", S5_SEED_PHRASE=PHRASE), "storage.portal_url"),
    (portal_env(S5_SEED_PHRASE=mistyped(PHRASE)), "storage.seed_phrase"),
    (portal_env(S5_SEED_PHRASE=" ".join(PHRASE.split()[:14])), "storage.seed_phrase"),
    (portal_env(S5_SEED_PHRASE=mistyped(PHRASE, 14, PHRASE.split()[13])), "storage.seed_phrase"),
    ({"S5_MODE": "bridge", "S5_SEED_PHRASE": PHRASE}, "storage.bridge_url"),
    ({"S5_MODE": "bridge", "S5_BRIDGE_URL": "http://localhost:5522"}, "storage.seed_phrase"),
    (portal_env(S5_SEED_PHRASE=PHRASE, S5VEC_STORAGE__TIMEOUT_S="0"), "storage.timeout_s"),
    (portal_env(S5_SEED_PHRASE=PHRASE, S5VEC_STORAGE__RETRIES="-1"), "storage.retries"),
    (portal_env(S5_SEED_PHRASE=PHRASE, S5VEC_STORAGE__ENCRYPT="maybe"), "storage.encrypt"),
    ({"S5_SEED_PHRASE": mistyped(PHRASE)}, "storage.seed_phrase"),  # checked in local mode too
])
def test_invalid_storage_settings_name_the_key_and_never_the_phrase(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as error:
        load_config(env=env)
    message = str(error.value)
    assert not leaks(PHRASE, message) and not leaks(mistyped(PHRASE), message)
    assert "zzqx" not in message  # not even the mistyped word


def test_the_seed_phrase_file_must_be_private_and_not_combined_with_a_phrase(tmp_path: Path) -> None:
    path = phrase_file(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match=r"storage\.seed_phrase_file: .* has mode 0644.*chmod 600"):
        load_config(env=portal_env(S5_SEED_PHRASE_FILE=str(path)))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not both"):
        load_config(env=portal_env(S5_SEED_PHRASE_FILE=str(path), S5_SEED_PHRASE=PHRASE))
    with pytest.raises(ConfigError, match="storage.seed_phrase_file: .* does not exist"):
        load_config(env=portal_env(S5_SEED_PHRASE_FILE=str(tmp_path / "absent")))
    bad = phrase_file(tmp_path, mistyped(PHRASE))
    with pytest.raises(ConfigError, match="storage.seed_phrase_file: .* does not hold a valid S5 seed phrase"):
        load_config(env=portal_env(S5_SEED_PHRASE_FILE=str(bad)))
    good = phrase_file(tmp_path)
    config = load_config(env=portal_env(S5_SEED_PHRASE_FILE=str(good)))
    assert config.storage.seed_phrase_file == good and config.storage.seed_phrase is None


@pytest.mark.parametrize("alias,mode", [("mock", "local"), ("real", "portal"), ("LOCAL", "local"),
                                        ("Portal", "portal")])
def test_the_seed_projects_mode_names_are_aliases(alias: str, mode: str) -> None:
    config = load_config(env={**portal_env(S5_SEED_PHRASE=PHRASE), "S5_MODE": alias})
    assert config.storage.mode == mode


def test_storage_keys_come_from_toml_and_generic_environment_names(tmp_path: Path) -> None:
    path = tmp_path / "s5vec.toml"
    path.write_text(f'[storage]\nmode = "portal"\nportal_url = "https://a.example"\nseed_phrase_file = '
                    f'"{phrase_file(tmp_path)}"\ntimeout_s = 5\n')
    config = load_config(path, env={"S5VEC_STORAGE__RETRIES": "1", "S5_PORTAL_URL": "https://b.example"})
    storage = config.storage
    assert (storage.mode, storage.portal_url, storage.timeout_s, storage.retries, storage.encrypt) == (
        "portal", "https://b.example", 5.0, 1, True)


def test_summary_and_repr_mask_the_phrase_and_the_token() -> None:
    config = load_config(env=portal_env(S5_SEED_PHRASE=PHRASE, S5_AUTH_TOKEN=TOKEN,
                                        S5_PORTAL_URL="https://user:pw@s5.example.com/?k=v"))
    for text in (config.summary(), repr(config)):
        assert not leaks(PHRASE, text) and TOKEN not in text
    assert ":pw@" not in config.summary() and "k=v" not in config.summary()
    assert "storage=portal(https://s5.example.com/" in config.summary() and "***" in config.summary()


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True, check=False,
                          timeout=60, input=stdin, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_serve_with_a_world_readable_phrase_file_exits_78_saying_chmod_600(tmp_path: Path) -> None:
    path = phrase_file(tmp_path, mode=0o644)
    result = run_cli("serve", "--data-dir", str(tmp_path / "d"), env=portal_env(S5_SEED_PHRASE_FILE=str(path)))
    assert result.returncode == EX_CONFIG
    assert "storage.seed_phrase_file" in result.stderr and "chmod 600" in result.stderr
    assert PHRASE not in result.stderr + result.stdout


def test_serve_with_an_invalid_phrase_exits_78_without_echoing_it(tmp_path: Path) -> None:
    bad = mistyped(PHRASE)
    result = run_cli("serve", "--data-dir", str(tmp_path / "d"), env=portal_env(S5_SEED_PHRASE=bad))
    assert result.returncode == EX_CONFIG and "storage.seed_phrase" in result.stderr
    assert not leaks(bad, result.stderr + result.stdout) and "zzqx" not in result.stderr


def test_serve_in_portal_mode_without_a_url_exits_78(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "d"), env={"S5_MODE": "real", "S5_SEED_PHRASE": PHRASE})
    assert result.returncode == EX_CONFIG and "storage.portal_url" in result.stderr


def test_keys_new_prints_a_valid_fresh_phrase_and_a_hint_on_stderr() -> None:
    first, second = run_cli("keys", "new"), run_cli("keys", "new")
    assert first.returncode == 0 and validate_phrase(first.stdout) and len(first.stdout.split()) == 15
    assert first.stdout != second.stdout
    assert "S5_SEED_PHRASE_FILE" in first.stderr and "0600" in first.stderr


def test_keys_new_output_creates_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    assert run_cli("keys", "new", "--output", str(path)).returncode == 0
    assert (os.stat(path).st_mode & 0o777) == 0o600 and validate_phrase(path.read_text())
    before = path.read_text()
    assert run_cli("keys", "new", "--output", str(path)).returncode == 1
    assert path.read_text() == before
    assert run_cli("keys", "check", "--file", str(path)).returncode == 0


def test_keys_check_exits_0_for_a_valid_phrase_and_1_otherwise(tmp_path: Path) -> None:
    assert run_cli("keys", "check", stdin=PHRASE + "\n").returncode == 0
    result = run_cli("keys", "check", stdin=mistyped(PHRASE))
    assert result.returncode == 1 and "not in the S5 word list" in result.stderr and "zzqx" not in result.stderr
    assert run_cli("keys", "check", stdin="").returncode == 1
    loose = phrase_file(tmp_path, mode=0o640)
    result = run_cli("keys", "check", "--file", str(loose))
    assert result.returncode == 1 and "chmod 600" in result.stderr


# ------------------------------------------------------------------ in-process health
@pytest.fixture
async def portal(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_test_portal())
    return server


async def test_health_says_degraded_while_checkpoints_fail_and_ok_after(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {**portal_env(S5_SEED_PHRASE_FILE=str(phrase_file(tmp_path))), "S5_PORTAL_URL": str(portal.make_url("/")),
           "S5VEC_STORAGE__RETRIES": "0"}
    client = await make_client(env)
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok" and body["storage"]["mode"] == "portal"
    resp = await client.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0]})
    assert resp.status == 404
    await client.post("/api/v1/collections", json={"name": "c", "dimension": 2})

    portal.app[FAULTS].fail_next = 10_000
    resp = await client.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0]})
    assert resp.status == 201  # acknowledged from the WAL
    resp = await client.post("/api/v1/admin/checkpoint")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "storage_unavailable"
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["status"] == "degraded"
    assert body["storage"]["consecutive_failures"] == 1 and body["storage"]["last_error"]
    assert (await client.get("/ready")).status == 200
    stats = await (await client.get("/api/v1/admin/statistics")).json()
    assert stats["storage"]["mode"] == "portal" and sum(stats["storage"]["requests"]["errors"].values()) >= 1

    portal.app[FAULTS].fail_next = 0
    resp = await client.post("/api/v1/admin/checkpoint")
    assert resp.status == 200
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok" and body["storage"]["reachable"] and body["storage"]["last_checkpoint_ok"]


async def test_bridge_mode_checkpoints_encrypted_blobs_and_a_fresh_node_restores_them(
        make_client: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    bridge = await aiohttp_server(create_test_bridge())
    env = {"S5_MODE": "bridge", "S5_BRIDGE_URL": str(bridge.make_url("/")), "S5_SEED_PHRASE": PHRASE}
    client = await make_client(env, tmp_path / "a")
    await client.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    resp = await client.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0],
                                                                     "metadata": {"title": "bridge-marker"}})
    assert resp.status == 201
    assert (await client.post("/api/v1/admin/checkpoint")).status == 200
    files = bridge.app[BRIDGE].files
    assert "s5vec/ROOT" in files and all(b"bridge-marker" not in data for data in files.values())
    restored = await make_client(env, tmp_path / "b")
    record = await (await restored.get("/api/v1/collections/c/vectors/a")).json()
    assert record["metadata"] == {"title": "bridge-marker"}
    assert (await (await restored.get("/health")).json())["storage"]["mode"] == "bridge"
