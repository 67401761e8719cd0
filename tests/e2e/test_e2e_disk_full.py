"""End to end on a really full disk (a small tmpfs mounted for the test; CI runs as root).

A daemon restarting on a full disk must load and serve reads, refuse writes with
``507 storage_full``, and once a little space is freed, checkpoint again even though the
old snapshots' blobs still wait ``jobs.gc_grace_s``."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Daemon
from s5vec.client import Client, S5vecError

pytestmark = pytest.mark.e2e
DIM = 64


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (the e2e tests run as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> int:
    """Append to ``path`` until the disk is full; returns its size."""
    chunk = b"\xa5" * (1 << 16)
    with open(path, "ab", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        for size in (4096, 512, 1):  # the last partial pages too
            try:
                while True:
                    fh.write(chunk[:size])
            except OSError:
                pass
    return path.stat().st_size


def wait_indexed(client: Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.statistics()["collections"]["c"]["pending"]:
        assert time.monotonic() < deadline, "indexing did not finish"
        time.sleep(0.05)


def test_a_daemon_restarts_read_only_on_a_full_disk_and_checkpoints_once_space_is_freed(small_disk: Path,
                                                                                       tmp_path: Path) -> None:
    data = small_disk / "data"
    daemon = Daemon(data, env={"S5VEC_ENGINE__CHECKPOINT_INTERVAL_S": "100000", "S5VEC_JOBS__GC_GRACE_S": "3600"})
    daemon.log = tmp_path / "daemon.log"  # not on the disk that fills up
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, DIM)).astype(np.float32)
    daemon.start()
    try:
        with Client(daemon.url) as client:
            client.create_collection("c", DIM)
            client.create_collection("old", DIM)  # sealed segments: their files are rebuilt at every start
            client.upsert_batch("old", [{"id": f"o{i}", "vector": vectors[i].tolist(), "timestamp": 1_000_000.0}
                                        for i in range(400)])
            assert client.migrate()["moved"] == 400
            for round_ in range(4):  # four snapshots of new vectors: the two oldest become garbage (gc_grace_s)
                client.upsert_batch("c", [{"id": f"r{i}", "vector": vectors[round_ * 700 + i].tolist(),
                                           "metadata": {"round": round_}} for i in range(700)])
                wait_indexed(client)
                client.checkpoint()
    finally:
        assert daemon.stop() == 0
    for scratch in ("segments", "tmp"):  # rebuilt at every start: freeing them must not be what makes room
        shutil.rmtree(data / scratch)
    filler = small_disk / "filler"
    fill(filler)

    daemon.start()  # the HNSW graph and segment files need no disk space to load
    try:
        fill(filler)  # start-up removed the old scratch files: take that space too
        with Client(daemon.url) as client:
            assert client.get("c", "r5").metadata == {"round": 3}
            hits = client.search("c", vectors[2101], k=10).hits
            assert len(hits) == 10 and all(hit.metadata == {"round": 3} for hit in hits)
            assert client.search("old", vectors[7], k=1).ids == ["o7"]  # from the IVF tier
            with pytest.raises(S5vecError) as refused:
                client.upsert("c", "new", vectors[2999].tolist())
            assert (refused.value.status, refused.value.code) == (507, "storage_full")
            assert client.get_collection("c").count == 700

            # a little space back: less than a snapshot, so only deleting old garbage makes room
            os.truncate(filler, filler.stat().st_size - (640 << 10))
            client.upsert("c", "new", vectors[2999].tolist())
            result = client.checkpoint()
            assert result, result
            assert client.statistics()["checkpoint_lsn"] == client.statistics()["applied_lsn"]
    finally:
        assert daemon.stop() == 0
    assert "cannot listen" not in daemon.log.read_text()
    filler.unlink()
    daemon.start()
    try:
        with Client(daemon.url) as client:
            assert client.get_collection("c").count == 701
    finally:
        daemon.stop()
