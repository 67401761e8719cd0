"""The engine (and the daemon in-process) on a local directory with injected disk faults:
refused writes are never acknowledged, acknowledged ones survive a crash, failed
checkpoints keep the root and the WAL, corrupt blobs are reported and never served,
and /health and /metrics say what happened."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig, Query
from s5vec.ops import HealthMonitor, Metrics
from s5vec.ops.jobs import Jobs, JobsConfig
from s5vec.storage import BlobCorrupt, BlobId, LocalBlobStore, RootMirror, StorageError, StorageFull, WalFailed
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase
from s5vec.testing.diskfaults import DiskFaults, checkpoint_faults
from s5vec.testing.portal import FAULTS, create_test_portal

DIM = 8
ENGINE = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600, index_threads=1, search_threads=1)
API = "/api/v1"


@pytest.fixture
def disk() -> Iterator[DiskFaults]:
    faults = DiskFaults()
    with faults.installed():
        yield faults


def items(start: int, count: int) -> list[RawItem]:
    return [RawItem(f"r{i}", np.random.default_rng(i).normal(size=DIM).astype(np.float32), {"i": i})
            for i in range(start, start + count)]


async def opened(path: Path) -> Database:
    db = await Database.open(path, ENGINE)
    if "c" not in db.collections:
        await db.create_collection(CollectionConfig("c", DIM, "l2"))
    return db


async def crash_and_reopen(db: Database) -> Database:
    """Close without a checkpoint: after SIGKILL only the WAL and the last checkpoint remain."""
    await db.close(checkpoint=False)
    return await opened(db.data_dir)


async def assert_holds_exactly(db: Database, present: range, absent: range = range(0)) -> None:
    hits = await db.get_many("c", [f"r{i}" for i in present], include_vector=True)
    assert [h.id for h in hits] == [f"r{i}" for i in present]
    for hit, item in zip(hits, items(present.start, len(present))):
        assert hit.metadata == item.metadata and np.array_equal(hit.vector, item.vector)
    assert await db.get_many("c", [f"r{i}" for i in absent]) == []


def metric(db: Database, name: str) -> float:
    metrics = Metrics(process=False)
    metrics.attach(db)
    text = metrics.render()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def in_wal(path: str) -> bool:
    return "/wal/" in path


# ------------------------------------------------------------------------ WAL faults
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
async def test_a_write_that_hits_a_disk_fault_is_refused_reads_go_on_and_later_writes_survive_a_crash(
        tmp_path: Path, disk: DiskFaults, err: int) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 20))
    disk.arm("write", err, in_wal, partial=True)
    with pytest.raises(StorageFull if err == errno.ENOSPC else StorageError):
        await db.upsert("c", items(20, 5))
    assert db.storage.status == "degraded" and "last write failed" in (db.storage.reason or "")
    assert metric(db, "s5vec_wal_write_errors_total") == 1 and metric(db, "s5vec_storage_degraded") == 1
    assert "wal_write_failing" in {a.alert for a in HealthMonitor(db).alerts()}
    await assert_holds_exactly(db, range(0, 20), range(20, 25))  # reads go on; nothing half-applied
    await db.upsert("c", items(25, 10))  # space is back
    assert db.storage.status == "ok"
    db = await crash_and_reopen(db)
    await assert_holds_exactly(db, range(0, 20), range(20, 25))
    await assert_holds_exactly(db, range(25, 35))
    await db.close()


async def test_a_failed_wal_fsync_makes_the_database_refuse_writes_with_health_failing_until_restart(
        tmp_path: Path, disk: DiskFaults) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 20))
    disk.arm("fsync", errno.EIO, in_wal)
    with pytest.raises(WalFailed):
        await db.upsert("c", items(20, 5))
    disk.disarm()
    with pytest.raises(WalFailed, match="restart"):  # the disk answers again; the log stays shut
        await db.upsert("c", items(30, 5))
    assert db.storage.status == "failing" and "fsync failed" in (db.storage.reason or "")
    assert metric(db, "s5vec_wal_failed") == 1
    assert {a.alert: a.severity for a in HealthMonitor(db).alerts()}["wal_failed"] == "critical"
    hits, _ = await db.search("c", np.asarray(items(3, 1)[0].vector), Query(k=1))
    assert [h.id for h in hits] == ["r3"]  # reads are served
    db = await crash_and_reopen(db)
    assert db.storage.status == "ok"
    await assert_holds_exactly(db, range(0, 20), range(30, 35))
    await db.upsert("c", items(40, 5))
    db = await crash_and_reopen(db)
    await assert_holds_exactly(db, range(40, 45))
    await db.close()


# ----------------------------------------------------------------- checkpoint faults
CHECKPOINT_CASES = ["blob-write-enospc", "blob-fsync-eio", "blob-rename-eio", "root-write-enospc",
                    "root-fsync-eio", "root-rename-eio", "root-dir-fsync-eio", "wal-segment-create-enospc"]


@pytest.mark.parametrize("case", range(len(CHECKPOINT_CASES)), ids=CHECKPOINT_CASES)
async def test_a_checkpoint_that_fails_on_the_disk_keeps_root_and_wal_reports_degraded_and_retries(
        tmp_path: Path, disk: DiskFaults, case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 30))
    first = await db.checkpoint()
    await db.upsert("c", items(30, 30))
    call, err, where = checkpoint_faults(tmp_path)[case]
    disk.arm(call, err, where, times=None)
    with pytest.raises(StorageError):
        await db.checkpoint()
    assert disk.injected, "the fault was never hit"
    on_disk = LocalBlobStore(tmp_path).get_root_sync()
    # the root names the previous complete manifest (or, when only the directory fsync
    # after the swap failed, the new complete one, which the next checkpoint adopts)
    assert db.root == first and db.checkpoint_lsn < db.applied_lsn
    assert on_disk == first or CHECKPOINT_CASES[case] == "root-dir-fsync-eio"
    assert db.wal_bytes > 0
    assert db.storage.status == "degraded" and db.storage.consecutive_failures == 1
    assert "checkpoint" in (db.storage.reason or "")
    assert metric(db, "s5vec_checkpoint_failures_total") == 1
    assert not await db.checkpoint_due()  # the backoff holds the retry back ...
    later = time.time() + ENGINE.checkpoint_retry_max_s
    monkeypatch.setattr("s5vec.engine.database.time.time", lambda: later)
    assert await db.checkpoint_due()  # ... and then lets it run
    monkeypatch.undo()
    disk.disarm()
    await db.upsert("c", items(60, 5))  # writes went on meanwhile
    assert await db.checkpoint() not in (None, first)
    assert db.storage.status == "ok" and db.checkpoint_lsn == db.applied_lsn
    db = await crash_and_reopen(db)
    await assert_holds_exactly(db, range(0, 65))
    await db.close()


@pytest.mark.parametrize("case", range(len(CHECKPOINT_CASES)), ids=CHECKPOINT_CASES)
async def test_a_crash_after_a_failed_checkpoint_recovers_every_acknowledged_write(
        tmp_path: Path, disk: DiskFaults, case: int) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 30))
    await db.checkpoint()
    await db.upsert("c", items(30, 30))
    call, err, where = checkpoint_faults(tmp_path)[case]
    disk.arm(call, err, where, times=None)
    with pytest.raises(StorageError):
        await db.checkpoint()
    await db.upsert("c", items(60, 5))  # the WAL still takes writes
    disk.disarm()
    db = await crash_and_reopen(db)
    await assert_holds_exactly(db, range(0, 65))
    await db.close()


# ------------------------------------------------------------- crash leftovers, bit rot
async def test_a_crash_leaving_a_torn_wal_tail_and_a_half_written_blob_loses_no_acknowledged_write(
        tmp_path: Path) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 30))
    await db.checkpoint()
    await db.upsert("c", items(30, 20))
    await db.close(checkpoint=False)
    segment = sorted((tmp_path / "wal").glob("*.wal"))[-1]
    with open(segment, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x12\x34")  # a frame header cut short by the crash
    blob = next((tmp_path / "blobs").glob("*/b*"))
    temporary = blob.parent / f".{blob.name}.424242.1.tmp"
    temporary.write_bytes(blob.read_bytes()[:10])  # written, never renamed
    db = await opened(tmp_path)
    await assert_holds_exactly(db, range(0, 50))
    assert not temporary.exists()
    await db.upsert("c", items(50, 10))  # lands after the cut, so the next restart sees it
    db = await crash_and_reopen(db)
    await assert_holds_exactly(db, range(0, 60))
    await db.close()


async def test_a_flipped_byte_in_a_blob_is_reported_by_the_scrub_and_never_served(tmp_path: Path) -> None:
    db = await opened(tmp_path)
    await db.upsert("c", items(0, 100))
    await db.checkpoint()
    victim = max((tmp_path / "blobs").glob("*/b*"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt):
        await db.store.get(BlobId.parse(victim.name))
    await assert_holds_exactly(db, range(0, 100))  # the live database answers from memory
    jobs = Jobs(db, JobsConfig(scrub_sample=1000))
    await jobs.start()
    try:
        result = await jobs.run("scrub")
    finally:
        await jobs.stop()
    assert result["corrupt"] == [victim.name]
    assert db.storage.status == "degraded" and db.storage.corrupt_blobs == {victim.name}
    assert "content address" in (db.storage.reason or "")
    assert metric(db, "s5vec_storage_corrupt_blobs") == 1
    assert {a.alert: a.severity for a in HealthMonitor(db).alerts()}["blob_corrupt"] == "critical"
    await db.close(checkpoint=False)
    try:
        db = await opened(tmp_path)
    except BlobCorrupt:
        return  # a clear refusal to start (restore from a backup), never made-up records
    try:
        await assert_holds_exactly(db, range(0, 100))
    except BlobCorrupt:
        pass  # a lazily loaded segment refuses the read instead
    finally:
        await db.close(checkpoint=False)


# --------------------------------------------------------------- the portal variant
@pytest.mark.parametrize("corrupt", [1, 1000], ids=["one-bad-copy", "every-copy-bad"])
async def test_a_node_restoring_through_corrupt_portal_downloads_refetches_or_refuses(
        tmp_path: Path, aiohttp_server: Callable[..., Any], corrupt: int) -> None:
    server: TestServer = await aiohttp_server(create_test_portal())
    identity = Identity.from_phrase(generate_phrase())
    fast: Any = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, "connect_timeout": 1.0, "retries": 1}
    url = str(server.make_url("/"))

    async def node(path: Path) -> tuple[RootMirror, Database]:
        path.mkdir()
        store = RootMirror(PortalBlobStore(url, identity, cache_dir=path / "s5-cache", **fast), path / "ROOT")
        await store.open()
        try:
            return store, await Database.open(path, ENGINE, store, storage_mode="portal")
        except BaseException:
            await store.close()
            raise

    store, db = await node(tmp_path / "a")
    await db.create_collection(CollectionConfig("c", DIM, "l2"))
    await db.upsert("c", items(0, 40))
    await db.checkpoint()
    await db.close(checkpoint=False)
    await store.close()
    server.app[FAULTS].corrupt_downloads = corrupt
    if corrupt > 1:
        with pytest.raises(BlobCorrupt):
            await node(tmp_path / "b")
        return
    store, db = await node(tmp_path / "b")
    try:
        await assert_holds_exactly(db, range(0, 40))
        assert server.app[FAULTS].corrupt_downloads == 0  # the bad copy was seen and fetched again
    finally:
        await db.close(checkpoint=False)
        await store.close()


# --------------------------------------------------------------- the daemon in-process
async def test_the_daemon_answers_a_full_disk_with_507_storage_full_and_health_degraded(
        make_client: Any, disk: DiskFaults) -> None:
    client = await make_client()
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3})
    assert (await client.post(f"{API}/collections/c/vectors", json={"id": "a", "vector": [1, 0, 0]})).status == 201
    disk.arm("write", errno.ENOSPC, in_wal, partial=True)
    resp = await client.post(f"{API}/collections/c/vectors", json={"id": "b", "vector": [0, 1, 0]})
    body = await resp.json()
    assert resp.status == 507 and body["error"]["code"] == "storage_full"
    assert "No space left" in body["error"]["message"]
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded" and "last write failed" in health["storage"]["reason"]
    assert (await client.get(f"{API}/collections/c/vectors/a")).status == 200
    assert (await client.get(f"{API}/collections/c/vectors/b")).status == 404
    assert (await client.post(f"{API}/collections/c/vectors", json={"id": "b", "vector": [0, 1, 0]})).status == 201
    assert (await (await client.get("/health")).json())["status"] == "ok"


async def test_the_daemon_answers_writes_after_a_failed_wal_fsync_with_503_read_only_and_health_failing(
        make_client: Any, disk: DiskFaults) -> None:
    client = await make_client()
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3})
    disk.arm("fsync", errno.EIO, in_wal)
    for vector_id in ("a", "b"):
        resp = await client.post(f"{API}/collections/c/vectors", json={"id": vector_id, "vector": [1, 0, 0]})
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "storage_read_only"
    health = await (await client.get("/health")).json()
    assert health["status"] == "failing" and health["storage"]["wal_failed"]
    assert "restart" in health["storage"]["reason"]
    assert (await client.get("/ready")).status == 200  # reads are still served
    text = await (await client.get("/metrics")).text()
    assert "s5vec_wal_failed 1.0" in text and "s5vec_wal_write_errors_total 2.0" in text
