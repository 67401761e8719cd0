"""``python -m s5vec_tools.fuzz``: the bad-input campaign behind the reliability report.

Three parts, each counted:

1. every decoder of stored or received bytes fed Hypothesis-generated garbage (truncated,
   bit-flipped and forged-length variants of valid encodings as well as arbitrary bytes):
   only the module's documented error may come out, and what decodes re-encodes to the
   same bytes where the format allows;
2. schemathesis against ``/openapi.json`` of a daemon subprocess (API keys on, a
   pre-created collection): no 5xx, every status, content type and body as documented;
3. malformed WebSocket frames and NDJSON ingest lines against the same daemon: each gets
   an error naming the problem, the socket stays open, good lines land, and the stored
   records are intact afterwards and after a restart.

The tests run the same properties with a few examples each (``tests/*/test_*fuzz*.py``,
``tests/daemon/test_schemathesis.py``); this module runs them with ``--examples`` each and
writes ``{"name": "fuzz", ..., "summary": {...}}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2
import msgspec
import zstandard
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from s5vec.daemon.errors import describe
from s5vec.daemon.ingest import ndjson_lines
from s5vec.daemon.wire import DECODERS, WS_DECODER, WS_ENVELOPE
from s5vec.engine.manifest import manifest_problem, read_manifest, referenced_blobs
from s5vec.engine.walrecords import Record, decode_record
from s5vec.storage import BlobCorrupt, BlobId, WalCorrupt, decode_blob, encode_blob
from s5vec.storage.blobid import multibase_decode
from s5vec.storage.s5 import (
    InvalidSeedPhrase, RegistryEntry, b64url_decode, blob_id_from_pointer, decrypt_blob, encrypt_blob,
    phrase_to_entropy,
)
from s5vec.storage.wal import WriteAheadLog, frame, parse_frames

from .daemon_proc import Daemon, daemon_env

ADMIN_KEY: Final = "fuzz-admin-key-0123456789"
COLLECTION: Final = "fuzz"
CANARY: Final = "canary"
DIMENSION: Final = 3
KEEP: Final = {"id": "keep", "vector": [0.6, 0.8, 0.0], "metadata": {"kind": "canary"}}
FOUND_AND_FIXED: Final = (
    "index/records.py + ops/database.py: metadata nested ~397+ levels deep was accepted and acknowledged, "
    "but the WAL/blob decoder (cbor2) stops at 400 levels, so the next start failed to replay it and the "
    "data dir would not open (now more than MAX_METADATA_DEPTH=32 levels is a 400 naming 'metadata')",
    "daemon/wire.py (+ rest.py, sse.py, admin.py): JSON nested past msgspec's recursion limit raised "
    "RecursionError: a 500 internal_error for REST bodies and ?filter=, an 'internal_error' WebSocket "
    "reply, and a 500 for a whole NDJSON ingest with one such line (now a DecodeError: 400 / a per-line "
    "error 'arrays and objects nest too deeply')",
    "index/filters.py: a filter nesting $and/$or/$not a few hundred levels deep raised RecursionError in "
    "compile_filter: 500 (now more than MAX_FILTER_DEPTH=32 levels is InvalidFilter: 400)",
    "storage/wal.py: recover() with a checkpoint past the log's end left the last segment open for appends, "
    "so the next record followed a gap in its LSNs and the next recovery cut it: an acknowledged write "
    "was lost (now the segments the checkpoint covers are dropped and the next append starts a fresh one)",
    "storage/wal.py: any *.wal file whose stem int() accepts ('-3.wal', ' 7.wal', '1_0.wal') counted as "
    "a segment; sorting first, its garbage made recovery truncate it and drop every real segment after "
    "it (now only all-digit names are segments)",
    "ops/database.py: a CRC-valid WAL record of the wrong shape stopped recovery with a bare "
    "KeyError/TypeError/ValueError (now engine/walrecords.decode_record checks it and replay raises "
    "WalCorrupt naming the LSN and the field)",
    "ops/manifest.py: a manifest of the right format/version but the wrong shape raised KeyError/"
    "TypeError from read_collection/referenced_blobs and ValueError for a bad blob id (now BlobCorrupt "
    "naming what is wrong)",
    "daemon/openapi.py: undocumented statuses and routes: 202 of the admin jobs with wait=false, 200 of "
    "POST /collections for an identical collection, 503/507 of storage errors, 503 of /ready, 400/401 of "
    "/api/v1/ws without an upgrade, 4xx of export and the SSE feed (their error responses were replaced "
    "by the stream), POST .../tune and the backup body were missing, and query parameters of export "
    "and GET .../vectors/{id}; success bodies of writes, deletes, ingest and /health now have schemas",
    "daemon/errors.py: an aiohttp HTTP error's own text (e.g. 'No WebSocket UPGRADE hdr') was "
    "replaced by the bare reason 'Bad Request'",
)


# ------------------------------------------------------------------ decoder targets
@dataclass(frozen=True, slots=True)
class Target:
    """One decoder: a strategy of inputs and a check that raises AssertionError on a bug."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def _only(errors: tuple[type[BaseException], ...], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None when it raised one of ``errors`` with a message."""
    try:
        return fn(*args)
    except errors as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return None


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid encodings, truncated, bit-flipped, extended with garbage, or arbitrary bytes."""
    @st.composite
    def damage(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        kind = draw(st.sampled_from(("intact", "cut", "flip", "garbage", "overwrite")))
        if kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == "flip" and data:
            bit = draw(st.integers(0, len(data) * 8 - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        elif kind == "garbage":
            data += draw(st.binary(max_size=64))
        elif kind == "overwrite" and data:
            at = draw(st.integers(0, len(data) - 1))
            patch = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(patch)] = patch
        return bytes(data)
    return st.one_of(st.binary(max_size=512), damage())


_JSON: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
_CBOR: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
_FRAMES: Final = st.lists(st.binary(max_size=40), max_size=6)


def _wal_bytes(first: int) -> st.SearchStrategy[bytes]:
    return _FRAMES.map(lambda payloads: b"".join(frame(first + i, p) for i, p in enumerate(payloads)))


def check_parse_frames(args: tuple[bytes, int | None]) -> None:
    data, first = args
    records, end = parse_frames(data, first)
    assert 0 <= end <= len(data)
    assert b"".join(frame(lsn, payload) for lsn, payload in records) == data[:end]
    lsns = [lsn for lsn, _ in records]
    assert lsns == list(range(lsns[0], lsns[0] + len(lsns))) if lsns else True
    assert first is None or not lsns or lsns[0] == first


@st.composite
def wal_directories(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], int]:
    """Segment files (name, bytes) made of valid frames and damage, and a checkpoint LSN."""
    segments = []
    first = draw(st.integers(1, 4))
    for _ in range(draw(st.integers(0, 3))):
        payloads = draw(_FRAMES)
        data = b"".join(frame(first + i, p) for i, p in enumerate(payloads))
        segments.append((f"{first:020d}.wal", draw(mutated(st.just(data)))))
        first += len(payloads) + draw(st.sampled_from((0, 0, 0, 1, -1)))
    if draw(st.booleans()):
        segments.append((draw(st.sampled_from(("junk.wal", "-3.wal", "00000000000000000002.wal.tmp"))),
                         draw(st.binary(max_size=64))))
    return segments, draw(st.integers(0, 12))


def check_wal_recover(args: tuple[list[tuple[str, bytes]], int]) -> None:
    """Recovery of a damaged log: only WalCorrupt; consecutive records; an append after it
    is recovered next time together with everything recovered now."""
    segments, after = args
    with tempfile.TemporaryDirectory(prefix="s5vec-fuzz-wal-") as tmp:
        directory = Path(tmp)
        for name, data in segments:
            (directory / name).write_bytes(data)
        wal = WriteAheadLog(directory, segment_bytes=256)
        records = _only((WalCorrupt,), lambda: list(wal.recover(after)))
        if records is None:
            return
        lsns = [lsn for lsn, _ in records]
        assert lsns == list(range(after + 1, after + 1 + len(lsns))), lsns
        last = wal.append([b"after recovery"])
        assert last == wal.next_lsn - 1
        wal.close()
        again = WriteAheadLog(directory, segment_bytes=256)
        assert list(again.recover(after)) == [*records, (last, b"after recovery")]
        again.close()


def check_decode_blob(data: bytes) -> None:
    value = _only((BlobCorrupt,), decode_blob, data)
    if value is not None:
        assert decode_blob(encode_blob(value)) == value or _has_nan(value)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


def check_blob_id(data: bytes) -> None:
    blob_id = _only((ValueError,), BlobId.from_bytes, data)
    if blob_id is not None:
        assert BlobId.parse(blob_id.base32()) == blob_id == BlobId.parse(blob_id.base58())


def check_multibase(text: str) -> None:
    raw = _only((ValueError,), multibase_decode, text)
    if raw is not None:
        _only((ValueError,), BlobId.from_bytes, raw)


def check_registry_entry(data: bytes) -> None:
    entry = _only((ValueError,), RegistryEntry.parse, data)
    if entry is not None:
        assert entry.serialize() == data
        assert RegistryEntry.from_json(entry.to_json()) == entry
        entry.verify()  # a bool, never an exception


def check_registry_json(doc: Any) -> None:
    _only((ValueError,), RegistryEntry.from_json, doc)


def check_pointer(data: bytes) -> None:
    _only((ValueError,), blob_id_from_pointer, data)


def check_b64url(text: str) -> None:
    _only((ValueError,), b64url_decode, text)


_KEY: Final = bytes(range(32))


def check_decrypt(data: bytes) -> None:
    _only((BlobCorrupt,), decrypt_blob, _KEY, data)


def check_phrase(text: str) -> None:
    _only((InvalidSeedPhrase,), phrase_to_entropy, text)


def check_wal_record(payload: bytes) -> None:
    record = _only((WalCorrupt,), decode_record, 7, payload)
    if record is not None:
        assert isinstance(record, Record) and isinstance(record.c, str)


_RECORDS: Final = st.fixed_dictionaries(
    {"op": st.sampled_from(("create", "drop", "meta", "upsert", "delete", "bogus")), "c": st.text(max_size=5)},
    optional={"config": _CBOR, "id": _CBOR, "m": _CBOR, "ids": _CBOR | st.lists(st.text(max_size=3), max_size=3),
              "v": st.binary(max_size=48), "t": st.binary(max_size=32)}).map(cbor2.dumps)


class _Blobs:
    """A blob store holding one blob."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get(self, blob_id: BlobId) -> bytes:
        return self.data


def check_manifest_bytes(data: bytes) -> None:
    manifest = _only((BlobCorrupt,), lambda: asyncio.run(read_manifest(_Blobs(data), BlobId.of(data))))
    if manifest is not None:
        _only((BlobCorrupt,), referenced_blobs, manifest)


def check_manifest_doc(doc: dict[str, Any]) -> None:
    data = encode_blob({"format": "s5vec-manifest", "version": 2, **doc})
    check_manifest_bytes(data)
    if manifest_problem(doc) is None:
        _only((BlobCorrupt,), referenced_blobs, doc)


_BLOB_REF: Final = st.one_of(st.binary(max_size=45), st.just(BlobId.of(b"x").to_bytes()))
_MANIFEST_DOCS: Final = st.fixed_dictionaries({}, optional={
    "lsn": st.integers(-2, 2**70) | _CBOR, "previous": st.none() | _BLOB_REF | _CBOR,
    "collections": st.dictionaries(st.text(max_size=4) | st.integers(), st.fixed_dictionaries({}, optional={
        "config": _CBOR | st.just({}),
        "recent": st.fixed_dictionaries({}, optional={"records": _BLOB_REF | _CBOR,
                                                       "vectors": st.lists(_BLOB_REF, max_size=2) | _CBOR}),
        "segments": st.lists(st.fixed_dictionaries({}, optional={
            "frozen": _BLOB_REF, "mutable": _BLOB_REF, "chunks": st.lists(_BLOB_REF, max_size=2) | _CBOR}),
            max_size=2) | _CBOR}) | _CBOR, max_size=2) | _CBOR})


_WIRE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError)


def check_wire(data: bytes) -> None:
    """Every REST body decoder and the WebSocket decoders: msgspec errors only, and each
    becomes a 400 with a message."""
    for decoder in (*DECODERS.values(), WS_DECODER):
        try:
            decoder.decode(data)
        except _WIRE_ERRORS as exc:
            status, code, message, _, _ = describe(exc)
            assert status == 400 and code == "invalid_request" and message
    _only(_WIRE_ERRORS, WS_ENVELOPE.decode, data)


_WIRE_BYTES: Final = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"type": st.sampled_from(("auth", "ping", "upsert", "upsert_batch", "delete", "get",
                                                    "search", "subscribe", "subscribe_query", "unsubscribe"))
                           | _JSON}, optional={"id": _JSON, "collection": _JSON, "vector": _JSON, "record": _JSON,
                                               "records": _JSON, "k": _JSON, "ids": _JSON, "filter": _JSON,
                                               "name": _JSON, "dimension": _JSON, "metadata": _JSON}).map(
        lambda v: json.dumps(v).encode()))


class _Chunks:
    """A StreamReader stand-in: ``iter_chunked`` yields the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def _iter(self) -> Any:
        for chunk in self.chunks:
            yield chunk

    def iter_chunked(self, _: int) -> Any:
        return self._iter()


def check_ndjson_split(args: tuple[bytes, list[int], int]) -> None:
    """However a body arrives in chunks, lines come out numbered as split at newlines."""
    body, cuts, max_line = args
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if b > a]

    async def collect() -> list[tuple[int, bytes | None]]:
        return [item async for item in ndjson_lines(_Chunks(chunks), max_line)]
    got = asyncio.run(collect())
    raw = body.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    want = [(n, None if len(line) > max_line else line) for n, line in enumerate(raw, 1)
            if len(line) > max_line or line.strip()]
    assert got == want, (got, want)


_NDJSON_BODIES: Final = st.lists(st.sampled_from((b"", b" ", b"{}", b'{"id":1}', b"x" * 9, b"\xff\xfe")) | st.binary(
    max_size=12).filter(lambda b: b"\n" not in b), max_size=8).map(lambda lines: b"\n".join(lines))


TARGETS: Final[tuple[Target, ...]] = (
    Target("storage.wal.parse_frames", st.tuples(mutated(_wal_bytes(1)) | mutated(_wal_bytes(5)),
                                                 st.none() | st.integers(0, 8)), check_parse_frames),
    Target("storage.wal.recover", wal_directories(), check_wal_recover),
    Target("storage.codec.decode_blob", mutated(_CBOR.map(encode_blob)) | st.binary(max_size=64).map(
        zstandard.ZstdCompressor().compress), check_decode_blob),
    Target("storage.blobid.from_bytes", mutated(st.builds(lambda d, n: BlobId(d, n).to_bytes(), st.binary(
        min_size=32, max_size=32), st.integers(0, 2**64 - 1))), check_blob_id),
    Target("storage.blobid.multibase", st.text(max_size=80) | st.builds(lambda d: BlobId.of(d).base58()[:-1] + "0",
                                                                         st.binary(max_size=8)), check_multibase),
    Target("storage.s5.registry.parse", mutated(st.builds(
        lambda data, sig: RegistryEntry(b"\xed" + bytes(32), 5, data, sig).serialize(),
        st.binary(max_size=64), st.binary(min_size=64, max_size=64))), check_registry_entry),
    Target("storage.s5.registry.from_json", _JSON | st.fixed_dictionaries(
        {"pk": st.text(max_size=50) | _JSON, "revision": _JSON, "data": st.text(max_size=10),
         "signature": st.text(max_size=90)}), check_registry_json),
    Target("storage.s5.registry.blob_id_from_pointer", mutated(st.binary(min_size=32, max_size=32).map(
        lambda d: b"\x1e" + d + b"\x05")), check_pointer),
    Target("storage.s5.registry.b64url_decode", st.text(max_size=40), check_b64url),
    Target("storage.s5.crypto.decrypt_blob", mutated(st.binary(max_size=64).map(
        lambda d: encrypt_blob(_KEY, d, bytes(24)))), check_decrypt),
    Target("storage.s5.seed.phrase_to_entropy", st.text(max_size=120) | st.lists(
        st.sampled_from(("abandon", "zoo", "ability", "able", "ab", "ZOO ", "")), min_size=14, max_size=16).map(
        " ".join), check_phrase),
    Target("engine.walrecords.decode_record", st.binary(max_size=128) | _RECORDS | _CBOR.map(cbor2.dumps),
           check_wal_record),
    Target("ops.manifest.read_manifest", mutated(_CBOR.map(encode_blob)), check_manifest_bytes),
    Target("ops.manifest.manifest_problem", _MANIFEST_DOCS, check_manifest_doc),
    Target("daemon.wire.decoders", _WIRE_BYTES, check_wire),
    Target("daemon.ingest.ndjson_lines", st.tuples(_NDJSON_BODIES, st.lists(st.integers(0, 200), max_size=6),
                                                   st.integers(1, 10)), check_ndjson_split),
)


def fuzz_settings(examples: int) -> settings:
    """Generation only (no shrinking database), no deadline: a campaign run, not a unit test."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
                    print_blob=True)


def run_target(target: Target, examples: int) -> int:
    """Run one target for ``examples`` inputs; returns how many ran. Raises on a bug."""
    count = 0

    @fuzz_settings(examples)
    @given(value=target.inputs)
    def run(value: Any) -> None:
        nonlocal count
        count += 1
        target.check(value)
    run()
    return count


# ---------------------------------------------------------------- HTTP: schemathesis
HTTP_SKIPPED: Final = frozenset({("GET", "/api/v1/stream/updates")})  # an endless stream: tests/daemon/test_sse.py


def _register_ndjson() -> None:
    import schemathesis

    @schemathesis.serializer("application/x-ndjson")
    def ndjson(_: Any, value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    @schemathesis.serializer("application/vnd.apache.arrow.stream")  # bulk bodies: the bytes generated, as sent
    def arrow(_: Any, value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()


def api_schema(source: str | dict[str, Any]) -> Any:
    """The schemathesis schema of a daemon URL (its /openapi.json) or of an OpenAPI dict."""
    import schemathesis

    _register_ndjson()
    if isinstance(source, dict):
        return schemathesis.openapi.from_dict(source)
    return schemathesis.openapi.from_url(source + "/openapi.json")


def operations(schema: Any) -> list[Any]:
    """Every operation schemathesis can call (the endless SSE feed left out)."""
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if (op.method.upper(), op.path) not in HTTP_SKIPPED]


def run_operation(op: Any, url: str, key: str, examples: int, modes: tuple[str, ...] = ("positive", "negative"),
                  collection: str = COLLECTION) -> tuple[int, list[str]]:
    """schemathesis on one operation against ``url`` with ``key``: three of four generated
    calls go to ``collection`` (and id ``keep`` for reads) so they get past the 404s, and
    dropping a collection never names it. Checks: no 5xx; status, content type, headers and
    body as documented. Returns (calls made, one report per distinct failure)."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, response_headers_conformance, response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    headers = {"Authorization": f"Bearer {key}"}
    label = f"{op.method.upper()} {op.path}"
    drops = op.method.upper() == "DELETE" and op.path == "/api/v1/collections/{c}"
    calls = 0
    failures: list[str] = []
    def one_mode(mode: str) -> None:
        seen: set[str] = set()

        @fuzz_settings(examples)
        @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(mode)), real=st.integers(0, 3))
        def run(case: Any, real: int) -> None:
            nonlocal calls
            params = case.path_parameters or {}
            if real and "c" in params:
                params["c"] = f"{collection}-gone" if drops else collection
            if real and "id" in params and "vectors" in op.path:
                params["id"] = KEEP["id"] if op.method.upper() == "GET" else "victim"
            calls += 1
            try:
                case.call_and_validate(base_url=url, headers=headers, checks=checks, timeout=60)
            except (AssertionError, BaseExceptionGroup) as exc:
                text = str(exc)
                key_line = text.split("Reproduce with", 1)[0][:300]
                if key_line not in seen:
                    seen.add(key_line)
                    failures.append(f"{label} [{mode}]: {text[:1500]}")
        try:
            run()
        except Unsatisfiable:
            pass  # every parameter accepts any value: there is nothing to make invalid

    for mode in modes:
        if mode != "negative" or op.body or op.query or op.path_parameters:  # else nothing to make invalid
            one_mode(mode)
    return calls, failures


def run_schemathesis(url: str, key: str, examples: int) -> tuple[int, list[str]]:
    """:func:`run_operation` on every operation of ``url``'s own /openapi.json."""
    calls = 0
    failures: list[str] = []
    for op in operations(api_schema(url)):
        made, found = run_operation(op, url, key, examples)
        calls += made
        failures += found
    return calls, failures


# ------------------------------------------------------------ WebSocket and NDJSON
def _bad_vectors() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=0, max_size=2),  # wrong dimension
        st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=4, max_size=6),
        st.lists(st.text(max_size=3), min_size=3, max_size=3),
        st.just("1,2,3"), st.just({"x": 1}), st.just([True, False, True]), st.just([[1.0], [2.0], [3.0]]))


_NONFINITE: Final = (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"nan")


@st.composite
def bad_ws_frames(draw: st.DrawFn) -> tuple[bytes, bool, str]:
    """A client frame that must get an error reply: (bytes, send as binary, what is wrong)."""
    kind = draw(st.sampled_from(("bytes", "json", "not_object", "no_type", "unknown_type", "field_type",
                                 "vector", "nonfinite", "nested", "unknown_field", "missing_collection")))
    binary = draw(st.booleans())
    fid = draw(st.integers(0, 10**6))
    if kind == "bytes":
        data = draw(st.binary(min_size=1, max_size=64).filter(lambda b: not b.strip().startswith(b"{")))
    elif kind == "json":
        data = b'{"type": "ping", "id": ' + draw(st.sampled_from((b"", b"'x'", b"1,", b"[", b"}"))) + b"}"
    elif kind == "not_object":
        data = json.dumps(draw(st.lists(_JSON, max_size=3) | st.integers() | st.text(max_size=5) | st.none())).encode()
    elif kind == "no_type":
        data = json.dumps({"id": fid, "collection": COLLECTION}).encode()
    elif kind == "unknown_type":
        data = json.dumps({"type": draw(st.text(max_size=8).filter(lambda t: t not in _TYPES) | st.integers()),
                           "id": fid}).encode()
    elif kind == "field_type":
        data = json.dumps(draw(st.sampled_from((
            {"type": "get", "id": fid, "collection": COLLECTION, "ids": "keep"},
            {"type": "get", "id": fid, "collection": 5, "ids": ["keep"]},
            {"type": "search", "id": fid, "collection": COLLECTION, "vector": [1, 0, 0], "k": "ten"},
            {"type": "search", "id": fid, "collection": COLLECTION, "vector": [1, 0, 0], "k": 0},
            {"type": "upsert", "id": fid, "collection": COLLECTION, "record": [1, 2, 3]},
            {"type": "delete", "id": fid, "collection": COLLECTION, "ids": {"a": 1}},
            {"type": "subscribe", "id": fid, "since": -1},
            {"type": "unsubscribe", "id": fid, "sub": 7},
            {"type": "auth", "id": fid, "key": None},
        )))).encode()
    elif kind == "vector":
        record = {"id": "never", "vector": draw(_bad_vectors())}
        message = draw(st.sampled_from(({"type": "upsert", "collection": COLLECTION, "record": record},
                                        {"type": "search", "collection": COLLECTION, "vector": record["vector"]},
                                        {"type": "subscribe_query", "collection": COLLECTION, "k": 3,
                                         "vector": record["vector"]})))
        data = json.dumps({**message, "id": fid}).encode()
    elif kind == "nonfinite":
        bad = draw(st.sampled_from(_NONFINITE))
        data = (b'{"type": "upsert", "id": %d, "collection": "%s", "record": {"id": "never", "vector": [1, %s, 0]}}'
                % (fid, COLLECTION.encode(), bad))
    elif kind == "nested":
        depth = draw(st.integers(40, 3000))
        where = draw(st.sampled_from(("filter", "and", "metadata", "id", "vector")))
        deep = b"[" * depth + b"1" + b"]" * depth
        if where == "and":
            deep = b'{"$and": [' * depth + b'{"a": 1}' + b"]}" * depth
            data = b'{"type": "search", "collection": "%s", "vector": [1, 0, 0], "filter": %s}' % (
                COLLECTION.encode(), deep)
        elif where == "filter":  # a valid filter up to msgspec's limit: only deeper is an error
            deep = b"[" * max(depth, 1100) + b"1" + b"]" * max(depth, 1100)
            data = b'{"type": "subscribe", "filter": {"a": %s}}' % deep
        elif where == "metadata":
            data = b'{"type": "upsert", "collection": "%s", "record": {"id": "never", "vector": [1, 0, 0], ' \
                   b'"metadata": {"a": %s}}}' % (COLLECTION.encode(), deep)
        else:
            data = b'{"type": "search", "collection": "%s", "%s": %s}' % (COLLECTION.encode(), where.encode(), deep)
    elif kind == "unknown_field":
        data = json.dumps({"type": "ping", "id": fid, draw(st.text(min_size=1, max_size=6).filter(
            lambda t: t not in ("type", "id"))): 1}).encode()
    else:
        data = json.dumps({"type": "get", "id": fid, "collection": "no-such-" + str(fid), "ids": ["keep"]}).encode()
    return data, binary, kind


_TYPES: Final = ("auth", "ping", "upsert", "upsert_batch", "delete", "get", "search", "subscribe",
                 "subscribe_query", "unsubscribe")
_WS_CODES: Final = {"invalid_request", "dimension_mismatch", "collection_not_found", "subscription_not_found",
                    "unauthorized"}


def check_ws_error(reply: dict[str, Any], kind: str) -> None:
    """A bad frame's reply: an error frame with a code and a message naming the problem."""
    assert reply.get("type") == "error", (kind, reply)
    error = reply["error"]
    assert error["code"] in _WS_CODES, (kind, reply)
    assert isinstance(error["message"], str) and len(error["message"]) >= 8, (kind, reply)
    if kind == "missing_collection":
        assert error["code"] == "collection_not_found", reply


@st.composite
def ndjson_bodies(draw: st.DrawFn) -> tuple[list[bytes], list[bool]]:
    """Lines (without newlines) and whether each must land; blank lines are neither."""
    lines: list[bytes] = []
    good: list[bool] = []
    for number in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(("good", "good", "blank", "json", "type", "vector", "nonfinite", "nested",
                                     "unknown_field", "not_object", "bytes")))
        rid = f"nd-{draw(st.integers(0, 10**9))}-{number}"
        if kind == "good":
            line = json.dumps({"id": rid, "vector": [1.0, float(number), 0.5], "metadata": {"n": number}}).encode()
        elif kind == "blank":
            line = draw(st.sampled_from((b"", b"  ", b"\t", b"\r")))
        elif kind == "json":
            line = b'{"id": "%s", "vector": [1, 2' % rid.encode()
        elif kind == "type":
            line = json.dumps({"id": rid, "vector": [1, 2, 3], "metadata": draw(
                st.sampled_from(([1], "x", 3)))}).encode()
        elif kind == "vector":
            line = json.dumps({"id": rid, "vector": draw(_bad_vectors())}).encode()
        elif kind == "nonfinite":
            line = b'{"id": "%s", "vector": [1, %s, 0]}' % (rid.encode(), draw(st.sampled_from(_NONFINITE)))
        elif kind == "nested":
            line = b'{"id": "%s", "vector": [1, 2, 3], "metadata": {"a": %s1%s}}' % (
                rid.encode(), b"[" * 2000, b"]" * 2000)
        elif kind == "unknown_field":
            line = json.dumps({"id": rid, "vector": [1, 2, 3], "colour": "red"}).encode()
        elif kind == "not_object":
            line = json.dumps(draw(st.lists(st.integers(), max_size=3) | st.integers() | st.text(max_size=4))).encode()
        else:
            line = draw(st.binary(min_size=1, max_size=24).filter(
                lambda b: b"\n" not in b and b.strip() and not b.strip().startswith((b"{", b"[", b'"'))
                and not b.strip().lstrip(b"-").replace(b".", b"").isdigit()))
        lines.append(line.replace(b"\n", b" "))
        good.append(kind == "good")
    return lines, good


def check_ingest_report(lines: list[bytes], good: list[bool], report: dict[str, Any]) -> None:
    """Good lines land; every bad one is reported by its line number with a message."""
    nonblank = [n for n, line in enumerate(lines, 1) if line.strip()]
    bad = [n for n, line in enumerate(lines, 1) if line.strip() and not good[n - 1]]
    assert report["lines"] == len(nonblank), report
    assert report["successful"] == sum(good), report
    assert report["failed"] == len(bad), report
    assert [e["line"] for e in report["errors"]] == bad, report
    for error in report["errors"]:
        assert error["error"]["code"] in ("invalid_request", "dimension_mismatch"), error
        assert len(error["error"]["message"]) >= 8, error


# ---------------------------------------------------------------- the campaign
class FuzzDaemon(Daemon):
    """``s5vec serve`` with API keys on (an admin key) and the query cache off."""

    def start(self) -> float:
        env = {**daemon_env(), "S5VEC_API_KEYS": f"{ADMIN_KEY}:admin"}
        self.spawned_at = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        return self.spawned_at

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        import urllib.error
        import urllib.request
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        return status, json.loads(payload) if payload else None


def prepare(daemon: FuzzDaemon) -> None:
    """The collection the calls aim at (with a ``keep`` record for reads to find), and a
    canary collection no generated call names, whose record must survive all of them."""
    for name in (COLLECTION, CANARY):
        status, body = daemon.call("POST", "/api/v1/collections", {"name": name, "dimension": DIMENSION})
        assert status in (200, 201), body
    status, body = daemon.call("POST", f"/api/v1/collections/{COLLECTION}/vectors", KEEP)
    assert status == 201, body
    status, body = daemon.call("GET", f"/api/v1/collections/{CANARY}")
    if body["count"] == 0:
        status, body = daemon.call("POST", f"/api/v1/collections/{CANARY}/vectors", KEEP)
        assert status == 201, body


@contextlib.contextmanager
def prepared_daemon(work: Path) -> Iterator[FuzzDaemon]:
    """A started :class:`FuzzDaemon` on ``work``/data, its collections prepared (:func:`prepare`);
    stopped (and killed if need be) on exit."""
    daemon = FuzzDaemon(work / "data", work / "daemon.log")
    daemon.start()
    try:
        daemon.wait_status("/ready")
        prepare(daemon)
        yield daemon
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()


def intact(daemon: FuzzDaemon) -> None:
    """The canary collection holds exactly its one record, unchanged."""
    status, body = daemon.call("GET", f"/api/v1/collections/{CANARY}")
    assert status == 200 and body["count"] == 1, body
    status, body = daemon.call("GET", f"/api/v1/collections/{CANARY}/vectors/{KEEP['id']}")
    assert status == 200, body
    assert body["metadata"] == KEEP["metadata"], body
    assert [round(x, 5) for x in body["vector"]] == KEEP["vector"], body


def run_ws(url: str, examples: int) -> int:
    """Send ``examples`` bad frames on one socket; each gets an error reply and the socket
    keeps answering pings. Returns the frames sent."""
    from websockets.sync.client import connect

    sent = 0
    ws_url = url.replace("http://", "ws://") + "/api/v1/ws"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                 max_size=None, open_timeout=10) as ws:
        @fuzz_settings(examples)
        @given(item=bad_ws_frames())
        def run(item: tuple[bytes, bool, str]) -> None:
            nonlocal sent
            data, binary, kind = item
            ws.send(data if binary else data.decode("utf-8", errors="replace"))
            sent += 1
            check_ws_error(json.loads(ws.recv(timeout=30)), kind)
            ws.send(json.dumps({"type": "ping", "id": "alive"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "pong"
            time.sleep(0.002)  # stay under ws.max_messages_per_s
        run()
    return sent


def run_ndjson(daemon: FuzzDaemon, examples: int) -> int:
    """POST ``examples`` NDJSON bodies mixing good and bad lines; returns the lines sent."""
    sent = 0

    @fuzz_settings(examples)
    @given(body=ndjson_bodies())
    def run(body: tuple[list[bytes], list[bool]]) -> None:
        nonlocal sent
        lines, good = body
        status, report = daemon.call("POST", f"/api/v1/collections/{COLLECTION}/ingest", raw=b"\n".join(lines),
                                     content_type="application/x-ndjson")
        sent += len(lines)
        assert status == 200, report
        check_ingest_report(lines, good, report)
    run()
    return sent


def campaign(examples: int, work: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {"decoder_inputs": {}, "http_calls": 0, "ws_frames": 0, "ndjson_lines": 0,
                               "failures": 0, "failure_reports": [], "found_and_fixed": list(FOUND_AND_FIXED)}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one failure is a report line, not the end of the campaign
            summary["failures"] += 1
            summary["failure_reports"].append(f"{name}: {type(exc).__name__}: {str(exc)[:2000]}")
            print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[:500]}", flush=True)
            return None

    for target in TARGETS:
        started = time.perf_counter()
        count = attempt(target.name, functools.partial(run_target, target, examples))
        summary["decoder_inputs"][target.name] = count or 0
        print(f"{target.name}: {count} inputs in {time.perf_counter() - started:.1f}s", flush=True)

    with prepared_daemon(work) as daemon:
        started = time.perf_counter()
        result = attempt("schemathesis", lambda: run_schemathesis(daemon.url, ADMIN_KEY, max(10, examples // 10)))
        if result is not None:
            summary["http_calls"], reports = result
            summary["failures"] += len(reports)
            summary["failure_reports"] += reports
        print(f"schemathesis: {summary['http_calls']} calls in {time.perf_counter() - started:.1f}s", flush=True)
        prepare(daemon)  # the calls may have deleted the canary's collection's records: put it back
        summary["ws_frames"] = attempt("websocket", lambda: run_ws(daemon.url, examples)) or 0
        summary["ndjson_lines"] = attempt("ndjson", lambda: run_ndjson(daemon, max(10, examples // 5))) or 0
        attempt("intact before restart", lambda: intact(daemon))
        daemon.stop()
        daemon.start()
        daemon.wait_status("/ready")
        attempt("intact after restart", lambda: intact(daemon))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per decoder and WebSocket frames "
                        "(schemathesis: a tenth per operation and mode; NDJSON bodies: a fifth)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/reliability/fuzz.json"))
    args = parser.parse_args(argv)
    # recovery logs every damaged segment it cuts, which is the point of the inputs here
    logging.getLogger("s5vec.storage.wal").disabled = True
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="s5vec-fuzz-"))
    try:
        summary = campaign(args.examples, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"name": "fuzz", "command": " ".join(["python -m s5vec_tools.fuzz", *(argv or sys.argv[1:])]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "seconds": round(time.time() - started, 1), "ok": summary["failures"] == 0, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "failure_reports"}, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
