"""BlobId against the S5 golden vectors, plus multibase round trips and rejection."""

from __future__ import annotations

import base64
import json
import re

import base58
import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s5vec.storage import BlobId, blake3_digest, multibase_decode

from conftest import SHARED  # noqa: E402

VECTORS_PATH = SHARED / "s5" / "vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())
BLOB_VECTORS = VECTORS["blob_id"]
LEGACY_VECTORS = VECTORS["legacy_raw_cid"]
DATA_VECTORS = [v for v in BLOB_VECTORS if "data_utf8" in v]
MULTIHASH_VECTORS = [v for v in BLOB_VECTORS if "multihash_hex" in v]
HELLO = b"Hello, world!"


def _b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


def _b58(raw: bytes) -> str:
    return "z" + base58.b58encode(raw).decode()


def _b64url(raw: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _expected_id(vector: dict) -> BlobId:
    """The (hash, size) a golden entry names, read from the vector itself, not via BlobId.of."""
    if "multihash_hex" in vector:
        return BlobId(hash=bytes.fromhex(vector["multihash_hex"])[1:], size=vector["size"])
    return BlobId(hash=bytes.fromhex(vector["hex"])[3:35], size=len(vector["data_utf8"].encode()))


def _golden_forms(vector: dict) -> list[str]:
    forms = [vector[key] for key in ("base16", "base32", "base58", "base64url") if key in vector]
    if "hex" in vector:
        forms.append("f" + vector["hex"])
    return forms


def test_golden_vectors_file_is_present_and_has_blob_entries():
    assert VECTORS_PATH.is_file()
    assert DATA_VECTORS and MULTIHASH_VECTORS and LEGACY_VECTORS


@pytest.mark.parametrize("vector", DATA_VECTORS, ids=lambda v: repr(v["data_utf8"]))
def test_blob_id_of_golden_data_matches_every_golden_encoding(vector):
    blob_id = BlobId.of(vector["data_utf8"].encode())
    raw = blob_id.to_bytes()
    assert raw.hex() == vector["hex"]
    assert blob_id == _expected_id(vector)
    if "base16" in vector:
        assert "f" + raw.hex() == vector["base16"]
    if "base32" in vector:
        assert blob_id.base32() == vector["base32"]
        assert str(blob_id) == vector["base32"]
    if "base58" in vector:
        assert blob_id.base58() == vector["base58"]
    if "base64url" in vector:
        assert _b64url(raw) == vector["base64url"]


def test_blob_id_hash_is_the_plain_blake3_of_the_bytes():
    assert BlobId.of(HELLO).hash == blake3.blake3(HELLO).digest()


@pytest.mark.parametrize(
    ("vector", "text"),
    [(v, form) for v in BLOB_VECTORS for form in _golden_forms(v)],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_parsing_each_golden_multibase_form_gives_the_golden_blob_id(vector, text):
    assert BlobId.parse(text) == _expected_id(vector)


def test_empty_blob_size_is_encoded_as_one_zero_byte():
    (vector,) = [v for v in DATA_VECTORS if v["data_utf8"] == ""]
    blob_id = BlobId.of(b"")
    assert blob_id.size == 0
    assert blob_id.to_bytes().hex() == vector["hex"]
    assert blob_id.to_bytes()[35:] == b"\x00"
    assert len(blob_id.to_bytes()) == 3 + 32 + 1


def test_blob_id_without_size_bytes_parses_as_size_zero():
    # s5-rs writes no size byte at all for an empty blob.
    empty = BlobId.of(b"")
    assert BlobId.from_bytes(b"\x5b\x82\x1e" + empty.hash) == empty


def test_blob_id_with_untrimmed_size_bytes_parses_to_the_same_id():
    blob_id = BlobId.of(HELLO)
    untrimmed = b"\x5b\x82\x1e" + blob_id.hash + len(HELLO).to_bytes(8, "little")
    assert BlobId.from_bytes(untrimmed) == blob_id


@pytest.mark.parametrize("vector", MULTIHASH_VECTORS, ids=lambda v: str(v["size"]))
def test_blob_id_from_multihash_and_size_encodes_to_golden_b_z_u_forms(vector):
    blob_id = BlobId(hash=bytes.fromhex(vector["multihash_hex"])[1:], size=vector["size"])
    assert blob_id.base32() == vector["base32"]
    assert blob_id.base58() == vector["base58"]
    assert _b64url(blob_id.to_bytes()) == vector["base64url"]
    assert blob_id.to_bytes()[3:] == bytes.fromhex(vector["multihash_hex"])[1:] + vector["size"].to_bytes(2, "little")


@pytest.mark.parametrize("vector", LEGACY_VECTORS, ids=lambda v: repr(v["data_utf8"]))
def test_legacy_cid_of_golden_data_matches_golden_hex_and_base58(vector):
    blob_id = BlobId.of(vector["data_utf8"].encode())
    assert blob_id.to_legacy_cid().hex() == vector["hex"]
    assert _b58(blob_id.to_legacy_cid()) == vector["base58"]


@pytest.mark.parametrize("vector", LEGACY_VECTORS, ids=lambda v: repr(v["data_utf8"]))
def test_parsing_every_form_of_a_golden_legacy_cid_gives_the_current_blob_id(vector):
    raw = bytes.fromhex(vector["hex"])
    expected = BlobId.of(vector["data_utf8"].encode())
    for text in ("f" + vector["hex"], vector["base58"], _b32(raw), _b64url(raw)):
        assert BlobId.parse(text) == expected, text


def test_base32_form_is_lower_case_unpadded_and_file_name_safe():
    for size in (0, 1, 13, 5050, 2**64 - 1):
        text = BlobId(hash=bytes(range(32)), size=size).base32()
        assert re.fullmatch(r"b[a-z2-7]+", text), text


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x5b\x82",
        b"\x5b\x82\x1e" + bytes(31),
        b"\x5b\x82\x1e" + bytes(41),
        b"\x26\x1f" + bytes(31),
        b"\x1e" + bytes(33),
        b"\x5b\x82\x1f" + bytes(33),
    ],
    ids=["empty", "prefix-only", "short-hash", "size-too-long", "short-legacy", "bare-multihash", "wrong-prefix"],
)
def test_from_bytes_rejects_non_blob_identifiers_with_value_error(raw):
    with pytest.raises(ValueError):
        BlobId.from_bytes(raw)


@pytest.mark.parametrize(
    "text",
    ["", "q123", "Fabcd", "fzz", "f0", "fé", "z0OIl", "zé", "b1", "ba", "bé", "ua", "ué"],
)
def test_multibase_decode_rejects_garbage_with_value_error(text):
    with pytest.raises(ValueError):
        multibase_decode(text)


@pytest.mark.parametrize("text", ["", "zhJTU2Mz5", "b" + "a" * 56, "f00", "u" + "A" * 48])
def test_blob_id_parse_rejects_strings_that_are_not_blob_ids_with_value_error(text):
    with pytest.raises(ValueError):
        BlobId.parse(text)


def test_blake3_digest_of_a_large_input_matches_chunked_single_thread_hashing():
    # Above 1 MiB the digest is computed on several threads; it must not change.
    data = bytes(range(256)) * (5 << 12) + b"tail"
    hasher = blake3.blake3()
    for start in range(0, len(data), 4096):
        hasher.update(data[start:start + 4096])
    assert blake3_digest(data) == hasher.digest()
    assert BlobId.of(memoryview(data)) == BlobId.of(data)


HASHES = st.binary(min_size=32, max_size=32)
SIZES = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(digest=HASHES, size=SIZES)
def test_blob_id_round_trips_through_every_multibase_form(digest, size):
    blob_id = BlobId(hash=digest, size=size)
    raw = blob_id.to_bytes()
    assert BlobId.from_bytes(raw) == blob_id
    for text in (blob_id.base32(), blob_id.base58(), str(blob_id), "f" + raw.hex(), _b64url(raw)):
        assert BlobId.parse(text) == blob_id, text
        assert multibase_decode(text) == raw
    legacy = blob_id.to_legacy_cid()
    for text in ("f" + legacy.hex(), _b32(legacy), _b58(legacy), _b64url(legacy)):
        assert BlobId.parse(text) == blob_id, text


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.builds(lambda p, t: p + t, st.sampled_from("fbzu"), st.text())))
def test_multibase_decode_returns_bytes_or_raises_value_error_only(text):
    try:
        decoded = multibase_decode(text)
    except ValueError:
        return
    assert isinstance(decoded, bytes)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.builds(lambda p, t: p + t, st.sampled_from("fbzu"), st.text())))
def test_blob_id_parse_returns_a_blob_id_or_raises_value_error_only(text):
    try:
        blob_id = BlobId.parse(text)
    except ValueError:
        return
    assert len(blob_id.hash) == 32 and 0 <= blob_id.size < 2**64


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=48))
def test_blob_id_from_bytes_returns_a_blob_id_or_raises_value_error_only(raw):
    try:
        blob_id = BlobId.from_bytes(raw)
    except ValueError:
        return
    assert len(blob_id.hash) == 32 and 0 <= blob_id.size < 2**64
