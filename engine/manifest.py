"""Checkpoint manifests: collection snapshots as blobs, and back.

A manifest is one CBOR+zstd blob naming every blob of one consistent state
("contains everything up to LSN n"); the root pointer names the current manifest.
Large byte strings are split into chunks a portal accepts in one upload. Sealed
segments never change their vectors, so their frozen blobs are written once and
referenced again by later manifests (:class:`SegmentRefs` remembers them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from s5vec.index import CollectionConfig, CollectionSnapshot, SealedSegment
from s5vec.index.ivf import Codebook, IvfSegment
from s5vec.index.segment import segment_file
from s5vec.storage import (
    BlobCorrupt,
    BlobId,
    BlobStore,
    decode_blob,
    decode_bytes_blob,
    encode_blob,
)

FORMAT: Final = "s5vec-manifest"
VERSION: Final = 2
CHUNK_BYTES: Final = 16 << 20
_RECENT_ARRAYS: Final = ("vectors", "timestamps", "live", "hnsw", "parked")


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """Split ``data`` into pieces a portal accepts in one upload."""
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


async def _cpu(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def put_bytes(store: BlobStore, data: bytes) -> list[bytes]:
    """Store a large byte string as chunk blobs; returns their ids (raw bytes)."""
    refs = []
    for part in chunks(data):
        refs.append((await store.put(await _cpu(encode_blob, part))).to_bytes())
    return refs


async def get_bytes(store: BlobStore, refs: list[bytes]) -> bytes:
    """The byte string :func:`put_bytes` stored: chunks fetched and decompressed
    concurrently (zstd releases the GIL), then joined. Raises BlobCorrupt when a chunk is
    not a byte string."""
    blobs = await asyncio.gather(*(store.get(BlobId.from_bytes(ref)) for ref in refs))
    parts = await asyncio.gather(*(_cpu(decode_bytes_blob, blob) for blob in blobs))
    del blobs
    return b"".join(parts)


async def put_doc(store: BlobStore, doc: Any) -> bytes:
    return (await store.put(await _cpu(encode_blob, doc))).to_bytes()


async def get_doc(store: BlobStore, ref: bytes) -> Any:
    return await _cpu(decode_blob, await store.get(BlobId.from_bytes(ref)))


class SegmentRefs:
    """Blob refs of segments already stored: (collection, seq) → frozen ref, and
    (collection, seq, version) → mutable ref; shared codebooks by id → their chunk refs."""

    def __init__(self) -> None:
        self.frozen: dict[tuple[str, int], tuple[bytes, list[bytes]]] = {}
        self.mutable: dict[tuple[str, int, int], bytes] = {}
        self.codebooks: dict[str, list[bytes]] = {}


async def _write_codebook(store: BlobStore, codebook: Codebook, rows: int, cache: SegmentRefs) -> dict[str, Any]:
    """The manifest entry of a collection's shared codebook: its own content-addressed
    blob(s), stored once and referenced by every later manifest while it is in use."""
    refs = cache.codebooks.get(codebook.id)
    if refs is None:
        parts = codebook.to_parts()
        index = await put_bytes(store, parts.pop("index"))
        refs = cache.codebooks[codebook.id] = [await put_doc(store, parts), *index]
    return {"id": codebook.id, "rows": rows, "chunks": refs}


async def _read_codebook(store: BlobStore, entry: dict[str, Any], cache: SegmentRefs) -> tuple[Codebook, int]:
    refs = entry["chunks"]
    parts = await get_doc(store, refs[0])
    codebook = await _cpu(Codebook.from_parts, {**parts, "index": await get_bytes(store, refs[1:])})
    if codebook.id != entry["id"]:
        raise BlobCorrupt(f"codebook {entry['id']} holds a codebook with id {codebook.id}")
    cache.codebooks[codebook.id] = list(refs)
    return codebook, int(entry["rows"])


async def _write_segment(store: BlobStore, name: str, segment: SealedSegment, mutable: dict[str, Any],
                         version: int, cache: SegmentRefs) -> dict[str, Any]:
    key = (name, segment.seq)
    cached = cache.frozen.get(key)
    if cached is None:
        frozen = await _cpu(segment.frozen_parts)
        blobs = {name: await put_bytes(store, data) for name, data in frozen["blobs"].items()}
        frozen["blobs"] = blobs
        cached = cache.frozen[key] = (await put_doc(store, frozen), [r for refs in blobs.values() for r in refs])
    frozen_ref, chunk_refs = cached
    mutable_ref = cache.mutable.get((name, segment.seq, version))
    if mutable_ref is None:
        mutable_ref = cache.mutable[(name, segment.seq, version)] = await put_doc(store, mutable)
    return {"seq": segment.seq, "frozen": frozen_ref, "mutable": mutable_ref, "chunks": chunk_refs}


async def write_snapshot(store: BlobStore, snap: CollectionSnapshot, cache: SegmentRefs) -> dict[str, Any]:
    """Store a collection snapshot as blobs; returns its manifest entry."""
    recent = dict(snap.recent)
    entry_recent: dict[str, Any] = {k: v for k, v in recent.items()
                                    if k not in _RECENT_ARRAYS and k not in ("ids", "metadata")}
    entry_recent["records"] = await put_doc(store, {"ids": recent["ids"], "metadata": recent["metadata"]})
    for name in _RECENT_ARRAYS:
        data = recent.get(name)
        entry_recent[name] = None if data is None else await put_bytes(store, data)
    segments = [await _write_segment(store, snap.config.name, s, mutable, version, cache)
                for s, mutable, version in snap.segments]
    entry = {"config": snap.config.to_dict(), "recent": entry_recent, "segments": segments}
    if snap.codebook is not None:
        entry["codebook"] = await _write_codebook(store, *snap.codebook, cache)
    return entry


async def read_collection(store: BlobStore, entry: dict[str, Any], segment_dir: Path, cache: SegmentRefs,
                          lazy: bool = True) -> tuple[CollectionConfig, dict[str, Any], list[SealedSegment],
                                                      tuple[Codebook, int] | None]:
    """Inverse of :func:`write_snapshot`: config, recent-tier parts, segments and the
    shared codebook with the rows it was sized for (None in manifests without one);
    every blob is verified against its address. Raises BlobCorrupt for blobs that do not
    hold what the manifest says (also a bad shape)."""
    try:
        return await _read_collection(store, entry, segment_dir, cache, lazy)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise BlobCorrupt(f"collection blobs are malformed: {type(exc).__name__}: {exc}") from exc


async def _read_collection(store: BlobStore, entry: dict[str, Any], segment_dir: Path, cache: SegmentRefs,
                           lazy: bool) -> tuple[CollectionConfig, dict[str, Any], list[SealedSegment],
                                                tuple[Codebook, int] | None]:
    config = CollectionConfig.from_dict(entry["config"])
    stored = entry["recent"]
    recent: dict[str, Any] = {k: v for k, v in stored.items() if k not in _RECENT_ARRAYS and k != "records"}
    records = await get_doc(store, stored["records"])
    recent["ids"], recent["metadata"] = records["ids"], records["metadata"]
    for name in _RECENT_ARRAYS:
        refs = stored.get(name)
        recent[name] = None if refs is None else await get_bytes(store, refs)
    segments = []
    loop = asyncio.get_running_loop()
    for item in entry.get("segments", []):
        frozen = await get_doc(store, item["frozen"])
        mutable = await get_doc(store, item["mutable"])
        path = segment_file(segment_dir, config.name, int(frozen["seq"]))
        refs = frozen["blobs"]
        eager = [name for name in refs if not (lazy and name in _LAZY_BLOBS)]
        frozen["blobs"] = {name: await get_bytes(store, refs[name]) for name in eager}
        loader = _ivf_loader(store, loop, frozen["ivf"], refs, path) if lazy else None
        segment = await _cpu(SealedSegment.from_parts, frozen, mutable, path, loader)
        cache.frozen[(config.name, segment.seq)] = (item["frozen"], item["chunks"])
        cache.mutable[(config.name, segment.seq, segment.version)] = item["mutable"]
        segments.append(segment)
    codebook = await _read_codebook(store, entry["codebook"], cache) if entry.get("codebook") else None
    return config, recent, segments, codebook


_LAZY_BLOBS: Final = ("index", "vectors")


async def _fetch_ivf(store: BlobStore, ivf: dict[str, Any], refs: dict[str, list[bytes]]) -> dict[str, Any]:
    return {**ivf, "index": await get_bytes(store, refs["index"]), "vectors": await get_bytes(store, refs["vectors"])}


def _ivf_loader(store: BlobStore, loop: asyncio.AbstractEventLoop, ivf: dict[str, Any],
                refs: dict[str, list[bytes]], path: Path) -> Callable[[], IvfSegment]:
    """A loader for worker threads: fetches the segment's blobs through the event loop.

    Raises RuntimeError when called on that loop's own thread (waiting there for the loop
    would never end) or once the loop is closed."""
    def load() -> IvfSegment:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError(f"historical segment {path.name} is not loaded yet and cannot be loaded on the "
                               "event loop thread (the fetch runs on that loop): reach it from a worker thread")
        if loop.is_closed():
            raise RuntimeError(f"historical segment {path.name} cannot be loaded: its database is closed")
        parts = asyncio.run_coroutine_threadsafe(_fetch_ivf(store, ivf, refs), loop).result()
        return IvfSegment.from_parts(parts, path)
    return load


def new_manifest(lsn: int, collections: dict[str, Any], previous: BlobId | None) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "lsn": lsn, "created": time.time(),
            "previous": previous.to_bytes() if previous else None, "collections": collections}


async def read_manifest(store: BlobStore, blob_id: BlobId) -> dict[str, Any]:
    manifest = decode_blob(await store.get(blob_id))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BlobCorrupt(f"blob {blob_id} is not an s5vec manifest")
    if manifest.get("version") != VERSION:
        raise BlobCorrupt(f"manifest {blob_id} has unsupported version {manifest.get('version')}")
    problem = manifest_problem(manifest)
    if problem:
        raise BlobCorrupt(f"manifest {blob_id} is malformed: {problem}")
    return manifest


def _refs_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, list) or not all(isinstance(ref, bytes) for ref in value):
        return f"{where} must be a list of blob ids"
    return None


def manifest_problem(manifest: dict[Any, Any]) -> str | None:
    """What is wrong with a decoded manifest's shape (None when it can be walked):
    checked before any field is used, so a damaged manifest is BlobCorrupt, not a KeyError."""
    if not isinstance(manifest.get("lsn"), int) or manifest["lsn"] < 0:
        return "'lsn' must be a non-negative integer"
    if manifest.get("previous") is not None and not isinstance(manifest["previous"], bytes):
        return "'previous' must be a blob id or null"
    collections = manifest.get("collections")
    if not isinstance(collections, dict):
        return "'collections' must be a map"
    for name, entry in collections.items():
        where = f"collection {name!r}"
        if not isinstance(name, str) or not isinstance(entry, dict):
            return f"{where} must be a map under a string name"
        if not isinstance(entry.get("config"), dict):
            return f"{where}: 'config' must be a map"
        recent = entry.get("recent")
        if not isinstance(recent, dict) or not isinstance(recent.get("records"), bytes):
            return f"{where}: 'recent' must be a map with a 'records' blob id"
        for array in _RECENT_ARRAYS:
            if recent.get(array) is not None and (problem := _refs_problem(recent[array], f"{where}: {array!r}")):
                return problem
        segments = entry.get("segments", [])
        if not isinstance(segments, list):
            return f"{where}: 'segments' must be a list"
        for item in segments:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), bytes) for k in ("frozen", "mutable")):
                return f"{where}: a segment must name its 'frozen' and 'mutable' blobs"
            if problem := _refs_problem(item.get("chunks"), f"{where}: segment 'chunks'"):
                return problem
        codebook = entry.get("codebook")
        if codebook is not None:
            if not isinstance(codebook, dict) or not isinstance(codebook.get("id"), str) \
                    or not isinstance(codebook.get("rows"), int):
                return f"{where}: 'codebook' must be a map with an 'id' and 'rows'"
            if problem := _refs_problem(codebook.get("chunks"), f"{where}: codebook 'chunks'"):
                return problem
            if len(codebook["chunks"]) < 2:
                return f"{where}: codebook 'chunks' must name its parts and its index"
    return None


def referenced_blobs(manifest: dict[str, Any]) -> set[BlobId]:
    """Every blob a manifest needs (not counting itself)."""
    refs: set[BlobId] = set()
    for entry in manifest["collections"].values():
        recent = entry["recent"]
        refs.update(_ids([recent["records"]]))
        refs.update(_ids(ref for name in _RECENT_ARRAYS for ref in recent.get(name) or []))
        for item in entry.get("segments", []):
            refs.update(_ids([item["frozen"], item["mutable"], *item["chunks"]]))
        if entry.get("codebook"):
            refs.update(_ids(entry["codebook"]["chunks"]))
    return refs


def _ids(refs: Iterable[bytes]) -> Iterator[BlobId]:
    for ref in refs:
        try:
            yield BlobId.from_bytes(ref)
        except ValueError as exc:
            raise BlobCorrupt(f"manifest names a malformed blob id: {exc}") from None
