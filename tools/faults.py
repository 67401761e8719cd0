"""Storage-fault campaign for the reliability report: the engine on a local directory with
injected failures (ENOSPC/EIO on WAL writes, failed fsyncs, failed checkpoints, torn
WAL tails and blob temporaries, flipped blob bytes) and on the test portal with its
faults (5xx, latency, corrupt downloads, wrong CIDs, dropped connections).

Every round records which writes were acknowledged and which refused, "crashes" (closes
without a checkpoint, as after SIGKILL the WAL is all there is) and reopens, then checks
that every acknowledged record is there with its exact vector and metadata and that no
read ever returned bytes other than the ones written.

``python -m s5vec_tools.faults --out bench-results/reliability/faults.json [--rounds N]``

The injection itself is :class:`s5vec.testing.diskfaults.DiskFaults`, which the fault
tests use too.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig
from s5vec.storage import BlobCorrupt, BlobId, StorageError
from s5vec.testing.diskfaults import CHECKPOINT_FAULT_NAMES, DiskFaults, checkpoint_faults

DIM: Final = 8
ENGINE: Final = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600, wal_segment_bytes=16 << 10,
                             index_threads=1, search_threads=1)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- scenarios
@dataclass
class Tally:
    """What one campaign did and found."""

    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    refused: int = 0
    lost: int = 0
    corrupt_served: int = 0
    restarts: int = 0
    checkpoints_failed: int = 0
    checkpoints_ok: int = 0
    corrupt_detected: int = 0
    refused_cleanly: int = 0  # reads/opens that raised a clear error instead of serving damaged data
    errors: list[str] = field(default_factory=list)


def vector_of(key: str) -> np.ndarray:
    seed = int.from_bytes(key.encode()[-8:].rjust(8, b"\0"), "little")
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


class Model:
    """The acknowledged state: record id -> its metadata."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.serial = 0

    def batch(self, size: int) -> list[RawItem]:
        out = []
        for _ in range(size):
            self.serial += 1
            rid = f"r{self.serial}"
            out.append(RawItem(rid, vector_of(rid), {"n": self.serial}))
        return out

    async def verify(self, db: Database, tally: Tally) -> None:
        """Count acknowledged records missing (lost) or different (corrupt_served)."""
        ids = list(self.records)
        found = {hit.id: hit for hit in await db.get_many("c", ids, include_vector=True)} if ids else {}
        for rid, meta in self.records.items():
            hit = found.get(rid)
            if hit is None:
                tally.lost += 1
                tally.errors.append(f"lost {rid}")
            elif hit.metadata != meta or hit.vector is None or not np.array_equal(hit.vector, vector_of(rid)):
                tally.corrupt_served += 1
                tally.errors.append(f"{rid} served with other data")


async def write(db: Database, model: Model, tally: Tally, size: int) -> bool:
    batch = model.batch(size)
    try:
        await db.upsert("c", batch)
    except StorageError:
        tally.refused += len(batch)
        return False
    tally.acknowledged += len(batch)
    for item in batch:
        model.records[str(item.id)] = dict(item.metadata or {})
    return True


async def reopen(db: Database | None, path: Path, tally: Tally) -> Database:
    """A crash: close without a checkpoint (the WAL is all a SIGKILL leaves), then open."""
    if db is not None:
        await db.close(checkpoint=False)
        tally.restarts += 1
    db = await Database.open(path, ENGINE)
    if "c" not in db.collections:
        await db.create_collection(CollectionConfig("c", DIM, "l2"))
    return db


def wal_path(path: str) -> bool:
    return "/wal/" in path


async def wal_round(rng: random.Random, path: Path, disk: DiskFaults, tally: Tally) -> None:
    """Writes with ENOSPC/EIO (torn or not) and failed fsyncs at random moments; crashes."""
    model = Model()
    db = await reopen(None, path, tally)
    try:
        for _ in range(rng.randint(20, 40)):
            roll = rng.random()
            if roll < 0.15:
                err, torn = rng.choice([errno.ENOSPC, errno.EIO]), rng.random() < 0.7
                disk.arm("write", err, wal_path, partial=torn,
                         label=f"WAL write {errno.errorcode[err]}{' (torn frame)' if torn else ''}")
            elif roll < 0.20:
                err = rng.choice([errno.EIO, errno.ENOSPC])
                disk.arm("fsync", err, wal_path, label=f"WAL fsync {errno.errorcode[err]}")
            elif roll < 0.23:
                disk.arm("write", errno.ENOSPC, wal_path, partial=True, label="WAL write ENOSPC (torn frame)")
                disk.arm("ftruncate", errno.EIO, wal_path, label="WAL cut-back EIO")
            await write(db, model, tally, rng.randint(1, 8))
            disk.disarm()
            if db.storage.wal_failed is not None or rng.random() < 0.08:
                await model.verify(db, tally)
                db = await reopen(db, path, tally)
                await model.verify(db, tally)
            if rng.random() < 0.05:
                await db.checkpoint()
        await model.verify(db, tally)
        db = await reopen(db, path, tally)
        await model.verify(db, tally)
    finally:
        disk.disarm()
        await db.close(checkpoint=False)


async def checkpoint_round(rng: random.Random, path: Path, disk: DiskFaults, tally: Tally) -> None:
    """Checkpoints that fail at a random step; the root must stay at a complete manifest."""
    model = Model()
    db = await reopen(None, path, tally)
    try:
        for _ in range(rng.randint(3, 6)):
            for _ in range(rng.randint(2, 6)):
                await write(db, model, tally, rng.randint(1, 16))
            case = rng.randrange(len(CHECKPOINT_FAULT_NAMES))
            call, err, where = checkpoint_faults(path)[case]
            disk.arm(call, err, where, times=None, label=CHECKPOINT_FAULT_NAMES[case])
            root, lsn = db.root, db.checkpoint_lsn
            try:
                await db.checkpoint()
                tally.checkpoints_ok += 1  # the fault hit nothing this checkpoint needed
            except StorageError:
                tally.checkpoints_failed += 1
                if db.root != root or db.checkpoint_lsn != lsn or not db.storage.degraded:
                    tally.errors.append("a failed checkpoint moved the root or left health ok")
            disk.disarm()
            if rng.random() < 0.5:
                db = await reopen(db, path, tally)
                await model.verify(db, tally)
            else:
                await db.checkpoint()
                tally.checkpoints_ok += 1
                if db.storage.degraded:
                    tally.errors.append("health still degraded after a good checkpoint")
        await model.verify(db, tally)
        db = await reopen(db, path, tally)
        await model.verify(db, tally)
    finally:
        disk.disarm()
        await db.close(checkpoint=False)


async def torn_round(rng: random.Random, path: Path, disk: DiskFaults, tally: Tally) -> None:
    """Crash leftovers: a WAL segment cut mid-frame or with garbage after it, and a blob
    temporary file half written; recovery must keep every acknowledged record."""
    model = Model()
    db = await reopen(None, path, tally)
    try:
        for _ in range(rng.randint(4, 10)):
            await write(db, model, tally, rng.randint(1, 8))
        if rng.random() < 0.5:
            await db.checkpoint()
        await db.close(checkpoint=False)
        segments = sorted((path / "wal").glob("*.wal"))
        frame = os.urandom(rng.randint(1, 64))
        with open(segments[-1], "ab") as fh:  # a torn tail: a half frame header or garbage
            fh.write(frame)
        tally.faults["torn WAL tail"] += 1
        blobs = sorted((path / "blobs").glob("*/b*"))
        if blobs:
            victim = rng.choice(blobs)
            (victim.parent / f".{victim.name}.999999.1.tmp").write_bytes(os.urandom(rng.randint(0, 512)))
            tally.faults["torn blob temporary"] += 1
        db = await Database.open(path, ENGINE)
        tally.restarts += 1
        await model.verify(db, tally)
        if list((path / "blobs").glob("*/.*.tmp")):
            tally.errors.append("a stale blob temporary survived the restart")
        for _ in range(rng.randint(1, 5)):  # appends after the cut must survive the next crash
            await write(db, model, tally, rng.randint(1, 8))
        db = await reopen(db, path, tally)
        await model.verify(db, tally)
    finally:
        await db.close(checkpoint=False)


async def flip_round(rng: random.Random, path: Path, disk: DiskFaults, tally: Tally) -> None:
    """A flipped byte in a stored blob: reads raise BlobCorrupt, memory still answers, a
    restart either loads intact data or refuses to open; never serves the damage."""
    model = Model()
    db = await reopen(None, path, tally)
    for _ in range(rng.randint(3, 8)):
        await write(db, model, tally, rng.randint(4, 16))
    await db.checkpoint()
    blobs = sorted((path / "blobs").glob("*/b*"))
    victim = rng.choice(blobs)
    data = bytearray(victim.read_bytes())
    if not data:
        await db.close(checkpoint=False)
        return
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    victim.write_bytes(bytes(data))
    tally.faults["flipped blob byte"] += 1
    try:
        await db.store.get(BlobId.parse(victim.name))
        tally.corrupt_served += 1
        tally.errors.append("a flipped blob was read without BlobCorrupt")
    except BlobCorrupt:
        tally.corrupt_detected += 1
    await model.verify(db, tally)  # the live database answers from memory
    await db.close(checkpoint=False)
    try:
        db = await Database.open(path, ENGINE)
    except BlobCorrupt:
        tally.refused_cleanly += 1  # a clear refusal: restore from a backup
        return
    tally.restarts += 1
    try:
        await model.verify(db, tally)
    except BlobCorrupt:  # a lazily loaded segment: the read refuses cleanly
        tally.refused_cleanly += 1
    finally:
        await db.close(checkpoint=False)


PORTAL_FAULTS: Final = (("5xx", "fail_next"), ("latency", "latency"), ("wrong CID", "wrong_cid_uploads"),
                        ("dropped connection", "drop_next"), ("dropped reply", "drop_replies"))


async def portal_round(rng: random.Random, workdir: Path, tally: Tally) -> None:
    """Node A writes and checkpoints to the portal double while it fails requests, answers
    slowly, returns wrong CIDs and drops connections; node B restores from the registry
    while downloads come back corrupt. Nothing acknowledged is lost; nothing corrupt is read."""
    from aiohttp.test_utils import TestServer

    from s5vec.storage import RootMirror
    from s5vec.storage.portal import PortalBlobStore
    from s5vec.storage.s5.seed import Identity, generate_phrase
    from s5vec.testing.portal import FAULTS, create_test_portal

    fast = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, "connect_timeout": 1.0, "retries": 2}
    identity = Identity.from_phrase(generate_phrase())
    server = TestServer(create_test_portal())
    await server.start_server()
    faults = server.app[FAULTS]
    url = str(server.make_url("/"))
    model = Model()
    try:
        node_a = workdir / "a"
        node_a.mkdir()
        remote = PortalBlobStore(url, identity, cache_dir=node_a / "s5-cache", **fast)  # type: ignore[arg-type]
        async with RootMirror(remote, node_a / "ROOT") as store:
            db = await Database.open(node_a, ENGINE, store, storage_mode="portal")
            try:
                await db.create_collection(CollectionConfig("c", DIM, "l2"))
                for _ in range(rng.randint(2, 4)):
                    for _ in range(rng.randint(1, 4)):
                        await write(db, model, tally, rng.randint(2, 12))
                    kind, knob = rng.choice(PORTAL_FAULTS)
                    armed = rng.randint(1, 4)
                    if knob == "latency":
                        faults.latency = rng.uniform(0.001, 0.02)
                    else:
                        setattr(faults, knob, armed)
                    try:
                        await db.checkpoint()
                        tally.checkpoints_ok += 1
                    except StorageError:
                        tally.checkpoints_failed += 1
                    # count the faults requests actually met, then switch everything off
                    tally.faults[f"portal {kind}"] += 1 if knob == "latency" else armed - getattr(faults, knob)
                    faults.fail_next = faults.drop_next = faults.drop_replies = faults.wrong_cid_uploads = 0
                    faults.latency = 0.0
                for _ in range(3):  # the faults are off: the backoff ends in a good checkpoint
                    try:
                        await db.checkpoint()
                        tally.checkpoints_ok += 1
                        break
                    except StorageError:
                        tally.checkpoints_failed += 1
                await model.verify(db, tally)
            finally:
                await db.close(checkpoint=False)
        # node B: a new machine with the same phrase, restoring through corrupt downloads
        node_b = workdir / "b"
        node_b.mkdir()
        corrupt = rng.randint(1, 3)
        faults.corrupt_downloads = corrupt
        remote = PortalBlobStore(url, identity, cache_dir=node_b / "s5-cache", **fast)  # type: ignore[arg-type]
        async with RootMirror(remote, node_b / "ROOT") as store:
            try:
                db = await Database.open(node_b, ENGINE, store, storage_mode="portal")
            except BlobCorrupt:
                tally.refused_cleanly += 1  # two bad copies of one blob in a row: refuse, never guess
                return
            finally:
                tally.faults["portal corrupt download"] += corrupt - faults.corrupt_downloads
            try:
                await model.verify(db, tally)
            except BlobCorrupt:
                tally.refused_cleanly += 1
            finally:
                await db.close(checkpoint=False)
    finally:
        await server.close()


# ---------------------------------------------------------------------------- campaign
SCENARIOS: Final = {"wal": wal_round, "checkpoint": checkpoint_round, "torn": torn_round, "flip": flip_round}


async def campaign(rounds: int, seed: int, workdir: Path) -> Tally:
    """Run every scenario ``rounds`` times with random timing; returns the tally."""
    rng = random.Random(seed)
    tally = Tally()
    disk = DiskFaults()
    with disk.installed():
        for n in range(rounds):
            for name, scenario in SCENARIOS.items():
                path = workdir / f"{name}-{n}"
                await scenario(rng, path, disk, tally)
            portal_dir = workdir / f"portal-{n}"
            portal_dir.mkdir()
            await portal_round(rng, portal_dir, tally)
    tally.faults.update(disk.injected)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results/reliability/faults.json"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    logging.basicConfig(level=logging.CRITICAL + 1)  # the faults are expected: keep stderr for the summary
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s5vec-faults-") as tmp:
        tally = asyncio.run(campaign(args.rounds, seed, Path(tmp)))
    seconds = round(time.time() - started, 2)
    ok = tally.lost == 0 and tally.corrupt_served == 0 and not tally.errors
    result = {
        "name": "faults", "command": " ".join(["python -m s5vec_tools.faults", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "seconds": seconds, "ok": ok,
        "summary": {
            "faults_injected": dict(sorted(tally.faults.items())), "acknowledged": tally.acknowledged,
            "refused": tally.refused, "lost": tally.lost, "corrupt_served": tally.corrupt_served,
            "restarts": tally.restarts, "checkpoints_failed": tally.checkpoints_failed,
            "checkpoints_ok": tally.checkpoints_ok, "corrupt_detected": tally.corrupt_detected,
            "refused_cleanly": tally.refused_cleanly, "rounds": args.rounds, "seed": seed,
        },
        "errors": tally.errors[:50],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
