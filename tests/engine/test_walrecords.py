"""WAL records: typed, versioned, one encoder and one decoder for both formats."""

from __future__ import annotations

import cbor2
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from s5vec.engine.walrecords import (
    FORMAT, Create, Delete, Drop, Lost, Meta, Upsert, decode_record, encode_record,
)
from s5vec.storage import WalCorrupt

RECORDS = [
    Create("c", {"name": "c", "dimension": 3}),
    Drop("c"),
    Meta("c", "r1", {"genre": "news", "views": 3}),
    Upsert("c", ["a", "b"], b"\0" * 24, [{}, {"x": 1}], b"\0" * 16),
    Delete("c", ["a"]),
    Lost("", aside="/d/wal-damaged/x.bin", segment="1.wal", start=4, end=9, salvaged_at=1.5),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_and_is_written_in_the_current_format(record) -> None:
    payload = encode_record(record)
    assert cbor2.loads(payload)["fmt"] == FORMAT
    assert decode_record(7, payload) == record


@pytest.mark.parametrize("record", RECORDS[:5], ids=lambda r: type(r).__name__)
def test_a_format_1_record_without_fmt_decodes_to_the_same_record(record) -> None:
    legacy = {"op": record.__struct_config__.tag, **msgspec.structs.asdict(record)}
    assert decode_record(3, cbor2.dumps(legacy)) == record


def test_a_record_of_a_newer_format_is_refused_naming_the_format_and_lsn() -> None:
    payload = cbor2.dumps({"fmt": FORMAT + 1, "op": "drop", "c": "c"})
    with pytest.raises(WalCorrupt, match=rf"WAL record 9: format {FORMAT + 1} is not one this release reads"):
        decode_record(9, payload)


@pytest.mark.parametrize("raw, field", [
    ({"op": "meta", "c": "v", "id": 3, "m": {}}, "'id'"),
    ({"op": "upsert", "c": "v", "ids": ["x"], "v": b"\0" * 12, "t": b"\0" * 8}, "'m'"),
    ({"op": "delete", "c": 5, "ids": []}, "'c'"),
    ({"op": "create", "c": "v", "config": [1]}, "'config'"),
])
def test_a_record_of_the_wrong_shape_names_its_field(raw, field) -> None:
    with pytest.raises(WalCorrupt, match=rf"WAL record 4: field {field}"):
        decode_record(4, cbor2.dumps(raw))


@given(st.binary(max_size=64))
def test_any_bytes_decode_to_a_record_or_wal_corrupt(data: bytes) -> None:
    try:
        decode_record(1, data)
    except WalCorrupt:
        pass
