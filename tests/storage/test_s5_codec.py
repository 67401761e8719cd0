"""The S5 codec (registry entries, blob encryption, seed phrases) against the golden vectors,
plus property tests of every round trip and of tamper rejection."""

from __future__ import annotations

import json

import blake3
import pytest
from conftest import SHARED
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.signing import VerifyKey
from s5vec.storage import BlobCorrupt, BlobId
from s5vec.storage.s5 import (
    MAX_REVISION,
    Identity,
    InvalidSeedPhrase,
    RegistryEntry,
    b64url,
    b64url_decode,
    blob_id_from_pointer,
    challenge_response,
    checksum_words,
    decrypt_blob,
    dhi,
    dhs,
    encrypt_blob,
    entropy_to_phrase,
    generate_phrase,
    pad_file_size,
    phrase_to_entropy,
    pointer_data,
    public_key_of,
    sign_challenge,
    sign_entry,
    signed_message,
    validate_phrase,
)

VECTORS = json.loads((SHARED / "s5" / "vectors.json").read_text())
WORDS = (SHARED / "s5" / "wordlist.txt").read_text().split()
REGISTRY = VECTORS["registry"]
PHRASES = [v for v in VECTORS["seed_phrase"] if "phrase" in v]
(EMPTY_CHECKSUM,) = [v["checksum_words_of_blake3_empty"] for v in VECTORS["seed_phrase"]
                     if "checksum_words_of_blake3_empty" in v]
IDENTITIES = VECTORS["identity"]
ENCRYPTIONS = VECTORS["mutable_encryption"]
COVERED_HERE = {"registry", "seed_phrase", "pad_file_size", "mutable_encryption_sizes", "identity",
                "mutable_encryption"}
COVERED_ELSEWHERE = {"blob_id", "legacy_raw_cid"}  # tests/storage/test_storage_blobid.py
KEY = bytes(range(32))

SEEDS = st.binary(min_size=32, max_size=32)
REVISIONS = st.integers(min_value=0, max_value=MAX_REVISION)
DATA = st.binary(max_size=48)
ENTROPIES = st.binary(min_size=16, max_size=16)
HOSTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:", min_size=1, max_size=40)


def _flip(raw: bytes, bit: int) -> bytes:
    out = bytearray(raw)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# Golden vectors ---------------------------------------------------------------------------


def test_every_golden_vector_family_is_checked_by_some_test():
    assert set(VECTORS) - {"_about"} <= COVERED_HERE | COVERED_ELSEWHERE
    assert REGISTRY and PHRASES and IDENTITIES and ENCRYPTIONS and VECTORS["pad_file_size"]


@pytest.mark.parametrize("vector", REGISTRY, ids=lambda v: f"rev{v['revision']}")
def test_signing_golden_registry_input_gives_golden_signature_and_serialization(vector):
    seed = bytes.fromhex(vector["ed25519_seed"])
    entry = sign_entry(seed, vector["revision"], bytes.fromhex(vector["data"]))
    assert entry.public_key == public_key_of(seed)
    assert entry.verify()
    assert "signature" in vector or "serialized" in vector
    if "signature" in vector:
        assert entry.signature.hex() == vector["signature"]
    if "serialized" in vector:
        assert entry.serialize().hex() == vector["serialized"]
        assert RegistryEntry.parse(bytes.fromhex(vector["serialized"])) == entry


def test_golden_serialized_registry_entry_parses_to_fields_and_verifies():
    (vector,) = [v for v in REGISTRY if "serialized" in v]
    entry = RegistryEntry.parse(bytes.fromhex(vector["serialized"]))
    assert entry.public_key == public_key_of(bytes.fromhex(vector["ed25519_seed"]))
    assert entry.revision == vector["revision"]
    assert entry.data.hex() == vector["data"]
    assert entry.verify()


def test_golden_registry_pointer_data_is_the_s5_prefix_of_our_pointer_to_the_same_blob():
    # The upstream vector points at blake3(b""): our pointer is that plus the size byte.
    (vector,) = [v for v in REGISTRY if v["data"].startswith("1e")]
    s5_pointer = bytes.fromhex(vector["data"])
    assert pointer_data(BlobId.of(b""))[:33] == s5_pointer
    with pytest.raises(ValueError, match="no size"):
        blob_id_from_pointer(s5_pointer)


@pytest.mark.parametrize("vector", PHRASES, ids=lambda v: v["phrase"].split()[0])
def test_golden_phrase_is_valid_and_round_trips_through_its_entropy(vector):
    assert validate_phrase(vector["phrase"]) is vector.get("valid", True)
    entropy = phrase_to_entropy(vector["phrase"])
    if "entropy" in vector:
        assert entropy.hex() == vector["entropy"]
    assert entropy_to_phrase(entropy) == vector["phrase"]


def test_checksum_words_of_empty_input_match_golden_pair():
    assert list(checksum_words(b"")) == EMPTY_CHECKSUM


@pytest.mark.parametrize(("size", "padded"), VECTORS["pad_file_size"])
def test_pad_file_size_matches_golden_pairs(size, padded):
    assert pad_file_size(size) == padded


@pytest.mark.parametrize(("size", "blob_size"), VECTORS["mutable_encryption_sizes"])
def test_encrypted_blob_of_golden_plaintext_size_has_golden_length(size, blob_size):
    blob = encrypt_blob(KEY, bytes(size))
    assert len(blob) == blob_size
    assert decrypt_blob(KEY, blob) == bytes(size)


@pytest.mark.parametrize("vector", ENCRYPTIONS, ids=lambda v: v["plaintext_utf8"])
def test_encrypting_golden_plaintext_with_golden_nonce_gives_golden_blob(vector):
    key, nonce = bytes.fromhex(vector["key"]), bytes.fromhex(vector["nonce"])
    plaintext = vector["plaintext_utf8"].encode()
    assert encrypt_blob(key, plaintext, nonce=nonce).hex() == vector["blob"]
    assert decrypt_blob(key, bytes.fromhex(vector["blob"])) == plaintext


@pytest.mark.parametrize("vector", IDENTITIES, ids=lambda v: v["entropy"][:8])
def test_identity_from_golden_entropy_derives_golden_keys(vector):
    identity = Identity.from_entropy(bytes.fromhex(vector["entropy"]))
    assert identity.seed.hex() == vector["seed"]
    assert identity.file_system.hex() == vector["file_system_seed"]
    assert identity.fs_root_write_key.hex() == vector["fs_root_write_key"]
    assert public_key_of(identity.fs_root_write_key).hex() == vector["fs_root_registry_pk"]


def test_identity_from_golden_phrase_equals_identity_from_its_entropy():
    for vector in PHRASES:
        entropy = phrase_to_entropy(vector["phrase"])
        assert Identity.from_phrase(vector["phrase"]) == Identity.from_entropy(entropy)


# Registry entries --------------------------------------------------------------------------


ENTRIES = st.builds(
    RegistryEntry,
    public_key=st.binary(min_size=32, max_size=32).map(lambda k: b"\xed" + k),
    revision=st.integers(min_value=0, max_value=2**64 - 1),
    data=st.binary(max_size=64),
    signature=st.binary(min_size=64, max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(entry=ENTRIES)
def test_registry_entry_round_trips_through_bytes_and_portal_json(entry):
    raw = entry.serialize()
    assert len(raw) == 1 + 33 + 8 + 1 + len(entry.data) + 64
    assert RegistryEntry.parse(raw) == entry
    assert RegistryEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, revision=REVISIONS, data=DATA)
def test_signed_registry_entry_verifies_and_signs_the_message_without_the_key(seed, revision, data):
    entry = sign_entry(seed, revision, data)
    assert entry.verify()
    assert entry.signed_message() == signed_message(revision, data)
    assert signed_message(revision, data) == b"\x07" + revision.to_bytes(8, "little") + bytes([len(data)]) + data
    VerifyKey(entry.public_key[1:]).verify(entry.signed_message(), entry.signature)
    assert RegistryEntry.parse(entry.serialize()).verify()


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, revision=REVISIONS, data=DATA, bit=st.integers(min_value=0, max_value=511))
def test_registry_entry_with_flipped_signature_bit_does_not_verify(seed, revision, data, bit):
    entry = sign_entry(seed, revision, data)
    assert not RegistryEntry(entry.public_key, revision, data, _flip(entry.signature, bit)).verify()


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, revision=REVISIONS, data=st.binary(min_size=1, max_size=48), bit=st.integers(0, 383))
def test_registry_entry_with_flipped_data_bit_does_not_verify(seed, revision, data, bit):
    entry = sign_entry(seed, revision, data)
    tampered = _flip(data, bit % (8 * len(data)))
    assert not RegistryEntry(entry.public_key, revision, tampered, entry.signature).verify()


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, revision=REVISIONS, data=DATA, other=REVISIONS)
def test_registry_entry_with_another_revision_does_not_verify(seed, revision, data, other):
    assume(other != revision)
    entry = sign_entry(seed, revision, data)
    assert not RegistryEntry(entry.public_key, other, data, entry.signature).verify()


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, data=DATA, bit=st.integers(min_value=8, max_value=263))
def test_registry_entry_under_a_flipped_public_key_bit_does_not_verify(seed, data, bit):
    entry = sign_entry(seed, 1, data)
    assert not RegistryEntry(_flip(entry.public_key, bit), 1, data, entry.signature).verify()


def test_registry_entry_signed_by_another_key_does_not_verify():
    entry = sign_entry(bytes(32), 1, b"x")
    other = public_key_of(b"\x01" * 32)
    assert not RegistryEntry(other, 1, b"x", entry.signature).verify()


def test_sign_entry_rejects_data_over_48_bytes_as_data_too_long():
    sign_entry(bytes(32), 0, bytes(48))
    with pytest.raises(ValueError, match="data too long"):
        sign_entry(bytes(32), 0, bytes(49))


@pytest.mark.parametrize("revision", [-1, MAX_REVISION + 1, 2**64])
def test_sign_entry_rejects_revision_outside_zero_to_two_to_the_48(revision):
    with pytest.raises(ValueError, match="revision"):
        sign_entry(bytes(32), revision, b"")


def test_sign_entry_accepts_the_largest_revision():
    assert sign_entry(bytes(32), MAX_REVISION, b"").verify()


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)])
def test_signing_with_a_seed_that_is_not_32_bytes_raises_value_error(seed):
    with pytest.raises(ValueError, match="32 bytes"):
        sign_entry(seed, 0, b"")
    with pytest.raises(ValueError, match="32 bytes"):
        public_key_of(seed)


GOOD_RAW = sign_entry(bytes(32), 7, b"abc").serialize()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "too short"),
        (GOOD_RAW[:100], "too short"),
        (b"\x08" + GOOD_RAW[1:], "type byte"),
        (GOOD_RAW + b"\x00", "does not match"),
        (GOOD_RAW[:-1], "does not match"),
        (GOOD_RAW[:1] + b"\x00" + GOOD_RAW[2:], "0xed"),
        (GOOD_RAW[:42] + bytes([65]) + bytes(65 + 64), "data too long"),
    ],
    ids=["empty", "truncated", "wrong-type", "trailing-byte", "short-signature", "no-ed-prefix", "data-65"],
)
def test_parsing_malformed_registry_bytes_raises_value_error_saying_why(raw, message):
    with pytest.raises(ValueError, match=message):
        RegistryEntry.parse(raw)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_registry_parse_returns_an_entry_or_raises_value_error_only(raw):
    try:
        entry = RegistryEntry.parse(raw)
    except ValueError:
        return
    assert entry.serialize() == raw


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pk": "AA", "revision": 1, "data": ""}, "signature"),
        ({**sign_entry(bytes(32), 1, b"").to_json(), "revision": "1"}, "integer"),
        ({**sign_entry(bytes(32), 1, b"").to_json(), "revision": True}, "integer"),
        ({**sign_entry(bytes(32), 1, b"").to_json(), "data": "a+b/"}, "base64url"),
        ({**sign_entry(bytes(32), 1, b"").to_json(), "pk": b64url(bytes(32))}, "0xed"),
        ([], "object"),
    ],
    ids=["missing-signature", "string-revision", "bool-revision", "standard-base64", "pk-32", "list"],
)
def test_portal_json_with_a_bad_field_raises_value_error_naming_it(body, message):
    with pytest.raises(ValueError, match=message):
        RegistryEntry.from_json(body)


def test_portal_json_has_unpadded_base64url_fields_and_33_byte_key():
    body = sign_entry(bytes(32), 3, b"\xff\xfe").to_json()
    assert set(body) == {"pk", "revision", "data", "signature"}
    assert body["revision"] == 3
    assert b64url_decode(body["pk"]) == public_key_of(bytes(32))
    for field in ("pk", "data", "signature"):
        assert "=" not in body[field] and "+" not in body[field] and "/" not in body[field]


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=100))
def test_b64url_round_trips_without_padding_and_decode_tolerates_padding(raw):
    text = b64url(raw)
    assert "=" not in text
    assert b64url_decode(text) == raw
    assert b64url_decode(text + "=" * (-len(text) % 4)) == raw


@pytest.mark.parametrize("text", ["a", "abcde", "ab+c", "ab/c", "ab c", "é"])
def test_b64url_decode_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)


# Root pointer ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(digest=st.binary(min_size=32, max_size=32), size=st.integers(min_value=0, max_value=2**64 - 1))
def test_pointer_data_round_trips_fits_in_a_registry_entry_and_starts_with_the_s5_pointer(digest, size):
    blob_id = BlobId(hash=digest, size=size)
    data = pointer_data(blob_id)
    assert data[:33] == b"\x1e" + digest
    assert 34 <= len(data) <= 41
    assert blob_id_from_pointer(data) == blob_id
    assert blob_id_from_pointer(sign_entry(bytes(32), 1, data).data) == blob_id


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "0x1e"), (b"\x1f" + bytes(33), "0x1e"), (b"\x1e" + bytes(31), "bad length"),
     (b"\x1e" + bytes(32), "no size"), (b"\x1e" + bytes(41), "bad length")],
    ids=["empty", "wrong-prefix", "short-hash", "hash-only", "size-too-long"],
)
def test_blob_id_from_malformed_pointer_raises_value_error_saying_why(data, message):
    with pytest.raises(ValueError, match=message):
        blob_id_from_pointer(data)


# Portal challenges -------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, kind=st.sampled_from([1, 2]), challenge=st.binary(min_size=32, max_size=32), host=HOSTS)
def test_signed_challenge_response_has_s5_layout_and_verifies_with_account_key(seed, kind, challenge, host):
    response, signature = sign_challenge(seed, kind, challenge, host)
    assert response == challenge_response(kind, challenge, host)
    assert len(response) == 65
    assert response == bytes([kind]) + challenge + blake3.blake3(host.encode()).digest()
    VerifyKey(public_key_of(seed)[1:]).verify(response, signature)


@pytest.mark.parametrize(("kind", "challenge"), [(0, bytes(32)), (3, bytes(32)), (1, bytes(31)), (2, bytes(33))])
def test_challenge_with_unknown_kind_or_wrong_length_raises_value_error(kind, challenge):
    with pytest.raises(ValueError):
        challenge_response(kind, challenge, "s5.example:443")


# Blob encryption ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(key=SEEDS, data=st.binary(max_size=9000))
def test_encrypted_blob_round_trips_and_is_padded_to_pad_file_size(key, data):
    blob = encrypt_blob(key, data)
    assert blob[:2] == b"\x8d\x01"
    assert len(blob) == pad_file_size(len(data) + 46)
    assert decrypt_blob(key, blob) == data


def test_encrypting_twice_uses_fresh_random_nonces():
    first, second = encrypt_blob(KEY, b"same"), encrypt_blob(KEY, b"same")
    assert first[2:26] != second[2:26]
    assert decrypt_blob(KEY, first) == decrypt_blob(KEY, second) == b"same"


@settings(max_examples=30, deadline=None)
@given(key=SEEDS, other=SEEDS, data=st.binary(max_size=200))
def test_decrypting_with_the_wrong_key_raises_blob_corrupt(key, other, data):
    assume(key != other)
    with pytest.raises(BlobCorrupt, match="authentication"):
        decrypt_blob(other, encrypt_blob(key, data))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200), bit=st.integers(min_value=0, max_value=8 * 4096 - 1))
def test_encrypted_blob_with_any_flipped_bit_raises_blob_corrupt(data, bit):
    with pytest.raises(BlobCorrupt):
        decrypt_blob(KEY, _flip(encrypt_blob(KEY, data), bit))


@pytest.mark.parametrize(
    ("blob", "message"),
    [(b"", "too short"), (b"\x8d\x01" + bytes(43), "too short"), (b"\x8d\x02" + bytes(4094), "header"),
     (encrypt_blob(KEY, b"x")[:-1], "authentication"), (encrypt_blob(KEY, b"x") + b"\x00", "authentication")],
    ids=["empty", "45-bytes", "wrong-version", "truncated", "extended"],
)
def test_decrypting_malformed_blob_raises_blob_corrupt_saying_why(blob, message):
    with pytest.raises(BlobCorrupt, match=message):
        decrypt_blob(KEY, blob)


def test_decrypting_blob_whose_length_field_exceeds_its_plaintext_raises_blob_corrupt():
    nonce = bytes(24)
    plaintext = (5000).to_bytes(4, "little") + bytes(4096 - 46)
    blob = b"\x8d\x01" + nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, None, nonce, KEY)
    with pytest.raises(BlobCorrupt, match="length field"):
        decrypt_blob(KEY, blob)


@pytest.mark.parametrize(("key", "nonce"), [(bytes(31), None), (bytes(32), bytes(23))])
def test_encrypting_with_bad_key_or_nonce_length_raises_value_error(key, nonce):
    with pytest.raises(ValueError):
        encrypt_blob(key, b"data", nonce=nonce)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(min_value=0, max_value=2**60))
def test_pad_file_size_is_an_idempotent_upper_bound_on_a_4_kib_grid(n):
    padded = pad_file_size(n)
    assert n <= padded <= n + n // 10 + 4096
    assert padded % 4096 == 0
    assert pad_file_size(padded) == padded


def test_pad_file_size_rejects_negative_and_overflowing_sizes():
    with pytest.raises(ValueError):
        pad_file_size(-1)
    with pytest.raises(ValueError):
        pad_file_size(2**52 * 80 * 1024 + 1)


# Seed phrases ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(entropy=ENTROPIES)
def test_phrase_round_trips_through_entropy_and_uses_the_word_list(entropy):
    phrase = entropy_to_phrase(entropy)
    words = phrase.split(" ")
    assert len(words) == 15
    assert all(word in WORDS for word in words)
    assert WORDS.index(words[12]) < 256
    assert tuple(WORDS.index(w) for w in words[13:]) == checksum_words(entropy)
    assert phrase_to_entropy(phrase) == entropy


@settings(max_examples=100, deadline=None)
@given(entropy=ENTROPIES, data=st.data())
def test_phrase_matches_by_three_letter_prefix_ignoring_case_and_extra_whitespace(entropy, data):
    typed = []
    for word in entropy_to_phrase(entropy).split():
        form = data.draw(st.sampled_from([word, word[:3], word.upper(), word.capitalize(), word[:3].upper()]))
        typed.append(form)
    gaps = data.draw(st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \r\n "]), min_size=16, max_size=16))
    phrase = gaps[0] + "".join(w + g for w, g in zip(typed, gaps[1:], strict=True))
    assert phrase_to_entropy(phrase) == entropy
    assert Identity.from_phrase(phrase) == Identity.from_entropy(entropy)


@settings(max_examples=100, deadline=None)
@given(entropy=ENTROPIES, position=st.integers(min_value=0, max_value=14), replacement=st.sampled_from(WORDS))
def test_phrase_with_a_substituted_word_is_rejected(entropy, position, replacement):
    words = entropy_to_phrase(entropy).split()
    assume(words[position] != replacement)
    words[position] = replacement
    if position < 13 and WORDS.index(words[12]) < 256:
        # Rejected unless the new entropy happens to have the same checksum words.
        bits = 0
        for word in words[:12]:
            bits = (bits << 10) | WORDS.index(word)
        changed = ((bits << 8) | WORDS.index(words[12])).to_bytes(16, "big")
        assume(checksum_words(changed) != checksum_words(entropy))
    assert not validate_phrase(" ".join(words))
    with pytest.raises(InvalidSeedPhrase, match="checksum|word 13"):
        phrase_to_entropy(" ".join(words))


def _golden_words() -> list[str]:
    return PHRASES[0]["phrase"].split()


def test_unknown_word_is_rejected_naming_its_position_and_text():
    words = _golden_words()
    words[6] = "xyz"
    with pytest.raises(InvalidSeedPhrase, match="word 7 'xyz' is not in the S5 word list"):
        phrase_to_entropy(" ".join(words))


def test_word_shorter_than_three_letters_is_rejected_naming_its_position():
    words = _golden_words()
    words[0] = "si"
    with pytest.raises(InvalidSeedPhrase, match="word 1 'si' is shorter than 3 letters"):
        phrase_to_entropy(" ".join(words))


def test_word_13_beyond_the_first_256_words_is_rejected():
    words = _golden_words()
    words[12] = WORDS[256]
    with pytest.raises(InvalidSeedPhrase, match="word 13"):
        phrase_to_entropy(" ".join(words))


def test_swapped_checksum_words_are_rejected_as_checksum_mismatch():
    words = _golden_words()
    words[13], words[14] = words[14], words[13]
    with pytest.raises(InvalidSeedPhrase, match="checksum does not match"):
        phrase_to_entropy(" ".join(words))


@pytest.mark.parametrize("count", [0, 1, 14, 16, 24])
def test_phrase_with_wrong_word_count_is_rejected_naming_the_count(count):
    phrase = " ".join((_golden_words() * 2)[:count])
    with pytest.raises(InvalidSeedPhrase, match=f"got {count}"):
        phrase_to_entropy(phrase)
    assert not validate_phrase(phrase)


def test_invalid_seed_phrase_is_a_value_error():
    assert issubclass(InvalidSeedPhrase, ValueError)


def test_generated_phrases_are_valid_fifteen_words_and_differ():
    first, second = generate_phrase(), generate_phrase()
    assert validate_phrase(first) and validate_phrase(second)
    assert len(first.split()) == 15
    assert first != second


@pytest.mark.parametrize("entropy", [b"", bytes(15), bytes(17)])
def test_entropy_that_is_not_16_bytes_is_rejected(entropy):
    with pytest.raises(ValueError, match="16 bytes"):
        entropy_to_phrase(entropy)
    with pytest.raises(ValueError, match="16 bytes"):
        Identity.from_entropy(entropy)


# Key derivation ----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(base=SEEDS, n=st.integers(min_value=0, max_value=2**64), data=st.binary(max_size=64))
def test_dhi_and_dhs_hash_the_base_with_an_index_or_a_hash(base, n, data):
    assert dhi(base, n) == blake3.blake3(base + n.to_bytes(32, "little")).digest()
    assert dhs(base, data) == blake3.blake3(base + blake3.blake3(data).digest()).digest()


@settings(max_examples=30, deadline=None)
@given(entropy=ENTROPIES)
def test_identity_follows_the_s5_derivation_tree(entropy):
    identity = Identity.from_entropy(entropy)
    assert identity.seed == blake3.blake3(entropy).digest()
    assert identity.main == dhi(identity.seed, 0)
    assert identity.private_sub == dhi(dhi(identity.main, 64), 0)
    assert identity.storage_accounts == dhi(identity.private_sub, 65)
    assert identity.hidden_db == dhi(identity.private_sub, 66)
    assert identity.file_system == dhi(identity.private_sub, 67)
    assert identity.fs_root_write_key == dhi(identity.file_system, 1)


@settings(max_examples=30, deadline=None)
@given(entropy=ENTROPIES)
def test_s5vec_keys_derive_from_hidden_db_and_are_distinct(entropy):
    identity = Identity.from_entropy(entropy)
    keys = [identity.root_registry_seed(), identity.blob_encryption_key(), identity.portal_account_seed()]
    assert keys == [dhi(identity.hidden_db, n) for n in (1, 2, 3)]
    fields = [identity.seed, identity.main, identity.private_sub, identity.storage_accounts,
              identity.hidden_db, identity.file_system, identity.fs_root_write_key]
    assert len(set(keys + fields)) == len(keys + fields)


def test_two_identities_from_one_phrase_log_in_as_the_same_portal_account():
    phrase = generate_phrase()
    first, second = Identity.from_phrase(phrase), Identity.from_phrase(" " + phrase.upper() + "\n")
    key = first.account_key(first.portal_account_seed())
    assert key == second.account_key(second.portal_account_seed())
    assert key == blake3.blake3(first.storage_accounts + first.portal_account_seed()).digest()
    assert public_key_of(key) == public_key_of(second.account_key(second.portal_account_seed()))


def test_account_key_rejects_an_account_seed_that_is_not_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        Identity.from_entropy(bytes(16)).account_key(bytes(16))


def test_identity_repr_and_str_reveal_no_key_material():
    identity = Identity.from_entropy(bytes.fromhex(IDENTITIES[0]["entropy"]))
    for text in (repr(identity), str(identity), f"{identity}", repr([identity])):
        assert "Identity(***)" in text
        for value in (identity.seed, identity.main, identity.hidden_db, identity.fs_root_write_key,
                      identity.root_registry_seed(), identity.blob_encryption_key()):
            assert value.hex()[:8] not in text
            assert repr(value)[2:10] not in text
