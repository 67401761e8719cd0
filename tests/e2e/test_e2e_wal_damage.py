"""End to end: a flipped byte in the middle of the write-ahead log (the hardening repro).

Ten acknowledged batches, SIGKILL, one byte flipped at 15 % of the WAL: the daemon must
refuse to start naming the file and offset, change no byte, and ``s5vec wal inspect`` /
``s5vec wal salvage`` must recover every record except the damaged batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon
from s5vec.client import Client

pytestmark = pytest.mark.e2e
BATCHES, PER_BATCH, DIM = 10, 50, 8


def s5vec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True,
                          timeout=120)


def wal_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "wal").glob("*.wal"))}


def test_a_flipped_byte_mid_wal_stops_start_up_and_salvage_keeps_every_later_record(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", env={"S5VEC_ENGINE__CHECKPOINT_INTERVAL_S": "100000"})
    rng = np.random.default_rng(3)
    daemon.start()
    try:
        with Client(daemon.url) as client:
            client.create_collection("c", DIM)
            client.checkpoint()
            for batch in range(BATCHES):
                result = client.upsert_batch("c", [
                    {"id": f"b{batch}-{i}", "vector": rng.standard_normal(DIM).tolist(), "metadata": {"batch": batch}}
                    for i in range(PER_BATCH)])
                assert result.failed == 0
    finally:
        daemon.kill()

    (name, raw), = wal_bytes(daemon.data_dir).items()
    offset = int(len(raw) * 0.15)
    damaged = bytearray(raw)
    damaged[offset] ^= 0x40
    (daemon.data_dir / "wal" / name).write_bytes(bytes(damaged))

    # the daemon refuses to start, says where and what to do, and changes nothing
    with pytest.raises(AssertionError, match="daemon exited early"):
        daemon.start(timeout=30)
    assert daemon.proc is not None and daemon.proc.wait(10) == 65
    log = daemon.log.read_text()
    assert name in log and "wal salvage" in log and "bytes " in log
    assert wal_bytes(daemon.data_dir) == {name: bytes(damaged)}

    inspect = s5vec("wal", "inspect", "--data-dir", str(daemon.data_dir), "--json")
    assert inspect.returncode == 65, inspect.stderr
    report = json.loads(inspect.stdout)
    (damage,) = report["damages"]
    assert damage["start"] <= offset < damage["end"]
    assert damage["lost_lsns"][0] == damage["lost_lsns"][1]  # one frame: one batch

    salvage = s5vec("wal", "salvage", "--data-dir", str(daemon.data_dir))
    assert salvage.returncode == 0, salvage.stderr
    assert "1 record(s) lost" in salvage.stdout
    kept = list((daemon.data_dir / "wal-damaged").glob("*.bin"))
    assert [p.read_bytes() for p in kept] == [bytes(damaged[damage["start"]:damage["end"]])]

    daemon.start()
    try:
        with Client(daemon.url) as client:
            assert client.health()["status"] == "ok"
            present = {record.id for record in client.export("c", include_vector=False)}
        lost_batches = {b for b in range(BATCHES) if f"b{b}-0" not in present}
        assert len(lost_batches) == 1  # exactly the batch whose frame held the flipped byte
        assert len(present) == (BATCHES - 1) * PER_BATCH
        assert all(f"b{b}-{i}" in present for b in range(BATCHES) if b not in lost_batches for i in range(PER_BATCH))
    finally:
        assert daemon.stop() == 0
    assert s5vec("wal", "inspect", "--data-dir", str(daemon.data_dir)).returncode == 0
