"""Scheduled jobs: each job's effect, quiet hours (injected clock), overlap, failure and retry."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig
from s5vec.ops.backup import create_backup
from s5vec.ops.jobs import (
    JobBusy,
    JobRun,
    Jobs,
    JobsConfig,
    JobSpec,
    QuietHours,
    UnknownJob,
    needs_retrain,
)
from s5vec.storage import BlobId, StorageError

DIM = 16
ENGINE = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600)
OLD = time.time() - 30 * 86_400  # past the default 7-day recent threshold


def local(hour: int, minute: int = 0) -> float:
    """A Unix time at this local time of day (the zone quiet hours are read in)."""
    return dt.datetime(2025, 3, 4, hour, minute).timestamp()


class Clock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def items(start: int, count: int, timestamp: float | None = None, seed: int = 0) -> list[RawItem]:
    rng = np.random.default_rng(seed + start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i}, timestamp)
            for i in range(start, start + count)]


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "data", ENGINE)
    yield database
    await database.close(checkpoint=False)


async def started(db: Database, config: JobsConfig | None = None, **kwargs: Any) -> Jobs:
    jobs = Jobs(db, config or JobsConfig(), **kwargs)
    await jobs.start()
    return jobs


# ----------------------------------------------------------------- quiet hours
def test_quiet_hours_parse_wrap_midnight_and_reject_malformed_spans() -> None:
    day = QuietHours.parse("09:00-17:30")
    assert day is not None and str(day) == "09:00-17:30"
    assert day.active(local(9)) and day.active(local(17, 29)) and not day.active(local(17, 30))
    night = QuietHours.parse("22:00-06:00")
    assert night is not None and night.active(local(23)) and night.active(local(5, 59)) and not night.active(local(12))
    assert QuietHours.parse("") is None
    for bad in ("9-17", "25:00-06:00", "10:61-11:00", "08:00-08:00", "08:00"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


async def test_scheduled_migration_waits_during_quiet_hours_and_runs_after(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 300, OLD))
    clock = Clock(local(12))
    jobs = await started(db, JobsConfig(quiet_hours="09:00-17:00"), now=clock)
    await jobs.run_scheduled("migrate")
    state = jobs.status("migrate")
    assert state["runs"] == 0 and state["skipped"] == 1 and state["last_skip"] == "quiet_hours"
    assert not db.collection("c").segments
    clock.times = [local(18)]
    await jobs.run_scheduled("migrate")
    assert jobs.status("migrate")["runs"] == 1
    assert sum(s.live for s in db.collection("c").segments) == 300
    await jobs.stop()


async def test_a_manual_trigger_runs_during_quiet_hours(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 50, OLD))
    jobs = await started(db, JobsConfig(quiet_hours="00:00-24:00"), now=lambda: local(3))
    result = await jobs.run("migrate")
    assert result["moved"] == 50 and jobs.status("migrate")["manual"] is True
    await jobs.stop()


async def test_a_migration_in_progress_stops_at_a_step_boundary_when_quiet_hours_begin(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 250, OLD))
    # asked: when scheduled, before step 1, before step 2 (quiet from then on)
    clock = Clock(local(8, 58), local(8, 59), local(9, 0))
    jobs = await started(db, JobsConfig(quiet_hours="09:00-17:00", migrate_batch_records=100), now=clock)
    await jobs.run_scheduled("migrate")
    result = jobs.status("migrate")["last_result"]
    assert result["moved"] == 100 and result["steps"] == 1 and result["stopped"] == "quiet_hours"
    clock.times = [local(20)]
    await jobs.run_scheduled("migrate")
    result = jobs.status("migrate")["last_result"]
    assert result["moved"] == 150 and result["steps"] == 2 and result["stopped"] is None
    await jobs.stop()


# ------------------------------------------------------------ overlap, retries
def gated(gate: asyncio.Event, calls: list[bool]) -> Callable[[JobRun], Any]:
    async def fn(run: JobRun) -> dict[str, Any]:
        calls.append(run.manual)
        await gate.wait()
        return {"done": len(calls)}
    return fn


async def test_a_second_trigger_while_a_job_runs_is_refused_and_a_scheduled_one_coalesced(db: Database) -> None:
    gate, calls = asyncio.Event(), []
    jobs = await started(db)
    jobs.add(JobSpec("slow", gated(gate, calls), 0))
    status = await jobs.run("slow", wait=False)
    assert status["running"] is True
    with pytest.raises(JobBusy):
        await jobs.run("slow")
    await jobs.run_scheduled("slow")
    assert jobs.status("slow")["skipped"] == 1 and jobs.status("slow")["last_skip"] == "busy"
    gate.set()
    await wait_for(lambda: jobs.status("slow")["runs"] == 1)
    assert calls == [True]  # exactly one run happened
    assert await jobs.run("slow") == {"done": 2}
    with pytest.raises(UnknownJob):
        await jobs.run("nope")
    await jobs.stop()


async def test_a_manual_checkpoint_while_one_runs_waits_and_runs_again(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    jobs = await started(db)
    first = asyncio.create_task(jobs.run("checkpoint"))
    await asyncio.sleep(0)  # let the first take the job's lock
    second = await jobs.run("checkpoint")
    assert (await first)["lsn"] == second["lsn"] == db.applied_lsn
    assert jobs.status("checkpoint")["runs"] == 2
    await jobs.stop()


async def test_a_failed_run_is_counted_logged_and_retried_with_backoff(db: Database) -> None:
    outcomes = [StorageError("backend down"), StorageError("still down"), None]

    async def flaky(run: JobRun) -> dict[str, Any]:
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return {"ok": True}

    jobs = await started(db, JobsConfig(retry_first_s=0.05, retry_max_s=0.1))
    jobs.add(JobSpec("flaky", flaky, 0))
    before = time.time()
    await jobs.run_scheduled("flaky")
    state = jobs.status("flaky")
    assert state["failures"] == 1 and state["last_outcome"] == "failure" and "backend down" in state["last_error"]
    assert state["next_retry"] is not None and state["next_retry"] >= before + 0.05
    await wait_for(lambda: jobs.status("flaky")["last_outcome"] == "success")
    state = jobs.status("flaky")
    assert state["runs"] == 3 and state["failures"] == 2 and state["consecutive_failures"] == 0
    assert state["next_retry"] is None and state["last_result"] == {"ok": True}
    await jobs.stop()


async def test_a_manual_run_that_fails_raises_after_it_is_recorded(db: Database) -> None:
    async def broken(run: JobRun) -> dict[str, Any]:
        raise StorageError("nope")

    jobs = await started(db, JobsConfig(retry_attempts=0))
    jobs.add(JobSpec("broken", broken, 0))
    with pytest.raises(StorageError, match="nope"):
        await jobs.run("broken")
    state = jobs.status("broken")
    assert state["failures"] == 1 and state["next_retry"] is None  # no retries configured
    await jobs.stop()


async def test_the_scheduler_runs_jobs_on_their_interval_and_lists_the_next_run(db: Database) -> None:
    calls: list[bool] = []

    async def tick(run: JobRun) -> dict[str, Any]:
        calls.append(run.manual)
        return {}

    jobs = await started(db)
    jobs.add(JobSpec("tick", tick, 0.05, "every 0.05s"))
    await wait_for(lambda: len(calls) >= 2)
    assert calls[:2] == [False, False]
    listed = {job["name"]: job for job in jobs.overview()}
    assert set(listed) >= {"checkpoint", "migrate", "rebalance", "compact", "scrub", "backup", "tick"}
    assert listed["tick"]["next_run"] is not None and listed["backup"]["next_run"] is None  # backup: on demand
    assert listed["migrate"]["honours_quiet_hours"] and not listed["checkpoint"]["honours_quiet_hours"]
    await jobs.stop()
    assert jobs.overview()[0]["next_run"] is None


# -------------------------------------------------------------------- each job
async def test_the_checkpoint_job_runs_when_the_wal_passes_its_size_and_counts_real_checkpoints(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, dataclasses.replace(ENGINE, checkpoint_wal_bytes=1))
    jobs = await started(db)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 10))
    await jobs.run_scheduled("checkpoint")
    assert jobs.status("checkpoint")["runs"] == 1 and db.checkpoint_lsn == db.applied_lsn and db.wal_bytes == 0
    await jobs.run_scheduled("checkpoint")  # nothing new in the WAL: not due, not a run
    assert jobs.status("checkpoint")["runs"] == 1
    await jobs.stop()
    await db.close()


async def test_compact_rebuilds_a_graph_past_the_tombstone_ratio_and_rewrites_thinned_segments(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 200))
    await db.upsert("c", items(1000, 200, OLD))
    jobs = await started(db, JobsConfig(tombstone_ratio=0.5, segment_tombstone_ratio=0.3))
    await jobs.run("migrate")
    await db.wait_indexed()
    await db.delete("c", [f"r{i}" for i in range(150)] + [f"r{i}" for i in range(1000, 1080)])
    coll = db.collection("c")
    assert coll.recent.tombstones >= 150 and coll.segments[0].n == 200
    result = await jobs.run("compact")
    assert result["graphs"] == ["c"] and result["segments"]["rebuilt"] == 1
    coll = db.collection("c")
    assert coll.recent.tombstones == 0 and len(coll.recent) == 50
    assert [(s.n, s.live) for s in coll.segments] == [(120, 120)]
    assert coll.get("r1100").metadata == {"i": 1100} and not coll.contains("r1000") and not coll.contains("r10")
    await jobs.stop()


async def test_rebalance_retrains_a_segment_whose_lists_deletes_made_lopsided(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM, segment_records=10_000))
    await db.upsert("c", items(0, 4000, OLD))
    jobs = await started(db, JobsConfig(rebalance_skew=3.0))
    await jobs.run("migrate")
    coll = db.collection("c")
    (segment,) = coll.segments
    invlists = segment.ivf._ivf.invlists
    doomed: list[str] = []
    for lst in range(segment.ivf.nlist * 3 // 4):
        size = invlists.list_size(lst)
        if size:
            ids = invlists.get_ids(lst)
            doomed += [segment.id_of(int(p)) for p in faiss.rev_swig_ptr(ids, size)]
    await db.delete("c", doomed)
    (report,) = coll.segment_report()
    assert needs_retrain(report, 3.0), report
    before = {rid: coll.get(rid) for rid in (f"r{i}" for i in range(4000)) if coll.contains(rid)}
    result = await jobs.run("rebalance")
    assert result["rebuilt"] == 1
    (after,) = coll.segment_report()
    assert after["seq"] != report["seq"] and after["live"] == report["live"] == len(before)
    assert after["skew"] < 3.0 and not needs_retrain(after, 3.0)
    for rid, hit in list(before.items())[::97]:
        got = coll.get(rid)
        assert got.metadata == hit.metadata and np.array_equal(got.vector, hit.vector)
    assert all(not coll.contains(rid) for rid in doomed[::50])
    assert (await jobs.run("rebalance"))["rebuilt"] == 0  # once even, left alone
    await db.checkpoint()
    await jobs.stop()


async def test_rebalance_merges_the_small_segments_incremental_migrations_leave(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "data", ENGINE)
    await db.create_collection(CollectionConfig("c", DIM, segment_records=2000))
    jobs = await started(db)
    for step in range(4):  # one migration per interval: one small segment each
        await db.upsert("c", items(step * 100, 100, OLD + step))
        await jobs.run("migrate")
    coll = db.collection("c")
    assert [s.n for s in coll.segments] == [100] * 4
    await db.delete("c", ["r5", "r205"])
    await db.checkpoint()
    before = {f"r{i}": coll.get(f"r{i}") for i in range(400) if coll.contains(f"r{i}")}
    result = await jobs.run("rebalance")
    assert result["rebuilt"] == 1 and result["merged"] == 3
    assert [(s.n, s.live) for s in coll.segments] == [(398, 398)]
    assert (await jobs.run("rebalance"))["rebuilt"] == 0  # one segment: nothing left to merge
    await jobs.stop()
    await db.close()
    db = await Database.open(tmp_path / "data", ENGINE)
    try:
        coll = db.collection("c")
        assert [(s.n, s.live) for s in coll.segments] == [(398, 398)] and len(coll) == 398
        await db.get("c", "r0")  # on a worker: the segment loads lazily from the blob store
        for rid, hit in before.items():
            got = coll.get(rid)
            assert got.metadata == hit.metadata and np.array_equal(got.vector, hit.vector)
        assert not coll.contains("r5") and not coll.contains("r205")
        assert coll.search(before["r333"].vector, k=1)[0].id == "r333"
    finally:
        await db.close()


async def test_garbage_collection_waits_out_the_grace_period(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, dataclasses.replace(ENGINE, keep_manifests=1))
    jobs = await started(db, JobsConfig(gc_grace_s=3600))
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 20))
    first = await db.checkpoint()
    await db.upsert("c", items(20, 20))
    await db.checkpoint()
    assert first in await db.store.list() and db.last_gc["waiting"] >= 1  # unreferenced, within its grace
    db.gc_grace_s = 0.0
    removed = await db.collect_garbage()
    assert removed >= 1 and first not in await db.store.list()
    await jobs.stop()
    await db.close()


async def test_garbage_collection_never_takes_the_blobs_of_a_retained_backup(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, dataclasses.replace(ENGINE, keep_manifests=1))
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 50))
    backup = await create_backup(db)
    for start in range(50, 200, 50):
        await db.delete("c", [f"r{start - 50}"])
        await db.upsert("c", items(start, 50))
        await db.checkpoint()
    assert (await db.backups.verify(backup))["ok"]
    await db.backups.remove([backup.id])
    await db.collect_garbage()
    assert backup.manifest not in await db.store.list()
    await db.close()


async def test_scrub_reports_a_corrupt_blob_and_keeps_it(db: Database) -> None:
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 100))
    await db.checkpoint()
    victim = max((p for p in (db.data_dir / "blobs").glob("*/*")), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    jobs = await started(db, JobsConfig(scrub_sample=1000))
    result = await jobs.run("scrub")
    assert result["corrupt"] == [victim.name] and result["checked"] == len(await db.store.list())
    assert victim.exists() and jobs.statistics()["corrupt_blobs"] == [victim.name]
    assert BlobId.parse(victim.name) in await db.store.list()
    await jobs.stop()


async def test_the_backup_job_applies_retention_with_the_injected_clock(db: Database) -> None:
    from s5vec.ops.backup import BackupConfig

    await db.create_collection(CollectionConfig("c", DIM))
    clock = Clock(local(12))
    jobs = await started(db, backup=BackupConfig(keep_last=2, keep_daily=3, keep_weekly=0), now=clock)
    made = []
    for day in range(6):
        clock.times = [local(12) + day * 86_400]
        await db.upsert("c", items(day * 10, 10))
        made.append((await jobs.run("backup", label=f"day{day}"))["backup"]["id"])
    kept = [b.label for b in await db.backups.backups()]
    assert kept == ["day5", "day4", "day3"]  # last 2, plus the newest of each of the 3 latest days
    assert jobs.status("backup")["last_result"]["count"] == 3
    await jobs.stop()
