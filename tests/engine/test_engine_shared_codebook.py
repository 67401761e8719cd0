"""The engine keeps one codebook per collection: trained by the migration that first seals
enough rows, calibrated right after, stored as its own blob that every manifest names,
kept by garbage collection and found again after a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s5vec.engine import Database, EngineConfig, Query
from s5vec.engine.manifest import read_manifest, referenced_blobs
from s5vec.index import CollectionConfig, RawItem, prepare_vectors
from s5vec.storage import BlobCorrupt, BlobId

DIM = 32
ROWS = 12_000
OLD = 1_000_000.0  # long before the recent tier's age threshold: migrate seals it
CONFIG = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600, keep_manifests=1)


def rows(seed: int = 3) -> np.ndarray:
    """Clustered rows (an IVF has structure to find), as float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    return (centres[rng.integers(0, 40, ROWS)] + 0.35 * rng.normal(size=(ROWS, DIM))).astype(np.float32)


async def fill(db: Database, data: np.ndarray) -> None:
    await db.create_collection(CollectionConfig("c", DIM, segment_records=ROWS // 2))
    for start in range(0, ROWS, 3000):
        await db.upsert("c", [RawItem(str(i), data[i], {"i": i}, OLD + (i % 2) * 86_400.0)
                              for i in range(start, start + 3000)])


async def answers(db: Database, queries: np.ndarray) -> list[list[str]]:
    config = db.collection("c").config
    out = []
    for q in queries:
        hits, _ = await db.search("c", prepare_vectors(config, q[None, :])[0], Query(k=10, include_metadata=False))
        out.append([h.id for h in hits])
    return out


async def test_a_migration_trains_calibrates_and_persists_one_codebook(tmp_path: Path) -> None:
    data = rows()
    queries = data[:40] + 0.05
    db = await Database.open(tmp_path, CONFIG)
    try:
        await fill(db, data)
        assert db.collection("c").coarse is None
        await db.migrate()
        coll = db.collection("c")
        assert coll.coarse is not None and len(coll.segments) == 2
        assert {s.codebook for s in coll.segments} == {coll.coarse.id}
        stats = (await db.stats("c"))[0]
        assert stats["codebook"]["id"] == coll.coarse.id and stats["codebook"]["segments"] == 2
        calibrated = stats["calibrated"]
        assert calibrated["source"] == "calibrated" and calibrated["recall"] >= 0.95
        assert calibrated["rows"] == ROWS and "rerank" in calibrated
        before = await answers(db, queries)
        normed = data / np.linalg.norm(data, axis=1, keepdims=True)
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        truth = np.argsort(-(qn @ normed.T), axis=1)[:, :10]
        found = sum(len(set(map(int, got)) & set(want.tolist())) for got, want in zip(before, truth))
        assert found / (10 * len(queries)) >= 0.95
        await db.checkpoint()
        await db.upsert("c", [RawItem("late", data[0], {"i": -1})])
        await db.checkpoint()  # a second manifest; the first is collected
        await db.collect_garbage()
        before = await answers(db, queries)
        manifest = await read_manifest(db.store, db.root)  # type: ignore[arg-type]
        entry = manifest["collections"]["c"]["codebook"]
        assert entry["id"] == coll.coarse.id and entry["rows"] == coll.codebook_rows
        refs = {BlobId.from_bytes(ref) for ref in entry["chunks"]}
        assert refs <= referenced_blobs(manifest)
        stored = set(await db.store.list())
        assert refs <= stored  # garbage collection kept what the manifest names
    finally:
        await db.close()
    db = await Database.open(tmp_path, CONFIG)
    try:
        coll = db.collection("c")
        assert coll.coarse is not None and coll.coarse.id == entry["id"]
        assert (await db.stats("c"))[0]["calibrated"] == {**calibrated}
        assert await answers(db, queries) == before
    finally:
        await db.close()


async def test_a_damaged_codebook_blob_is_reported_not_used(tmp_path: Path) -> None:
    data = rows()
    db = await Database.open(tmp_path, CONFIG)
    await fill(db, data)
    await db.migrate()
    await db.close()
    db = await Database.open(tmp_path, CONFIG, read_only=True)
    manifest = await read_manifest(db.store, db.root)  # type: ignore[arg-type]
    ref = BlobId.from_bytes(manifest["collections"]["c"]["codebook"]["chunks"][1])
    path = next(p for p in (tmp_path / "blobs").rglob("*") if p.is_file() and str(ref) in p.name)
    await db.close()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt) as caught:  # the daemon exits naming the blob: no search with a bad codebook
        await Database.open(tmp_path, CONFIG)
    assert str(ref) in str(caught.value)
