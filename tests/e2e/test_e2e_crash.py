"""End to end: ``s5vec serve`` as a subprocess, killed with SIGKILL mid-ingest, driven
through the Python client (``s5vec.client``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon
from s5vec.client import AsyncClient, Client, S5vecError

pytestmark = pytest.mark.e2e


async def writer(client: AsyncClient, worker: int, vectors: np.ndarray, acked: set[str], sent: set[str],
                 batch: int) -> None:
    """Send batches until the daemon dies; record ids whose batch was acknowledged."""
    for start in range(0, len(vectors), batch):
        ids = [f"w{worker}-{i}" for i in range(start, min(start + batch, len(vectors)))]
        records = [{"id": rid, "vector": vectors[int(rid.split("-")[1])], "metadata": {"worker": worker}}
                   for rid in ids]
        sent.update(ids)
        try:
            result = await client.upsert_batch("crash", records)
        except S5vecError:  # the connection broke or was refused: the daemon is gone
            return
        assert result.failed == 0
        acked.update(ids)


async def ingest_and_kill(daemon: Daemon, vectors: np.ndarray, kill_after: int) -> tuple[set[str], set[str]]:
    acked: set[str] = set()
    sent: set[str] = set()
    async with AsyncClient(daemon.url, retries=0) as client:  # no retries: a write either lands or fails
        tasks = [asyncio.create_task(writer(client, w, vectors, acked, sent, 50)) for w in range(4)]
        async with asyncio.timeout(60):
            while len(acked) < kill_after:
                await asyncio.sleep(0.005)
        daemon.kill()  # SIGKILL while writers are mid-flight
        await asyncio.gather(*tasks)
    return acked, sent


def test_acknowledged_writes_survive_sigkill_and_restart(daemon: Daemon, minilm: Any) -> None:
    vectors = minilm.base[:1500]
    daemon.start()
    with Client(daemon.url) as client:
        client.create_collection("crash", 384)

    acked, sent = asyncio.run(ingest_and_kill(daemon, vectors, kill_after=1200))
    assert len(acked) >= 1200
    assert daemon.proc is not None and daemon.proc.returncode == -9

    daemon.start()
    with Client(daemon.url) as client:
        info = client.get_collection("crash")
        # every acknowledged write is there; nothing that was never sent appears; no duplicates
        assert len(acked) <= info.count <= len(sent)
        for rid in sorted(acked)[::7]:
            record = client.get("crash", rid)
            assert record.metadata["worker"] == int(rid[1])
            index = int(rid.split("-")[1])
            assert np.allclose(record.vector, vectors[index] / np.linalg.norm(vectors[index]), atol=1e-6)
        # search sees each id at most once and finds an acknowledged record by its own vector
        probe = min(acked)
        ids = client.search("crash", vectors[int(probe.split("-")[1])], k=20).ids
        assert len(ids) == len(set(ids))
        assert probe in ids[:4]  # the four workers wrote the same vector under four ids

    # a second crash right after recovery (no checkpoint in between) loses nothing either
    daemon.kill()
    daemon.start()
    with Client(daemon.url) as client:
        assert client.get_collection("crash").count == info.count
    assert daemon.stop() == 0


def test_graceful_stop_checkpoints_and_restart_is_ready_with_data(daemon: Daemon, minilm: Any) -> None:
    daemon.start()

    async def load() -> None:
        async with AsyncClient(daemon.url) as client:
            await client.create_collection("g", 384)
            for start in range(0, 600, 100):
                result = await client.upsert_batch("g", [{"id": str(i), "vector": minilm.base[i]}
                                                         for i in range(start, start + 100)])
                assert result.successful == 100

    asyncio.run(load())
    assert daemon.stop() == 0
    wal = list((daemon.data_dir / "wal").glob("*.wal"))
    assert sum(p.stat().st_size for p in wal) == 0, "graceful stop should fold the WAL into a checkpoint"
    assert (daemon.data_dir / "ROOT").exists()
    daemon.start()
    with Client(daemon.url) as client:
        health = client.health()
        assert health["applied_lsn"] == health["checkpoint_lsn"] > 0
        assert client.get_collection("g").count == 600


def test_second_daemon_on_the_same_data_dir_refuses_to_start(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    other = Daemon(daemon.data_dir)
    with pytest.raises(AssertionError, match="in use by another s5vec process"):
        other.start(timeout=20)
    assert other.proc is not None and other.proc.wait(10) == 1


def test_a_second_daemon_is_refused_on_a_data_directory_in_use_even_after_files_are_deleted(tmp_path: Path) -> None:
    first = Daemon(tmp_path / "data").start()
    second = Daemon(tmp_path / "data")
    try:
        for stray in first.data_dir.iterdir():  # an old-style LOCK file, or anything an operator deletes
            if stray.is_file():
                stray.unlink()
        with pytest.raises(AssertionError, match="daemon exited early"):
            second.start(timeout=30)
        assert second.proc is not None and second.proc.wait(10) != 0
        assert "in use by another s5vec process" in second.log.read_text()
        with Client(first.url) as client:
            client.create_collection("still-mine", 4)
    finally:
        assert first.stop() == 0
