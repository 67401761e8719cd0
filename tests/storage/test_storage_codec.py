"""Blob codec: CBOR + zstd round trips, and malformed input surfacing only as BlobCorrupt."""

from __future__ import annotations

import math

import cbor2
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from s5vec.storage import BlobCorrupt, decode_blob, decode_bytes_blob, encode_blob

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=40,
)


def _same(a, b) -> bool:
    """Equality that also tells 1 from True and 0.0 from -0.0, which == does not."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(obj=DOCUMENTS)
def test_codec_round_trips_cbor_documents(obj):
    assert _same(decode_blob(encode_blob(obj)), obj)


@settings(max_examples=100, deadline=None)
@given(obj=DOCUMENTS)
def test_encode_blob_is_deterministic_for_equal_documents(obj):
    assert encode_blob(obj) == encode_blob(obj)


def test_encode_blob_orders_map_keys_canonically():
    assert encode_blob({"b": 1, "a": [1, 2], "aa": b"x"}) == encode_blob({"aa": b"x", "a": [1, 2], "b": 1})


def test_codec_round_trips_a_document_above_the_fast_compression_threshold():
    # More than 4 MiB of CBOR takes the multi-threaded, fast-level path.
    obj = {"vectors": bytes(range(256)) * (5 << 12), "ids": list(range(1000))}
    assert len(cbor2.dumps(obj)) > 4 << 20
    assert decode_blob(encode_blob(obj)) == obj


def test_encoded_blob_is_a_zstd_frame_holding_canonical_cbor():
    obj = {"z": 1, "a": [b"\x00", "text", 1.5]}
    raw = zstandard.ZstdDecompressor().decompress(encode_blob(obj))
    assert raw == cbor2.dumps(obj, canonical=True)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256))
def test_decode_blob_on_arbitrary_bytes_raises_only_blob_corrupt(data):
    try:
        decode_blob(data)
    except BlobCorrupt:
        pass


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=128))
def test_decode_blob_on_arbitrary_compressed_bytes_raises_only_blob_corrupt(raw):
    # Wrapping the bytes in a valid zstd frame gets them past zstd to the CBOR decoder.
    try:
        decode_blob(zstandard.ZstdCompressor().compress(raw))
    except BlobCorrupt:
        pass


@settings(max_examples=100, deadline=None)
@given(obj=DOCUMENTS, data=st.data())
def test_decode_blob_rejects_a_truncated_blob(obj, data):
    blob = encode_blob(obj)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(BlobCorrupt):
        decode_blob(blob[:cut])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x81" * 100_000 + b"\x00",
        b"\xd8\x1e\x82\x01\x00",
        b"\xc1\xfb\x7f\xef\xff\xff\xff\xff\xff\xff",
        b"\xd8\x1d\x00",
        b"\x5f\x41\x00\x61\x00\xff",
        b"\xbf\x61a",
        b"\xff",
    ],
    ids=["empty", "deep-nesting", "rational-zero-denominator", "huge-epoch-datetime",
         "dangling-shared-reference", "mixed-indefinite-string", "unterminated-map", "lone-break"],
)
def test_decode_blob_raises_blob_corrupt_for_hostile_cbor(raw):
    with pytest.raises(BlobCorrupt):
        decode_blob(zstandard.ZstdCompressor().compress(raw))


@pytest.mark.parametrize("data", [b"", b"not zstd", b"\x28\xb5\x2f\xfd", b"\x28\xb5\x2f\xfd" + b"\x00" * 16])
def test_decode_blob_raises_blob_corrupt_for_bytes_that_are_not_zstd(data):
    with pytest.raises(BlobCorrupt):
        decode_blob(data)


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536, 70_000])
def test_a_byte_string_blob_decodes_to_the_same_bytes_without_the_cbor_decoder(size: int) -> None:
    # every CBOR length width (inline, 1, 2 and 4 bytes) of the fast path
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    got = decode_bytes_blob(encode_blob(data))
    assert bytes(got) == data == decode_blob(encode_blob(data))


def test_a_byte_string_blob_in_another_cbor_form_still_decodes() -> None:
    indefinite = b"\x5f\x43abc\x42de\xff"  # an indefinite-length byte string: the real decoder's job
    assert bytes(decode_bytes_blob(zstandard.ZstdCompressor().compress(indefinite))) == b"abcde"


@pytest.mark.parametrize("raw, problem", [
    (cbor2.dumps([1, 2]), "holds a list, not a byte string"),
    (cbor2.dumps("text"), "holds a str, not a byte string"),
    (cbor2.dumps(b"abc")[:-1], "not valid zstd-compressed CBOR"),  # payload cut short
])
def test_a_chunk_blob_that_is_not_one_byte_string_is_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(BlobCorrupt, match=problem):
        decode_bytes_blob(zstandard.ZstdCompressor().compress(raw))


def test_a_chunk_blob_that_is_not_zstd_is_refused() -> None:
    with pytest.raises(BlobCorrupt, match="not valid zstd"):
        decode_bytes_blob(b"not zstd at all")
