"""A sealed segment of the historical tier: the records of one closed time window,
indexed by an IVF segment (faiss) and addressed by position.

The vectors, ids and timestamps never change after sealing; deletions are tombstones
and metadata updates replace the stored document, both counted in ``version`` so a
checkpoint rewrites only what changed.  Metadata is kept JSON-encoded (compact) and
decoded only for hits and for filters on fields without a payload index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from .ivf import Codebook, IvfParams, IvfSegment
from .payload import PayloadIndex
from .records import CollectionConfig
from .scratch import file_backed

_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(dict[str, Any]).decode


def segment_file(directory: Path, collection: str, seq: int) -> Path:
    """Where sealed segment ``seq`` of ``collection`` keeps its vectors: one folder per
    collection under ``directory`` (created here), so removing one collection's files can
    never touch another's, whatever their names share."""
    folder = Path(directory) / collection
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{seq:08d}.f32"


def ivf_params(config: CollectionConfig) -> IvfParams:
    return IvfParams(quantizer=config.ivf_quantizer, nlist=config.ivf_nlist or None,
                     nprobe=config.ivf_nprobe, rerank=config.ivf_rerank)


def train_codebook(config: CollectionConfig, sample: np.ndarray, nlist: int | None = None) -> Codebook:
    """A codebook for ``config``'s segments trained on ``sample`` (normalised rows): with
    ``nlist`` lists (the collection's shared codebook), else as many as the config or
    :func:`auto_nlist` give for the sample's size (a segment's own)."""
    params = ivf_params(config) if nlist is None else dataclasses.replace(ivf_params(config), nlist=nlist)
    return Codebook.train(np.ascontiguousarray(sample, np.float32), config.metric, params)


class LazyIvf:
    """Stands in for an :class:`IvfSegment` whose bytes are fetched on first use, so a
    restart does not read every historical segment before it can serve."""

    def __init__(self, load: Callable[[], IvfSegment]) -> None:
        self._load = load
        self._ivf: IvfSegment | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._ivf is not None

    def get(self) -> IvfSegment:
        if self._ivf is None:
            with self._lock:
                if self._ivf is None:
                    self._ivf = self._load()
        return self._ivf

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

    def memory_bytes(self) -> int:
        return self._ivf.memory_bytes() if self._ivf is not None else 0

    def close(self) -> None:
        if self._ivf is not None:
            self._ivf.close()


class ByteColumn:
    """Variable-length byte strings in one memory-mapped file plus an offsets array, so
    a million ids or metadata documents cost 8 bytes each in RAM, not a Python object."""

    def __init__(self, path: Path, offsets: np.ndarray, data: bytes) -> None:
        self.path = path
        self.offsets = offsets
        size = int(offsets[-1]) if len(offsets) else 0
        if len(data) != size:
            raise ValueError(f"byte column {path.name}: {len(data)} bytes, offsets say {size}")
        self._map = file_backed(path, data, np.uint8, (size,))  # in memory when the disk is full

    @classmethod
    def write(cls, items: Sequence[bytes], path: Path) -> ByteColumn:
        offsets = np.zeros(len(items) + 1, np.int64)
        np.cumsum([len(item) for item in items], out=offsets[1:])
        return cls(path, offsets, b"".join(items))

    @classmethod
    def from_bytes(cls, data: bytes, offsets: bytes, path: Path) -> ByteColumn:
        return cls(path, np.frombuffer(offsets, np.int64).copy(), data)

    def __len__(self) -> int:
        return max(0, len(self.offsets) - 1)

    def __getitem__(self, pos: int) -> bytes:
        return self._map[int(self.offsets[pos]):int(self.offsets[pos + 1])].tobytes()

    def data(self) -> bytes:
        return self._map.tobytes()

    def all(self) -> list[bytes]:
        """Every item, read in one pass (indexing the memory map item by item costs ~10 us each)."""
        data, bounds = self._map.tobytes(), self.offsets.tolist()
        return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def close(self) -> None:
        self._map = np.zeros(0, np.uint8)
        self.path.unlink(missing_ok=True)


class SealedSegment:
    """Immutable-vector segment of one time window (see module docstring).

    Ids and metadata live in memory-mapped columns; an id is found through a sorted
    array of 64-bit hashes (checked against the stored id), metadata edits go to a
    small overlay."""

    def __init__(self, seq: int, window: int, ivf: IvfSegment | LazyIvf, ids: ByteColumn, timestamps: np.ndarray,
                 metadata: ByteColumn, overlay: dict[int, bytes], payload: PayloadIndex, deleted: np.ndarray,
                 codebook: str | None = None) -> None:
        self.seq, self.window, self.ivf = seq, window, ivf
        self.codebook = codebook  # the id of the codebook its IVF index was filled from (known before loading it)
        self.ids = ids
        self.timestamps = timestamps
        self.metadata = metadata
        self.overlay = overlay
        self.payload = payload
        self.deleted = deleted
        self.live = int(len(ids) - deleted.sum())
        self.version = 0
        self._bitmap: tuple[int, np.ndarray] | None = None
        # filter (encoded) -> (version, matching rows, their positions, packed bitmap); see Collection
        self.filter_cache: dict[bytes, tuple[int, int, np.ndarray, np.ndarray]] = {}
        hashes = np.fromiter((_hash(key) for key in ids.all()), np.int64, len(ids))
        self._order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[self._order]

    @classmethod
    def build(cls, seq: int, window: int, config: CollectionConfig, vectors: np.ndarray, ids: list[str],
              timestamps: np.ndarray, metadata: Sequence[dict[str, Any]] | None, path: Path,
              raw_metadata: Sequence[bytes] | None = None, payload: PayloadIndex | None = None,
              codebook: Codebook | None = None) -> SealedSegment:
        """Fill the IVF index from ``codebook``, trained here on ``vectors`` when None (CPU
        heavy; call without locks held).
        A migration passes the documents as the recent tier holds them: ``raw_metadata``
        (JSON bytes) and ``payload`` (its payload index taken for these records), and no
        ``metadata`` to decode and index again."""
        rows = np.ascontiguousarray(vectors, np.float32)
        if codebook is None:
            codebook = train_codebook(config, rows)
        elif codebook.metric != config.metric:
            raise ValueError(f"codebook: trained for metric {codebook.metric!r}, the collection uses {config.metric!r}")
        ivf = IvfSegment.build(rows, codebook, path)
        if payload is None:
            if metadata is None:
                raise ValueError("metadata is needed to build the payload index")
            payload = PayloadIndex(config.payload_fields, len(ids))
            payload.set(np.arange(len(ids)), metadata)
        id_column = ByteColumn.write([i.encode() for i in ids], path.with_suffix(".ids"))
        if raw_metadata is None and metadata is None:
            raise ValueError("metadata or raw_metadata is needed")
        encoded = raw_metadata if raw_metadata is not None else [_ENCODE(m) for m in metadata or ()]
        meta_column = ByteColumn.write(encoded, path.with_suffix(".meta"))
        return cls(seq, window, ivf, id_column, np.asarray(timestamps, np.float64), meta_column, {}, payload,
                   np.zeros(len(ids), bool), codebook.id)

    @property
    def n(self) -> int:
        return len(self.ids)

    def id_of(self, pos: int) -> str:
        return self.ids[pos].decode()

    def find(self, record_id: str) -> int | None:
        """Position of a live record, or None."""
        key = record_id.encode()
        h = _hash(key)
        at = int(np.searchsorted(self._hashes, h))
        while at < len(self._hashes) and self._hashes[at] == h:
            pos = int(self._order[at])
            if not self.deleted[pos] and self.ids[pos] == key:
                return pos
            at += 1
        return None

    def find_many(self, ids: Sequence[str], hashes: np.ndarray) -> np.ndarray:
        """Positions of the live records ``ids`` (-1 where absent), ``hashes`` being
        :func:`hash_ids` of them: one vectorised probe per batch, so an upsert batch costs
        microseconds per segment instead of ~15 us per id per segment (at 10M records,
        ~100 segments, a per-id :meth:`find` made ingest 100x slower). Only hash matches
        are checked against the stored id."""
        out = np.full(len(ids), -1, np.int64)
        if not len(self._hashes) or not len(ids):
            return out
        at = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        for i in np.flatnonzero(self._hashes[at] == hashes).tolist():
            pos = self.find(ids[i])
            if pos is not None:
                out[i] = pos
        return out

    def meta(self, pos: int) -> dict[str, Any]:
        raw = self.overlay.get(pos)
        return _DECODE(raw if raw is not None else self.metadata[pos])

    def live_bitmap(self) -> np.ndarray | None:
        """The live rows as a faiss selector bitmap (None without tombstones), packed once
        per change: packing 1M flags costs ~0.3 ms, more than a search's scan of a segment."""
        if self.live == self.n:
            return None
        cached = self._bitmap
        if cached is None or cached[0] != self.version:
            cached = self._bitmap = (self.version, np.packbits(~self.deleted, bitorder="little"))
        return cached[1]

    def delete(self, pos: int) -> None:
        if not self.deleted[pos]:
            self.deleted[pos] = True
            self.live -= 1
            self.payload.clear([pos])
            self.overlay.pop(pos, None)
            self.version += 1

    def set_metadata(self, pos: int, metadata: dict[str, Any]) -> None:
        self.overlay[pos] = _ENCODE(metadata)
        self.payload.set([pos], [metadata])
        self.version += 1

    def memory_bytes(self) -> int:
        """Resident bytes, not counting memory-mapped files (vectors, ids, metadata)."""
        overlay = sum(len(m) + 100 for m in self.overlay.values())
        arrays = (self.ids.offsets.nbytes + self.metadata.offsets.nbytes + self._hashes.nbytes
                  + self._order.nbytes + self.timestamps.nbytes + self.deleted.nbytes)
        return int(self.ivf.memory_bytes() + overlay + arrays + self.payload.memory_bytes())

    # --------------------------------------------------------------- persistence
    def frozen_parts(self) -> dict[str, Any]:
        """What never changes after sealing (stored once, deduplicated by content); the
        large byte strings are under ``blobs``."""
        ivf = dict(self.ivf.to_parts())
        blobs = {"index": ivf.pop("index"), "vectors": ivf.pop("vectors"),
                 "ids": self.ids.data(), "ids_offsets": self.ids.offsets.tobytes(),
                 "meta": self.metadata.data(), "meta_offsets": self.metadata.offsets.tobytes()}
        return {"seq": self.seq, "window": self.window, "ivf": ivf, "timestamps": self.timestamps.tobytes(),
                "blobs": blobs}

    def mutable_parts(self) -> dict[str, Any]:
        return {"overlay": {int(k): v for k, v in self.overlay.items()},
                "deleted": np.packbits(self.deleted).tobytes(), "payload": self.payload.to_parts()}

    @classmethod
    def from_parts(cls, frozen: dict[str, Any], mutable: dict[str, Any], path: Path,
                   load_ivf: Callable[[], IvfSegment] | None = None) -> SealedSegment:
        """Rebuild a segment; with ``load_ivf`` the IVF index and vectors load on first use."""
        blobs = frozen["blobs"]
        if load_ivf is not None:
            ivf: IvfSegment | LazyIvf = LazyIvf(load_ivf)
        else:
            ivf = IvfSegment.from_parts({**frozen["ivf"], "index": blobs["index"], "vectors": blobs["vectors"]}, path)
        ids = ByteColumn.from_bytes(blobs["ids"], blobs["ids_offsets"], path.with_suffix(".ids"))
        meta = ByteColumn.from_bytes(blobs["meta"], blobs["meta_offsets"], path.with_suffix(".meta"))
        deleted = np.unpackbits(np.frombuffer(mutable["deleted"], np.uint8), count=len(ids)).astype(bool)
        return cls(int(frozen["seq"]), int(frozen["window"]), ivf, ids,
                   np.frombuffer(frozen["timestamps"], np.float64).copy(), meta,
                   {int(k): v for k, v in mutable.get("overlay", {}).items()},
                   PayloadIndex.from_parts(mutable["payload"]), deleted, frozen["ivf"].get("codebook"))

    def close(self) -> None:
        self.ivf.close()
        self.ids.close()
        self.metadata.close()


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """The 64-bit hashes of ``ids`` that :meth:`SealedSegment.find_many` takes (computed
    once per batch, shared by every segment)."""
    return np.fromiter((_hash(i.encode()) for i in ids), np.int64, len(ids))


def _hash(key: bytes) -> int:
    """A stable 64-bit hash (Python's own is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)
