"""Checkpoint manifests: a collection snapshot as blobs, and back.

A manifest is one CBOR+zstd blob naming every blob of one consistent state
("contains everything up to LSN n"); the root pointer names the current manifest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Final

from s5vec.index import CollectionConfig, CollectionSnapshot
from s5vec.storage import BlobCorrupt, BlobId, BlobStore, decode_blob, encode_blob

FORMAT: Final = "s5vec-manifest"
VERSION: Final = 1
CHUNK_BYTES: Final = 16 << 20
_ARRAYS: Final = ("vectors", "timestamps", "live", "hnsw")


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """Split ``data`` into pieces a portal accepts in one upload."""
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


async def _put_parts(store: BlobStore, loop: asyncio.AbstractEventLoop, data: bytes) -> list[bytes]:
    encoded = [await loop.run_in_executor(None, encode_blob, part) for part in chunks(data)]
    ids = await asyncio.gather(*(store.put(blob) for blob in encoded))
    return [blob_id.to_bytes() for blob_id in ids]


async def write_snapshot(store: BlobStore, snap: CollectionSnapshot) -> dict[str, Any]:
    """Store a collection snapshot as blobs; returns its manifest entry."""
    loop = asyncio.get_running_loop()
    records = await loop.run_in_executor(None, encode_blob, {"ids": snap.ids, "metadata": snap.metadata})
    entry: dict[str, Any] = {
        "config": snap.config.to_dict(), "next_label": snap.next_label, "hnsw_upto": snap.hnsw_upto,
        "extra": snap.extra, "records": (await store.put(records)).to_bytes(),
    }
    for name in _ARRAYS:
        data = getattr(snap, name)
        entry[name] = None if data is None else await _put_parts(store, loop, data)
    return entry


async def _get_parts(store: BlobStore, loop: asyncio.AbstractEventLoop, refs: list[bytes]) -> bytes:
    blobs = await asyncio.gather(*(store.get(BlobId.from_bytes(ref)) for ref in refs))
    parts = [await loop.run_in_executor(None, decode_blob, blob) for blob in blobs]
    if not all(isinstance(p, bytes) for p in parts):
        raise BlobCorrupt("array chunk is not a byte string")
    return b"".join(parts)


async def read_snapshot(store: BlobStore, entry: dict[str, Any]) -> CollectionSnapshot:
    """Inverse of :func:`write_snapshot`; every blob is verified against its address."""
    loop = asyncio.get_running_loop()
    records = decode_blob(await store.get(BlobId.from_bytes(entry["records"])))
    arrays = {}
    for name in _ARRAYS:
        refs = entry.get(name)
        arrays[name] = None if refs is None else await _get_parts(store, loop, refs)
    return CollectionSnapshot(
        config=CollectionConfig.from_dict(entry["config"]), next_label=entry["next_label"],
        hnsw_upto=entry["hnsw_upto"], ids=records["ids"], metadata=records["metadata"],
        vectors=arrays["vectors"] or b"", timestamps=arrays["timestamps"] or b"",
        live=arrays["live"] or b"", hnsw=arrays["hnsw"], extra=entry.get("extra") or {},
    )


def new_manifest(lsn: int, collections: dict[str, Any], previous: BlobId | None) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "lsn": lsn, "created": time.time(),
            "previous": previous.to_bytes() if previous else None, "collections": collections}


async def read_manifest(store: BlobStore, blob_id: BlobId) -> dict[str, Any]:
    manifest = decode_blob(await store.get(blob_id))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BlobCorrupt(f"blob {blob_id} is not an s5vec manifest")
    if manifest.get("version") != VERSION:
        raise BlobCorrupt(f"manifest {blob_id} has unsupported version {manifest.get('version')}")
    return manifest


def referenced_blobs(manifest: dict[str, Any]) -> Iterable[BlobId]:
    """Every blob a manifest needs (not counting itself)."""
    for entry in manifest["collections"].values():
        yield BlobId.from_bytes(entry["records"])
        for name in _ARRAYS:
            for ref in entry.get(name) or []:
                yield BlobId.from_bytes(ref)
