"""``s5vec backup ...`` as a subprocess: create, list, verify, export, import, restore, exit codes,
and the ``[jobs]`` / ``[backup]`` configuration rules (exit 78)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Daemon
from s5vec.daemon.config import EX_CONFIG, ConfigError, load_config
from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig

ENGINE = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600)


def s5vec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", "backup", *args], capture_output=True,
                          check=False, text=True, timeout=120, env={**os.environ, **(env or {})})


async def records(path: Path) -> dict[str, tuple[bytes, object]]:
    db = await Database.open(path, ENGINE)
    try:
        coll = db.collection("c")
        out = {}
        for rid in coll.recent.labels:
            hit = await db.get("c", rid)
            assert hit.vector is not None
            out[rid] = (hit.vector.tobytes(), hit.metadata)
        return out
    finally:
        await db.close()


async def make(path: Path, start: int, count: int) -> None:
    db = await Database.open(path, ENGINE)
    if "c" not in db.collections:
        await db.create_collection(CollectionConfig("c", 6))
    rng = np.random.default_rng(start)
    await db.upsert("c", [RawItem(f"r{i}", rng.normal(size=6).astype(np.float32), {"i": i})
                          for i in range(start, start + count)])
    await db.close()


async def test_the_backup_commands_round_trip_between_two_data_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    await make(a, 0, 40)
    expected = await records(a)
    created = s5vec("create", "--data-dir", str(a), "--label", "first", "--json")
    assert created.returncode == 0, created.stderr
    backup_id = json.loads(created.stdout)["backup"]["id"]
    listed = s5vec("list", "--data-dir", str(a))
    assert listed.returncode == 0 and backup_id in listed.stdout and "first" in listed.stdout
    verified = s5vec("verify", "latest", "--data-dir", str(a), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"]
    exported = s5vec("export", backup_id[:16], "--data-dir", str(a), "--output", str(tmp_path / "x.s5vec"))
    assert exported.returncode == 0, exported.stderr
    imported = s5vec("import", str(tmp_path / "x.s5vec"), "--data-dir", str(b), "--json")
    assert imported.returncode == 0 and json.loads(imported.stdout)["backup"]["id"] == backup_id
    restored = s5vec("restore", backup_id, "--data-dir", str(b))
    assert restored.returncode == 0, restored.stderr
    assert await records(b) == expected

    await make(a, 100, 5)  # a now holds more than the backup
    assert s5vec("restore", "latest", "--data-dir", str(a)).returncode == 4  # no --force: refused
    assert len(await records(a)) == 45
    assert s5vec("restore", "--at", "2001-01-01T00:00:00Z", "--data-dir", str(a)).returncode == 3
    assert s5vec("verify", "bnosuchbackup", "--data-dir", str(a)).returncode == 3
    forced = s5vec("restore", "--at", "2999-01-01", "--data-dir", str(a), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["safety_backup"]["label"] == "pre-restore"
    assert await records(a) == expected
    copy = s5vec("restore", "latest", "--data-dir", str(a), "--target", str(tmp_path / "c"))
    assert copy.returncode == 0 and (tmp_path / "c" / "ROOT").exists()


async def test_verify_exits_1_on_a_damaged_backup(tmp_path: Path) -> None:
    await make(tmp_path, 0, 30)
    assert s5vec("create", "--data-dir", str(tmp_path)).returncode == 0
    victim = max((tmp_path / "blobs").glob("*/*"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[7] ^= 0xFF
    victim.write_bytes(bytes(raw))
    result = s5vec("verify", "latest", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "corrupt" in result.stdout and victim.name in result.stdout


@pytest.mark.e2e
def test_create_goes_through_the_running_daemon_and_restore_waits_for_it_to_stop(daemon: Daemon) -> None:
    daemon.start()
    created = s5vec("create", "--data-dir", str(daemon.data_dir), "--url", daemon.url, "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["backup"]["label"] == "manual"
    listed = s5vec("list", "--data-dir", str(daemon.data_dir), "--json")  # read only: fine beside the daemon
    assert len(json.loads(listed.stdout)["backups"]) == 1
    locked = s5vec("restore", "latest", "--data-dir", str(daemon.data_dir), "--force")
    assert locked.returncode == 75 and "stop the daemon" in locked.stderr
    assert daemon.stop() == 0
    assert s5vec("restore", "latest", "--data-dir", str(daemon.data_dir), "--force").returncode == 0


def test_bad_jobs_and_backup_settings_name_their_key(tmp_path: Path) -> None:
    for env, key in (({"S5VEC_JOBS__QUIET_HOURS": "9am-5pm"}, "jobs.quiet_hours"),
                     ({"S5VEC_JOBS__TOMBSTONE_RATIO": "1.5"}, "jobs.tombstone_ratio"),
                     ({"S5VEC_JOBS__REBALANCE_SKEW": "1"}, "jobs.rebalance_skew"),
                     ({"S5VEC_BACKUP__KEEP_LAST": "0"}, "backup.keep_last"),
                     ({"S5VEC_BACKUP__INTERVAL_S": "-1"}, "backup.interval_s")):
        with pytest.raises(ConfigError, match=key):
            load_config(env=env)
    config = load_config(env={"S5VEC_JOBS__QUIET_HOURS": "22:00-06:00", "S5VEC_BACKUP__KEEP_WEEKLY": "8"})
    assert config.jobs.quiet_hours == "22:00-06:00" and config.backup.keep_weekly == 8
    result = subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", "serve", "--data-dir", str(tmp_path)],
                            capture_output=True, check=False, text=True, timeout=60,
                            env={**os.environ, "S5VEC_JOBS__QUIET_HOURS": "25:00-26:00"})
    assert result.returncode == EX_CONFIG and "jobs.quiet_hours" in result.stderr
    assert s5vec("list", "--data-dir", str(tmp_path), env={"S5VEC_BACKUP__KEEP_LAST": "0"}).returncode == EX_CONFIG


async def test_reading_commands_name_a_missing_directory_instead_of_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for action in (("list",), ("verify", "latest"), ("export", "latest", "-o", str(tmp_path / "x.s5vec"))):
        done = s5vec(*action, "--data-dir", str(missing))
        assert done.returncode == 3 and f"no data directory at {missing}" in done.stderr, done.stderr
    assert not missing.exists()


async def test_the_import_hint_is_a_command_that_restores_the_right_directory(tmp_path: Path) -> None:
    import shlex
    a, b = tmp_path / "a", tmp_path / "b"
    await make(a, 0, 10)
    expected = await records(a)
    assert s5vec("create", "--data-dir", str(a)).returncode == 0
    assert s5vec("export", "latest", "--data-dir", str(a), "-o", str(tmp_path / "x.s5vec")).returncode == 0
    imported = s5vec("import", str(tmp_path / "x.s5vec"), "--data-dir", str(b))
    assert imported.returncode == 0, imported.stderr
    hint = imported.stdout.split("make it current with: ", 1)[1].strip()
    assert hint.endswith(f"--data-dir {b}")
    argv = shlex.split(hint)
    assert argv[:3] == ["s5vec", "backup", "restore"]
    assert s5vec(*argv[2:]).returncode == 0  # the helper runs `s5vec backup ...`
    assert await records(b) == expected
