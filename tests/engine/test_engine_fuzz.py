"""Bad bytes in what the engine reads back: WAL record payloads and manifests. Only
WalCorrupt / BlobCorrupt come out, naming what is wrong; a record the engine would not be
able to read back is refused when written; recovery never skips a record silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given

from s5vec_tools.fuzz import TARGETS, Target, fuzz_settings
from s5vec.index import CollectionConfig, InvalidRecord
from s5vec.index.records import MAX_METADATA_DEPTH, RawItem
from s5vec.engine import Database
from s5vec.engine.manifest import manifest_problem, referenced_blobs
from s5vec.storage import BlobCorrupt, BlobId, WalCorrupt
from s5vec.storage.wal import WriteAheadLog

OPS = {t.name: t for t in TARGETS if t.name.startswith("ops.")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_decoder_raises_only_its_documented_error_on_damaged_input(name: str) -> None:
    target: Target = OPS[name]

    @fuzz_settings(150)
    @given(value=target.inputs)
    def run(value: object) -> None:
        target.check(value)
    run()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_metadata_nested_deeper_than_the_limit_is_refused_and_the_data_dir_reopens(tmp_path: Path) -> None:
    db = await Database.open(tmp_path)
    await db.create_collection(CollectionConfig("v", 3))
    ok = {"a": nested(MAX_METADATA_DEPTH - 1)}
    written, errors = await db.upsert("v", [RawItem("ok", [1, 0, 0], ok),
                                            RawItem("deep", [0, 1, 0], {"a": nested(600)})])
    assert written == ["ok"]
    assert [(e.id, e.code) for e in errors] == [("deep", "invalid_request")]
    assert "levels deep" in errors[0].message
    with pytest.raises(InvalidRecord, match="levels deep"):
        await db.update_metadata("v", "ok", {"b": nested(600)})
    await db.close(checkpoint=False)  # replay from the WAL
    db = await Database.open(tmp_path)
    assert (await db.get("v", "ok")).metadata == ok
    await db.close(checkpoint=True)  # and from the checkpoint blobs
    db = await Database.open(tmp_path)
    assert (await db.get("v", "ok")).metadata == ok
    await db.close(checkpoint=False)


@pytest.mark.parametrize("record, field", [
    ({"op": "upsert", "c": "v", "ids": ["x"], "v": b"\0" * 12, "t": b"\0" * 8}, "'m'"),
    ({"op": "upsert", "c": "v", "ids": ["x"], "v": b"\0" * 5, "t": b"\0" * 8, "m": [{}]}, "'v'"),
    ({"op": "meta", "c": "v", "id": 3, "m": {}}, "'id'"),
    ({"op": "explode", "c": "v"}, "unknown operation"),
    ([1, 2], "not a map"),
])
async def test_recovery_stops_at_a_crc_valid_record_of_the_wrong_shape_naming_its_lsn(
        tmp_path: Path, record: Any, field: str) -> None:
    db = await Database.open(tmp_path)
    await db.create_collection(CollectionConfig("v", 3))
    await db.upsert("v", [RawItem("keep", [1, 0, 0], {"n": 1})])
    lsn = db.applied_lsn
    await db.close(checkpoint=False)
    wal = WriteAheadLog(tmp_path / "wal")
    list(wal.recover(0))
    wal.append([cbor2.dumps(record)])
    wal.close()
    with pytest.raises(WalCorrupt, match=rf"WAL record {lsn + 1}\b.*{field}"):
        await Database.open(tmp_path)


async def test_recovery_of_a_record_that_does_not_fit_the_collection_is_wal_corrupt(tmp_path: Path) -> None:
    db = await Database.open(tmp_path)
    await db.create_collection(CollectionConfig("v", 3))
    lsn = db.applied_lsn
    await db.close(checkpoint=False)
    wal = WriteAheadLog(tmp_path / "wal")
    list(wal.recover(0))
    wal.append([cbor2.dumps({"op": "upsert", "c": "v", "ids": ["x"], "v": b"\0" * 8, "t": b"\0" * 8, "m": [{}]})])
    wal.close()
    with pytest.raises(WalCorrupt, match=rf"WAL record {lsn + 1} \(upsert on 'v'\) cannot be applied"):
        await Database.open(tmp_path)


@pytest.mark.parametrize("manifest, problem", [
    ({"lsn": 1, "collections": []}, "'collections' must be a map"),
    ({"lsn": "1", "collections": {}}, "'lsn'"),
    ({"lsn": 1, "collections": {"v": {"config": {}, "recent": {}}}}, "'records' blob id"),
    ({"lsn": 1, "collections": {"v": {"config": {}, "recent": {"records": b"x"}, "segments": [{"frozen": b"",
                                                                                             "mutable": b""}]}}},
     "segment 'chunks'"),
])
def test_manifest_of_the_wrong_shape_is_named_before_any_field_is_used(manifest: dict[str, Any], problem: str) -> None:
    assert problem in (manifest_problem(manifest) or "")


def test_manifest_naming_a_malformed_blob_id_is_blob_corrupt() -> None:
    manifest = {"lsn": 1, "collections": {"v": {"config": {}, "recent": {"records": b"not an id"}}}}
    assert manifest_problem(manifest) is None
    with pytest.raises(BlobCorrupt, match="malformed blob id"):
        referenced_blobs(manifest)
    good = {"lsn": 1, "collections": {"v": {"config": {}, "recent": {"records": BlobId.of(b"r").to_bytes()}}}}
    assert referenced_blobs(good) == {BlobId.of(b"r")}
