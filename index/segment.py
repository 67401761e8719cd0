"""A sealed segment of the historical tier: the records of one closed time window,
indexed by an IVF segment (faiss) and addressed by position.

The vectors, ids and timestamps never change after sealing; deletions are tombstones
and metadata updates replace the stored document, both counted in ``version`` so a
checkpoint rewrites only what changed.  Metadata is kept JSON-encoded (compact) and
decoded only for hits and for filters on fields without a payload index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from .ivf import IvfParams, IvfSegment
from .payload import PayloadIndex
from .records import CollectionConfig

_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder(dict[str, Any]).decode


def ivf_params(config: CollectionConfig) -> IvfParams:
    return IvfParams(quantizer=config.ivf_quantizer, nlist=config.ivf_nlist or None,
                     nprobe=config.ivf_nprobe, rerank=config.ivf_rerank)


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


class SealedSegment:
    """Immutable-vector segment of one time window (see module docstring)."""

    def __init__(self, seq: int, window: int, ivf: IvfSegment | LazyIvf, ids: list[str], timestamps: np.ndarray,
                 metadata: list[bytes], payload: PayloadIndex, deleted: np.ndarray) -> None:
        self.seq, self.window, self.ivf = seq, window, ivf
        self.ids = ids
        self.positions = {rid: pos for pos, rid in enumerate(ids) if not deleted[pos]}
        self.timestamps = timestamps
        self.metadata = metadata
        self.payload = payload
        self.deleted = deleted
        self.live = int(len(ids) - deleted.sum())
        self.version = 0

    @classmethod
    def build(cls, seq: int, window: int, config: CollectionConfig, vectors: np.ndarray, ids: list[str],
              timestamps: np.ndarray, metadata: Sequence[dict[str, Any]], path: Path) -> SealedSegment:
        """Train and fill the IVF index (CPU heavy; call without locks held)."""
        ivf = IvfSegment.build(np.ascontiguousarray(vectors, np.float32), config.metric, ivf_params(config), path)
        payload = PayloadIndex(config.payload_fields, len(ids))
        payload.set(np.arange(len(ids)), metadata)
        return cls(seq, window, ivf, list(ids), np.asarray(timestamps, np.float64),
                   [_ENCODE(m) for m in metadata], payload, np.zeros(len(ids), bool))

    @property
    def n(self) -> int:
        return len(self.ids)

    def meta(self, pos: int) -> dict[str, Any]:
        return _DECODE(self.metadata[pos])

    def delete(self, pos: int) -> None:
        if not self.deleted[pos]:
            self.deleted[pos] = True
            self.live -= 1
            self.payload.clear([pos])
            del self.positions[self.ids[pos]]
            self.version += 1

    def set_metadata(self, pos: int, metadata: dict[str, Any]) -> None:
        self.metadata[pos] = _ENCODE(metadata)
        self.payload.set([pos], [metadata])
        self.version += 1

    def memory_bytes(self) -> int:
        """Resident bytes (not counting the memory-mapped full-precision vectors)."""
        meta = sum(len(m) + 33 for m in self.metadata)
        ids = sum(len(i) + 49 for i in self.ids) + 100 * len(self.ids)  # strings + dict entries
        return int(self.ivf.memory_bytes() + meta + ids + self.timestamps.nbytes + self.deleted.nbytes
                   + self.payload.memory_bytes())

    # --------------------------------------------------------------- persistence
    def frozen_parts(self) -> dict[str, Any]:
        """What never changes after sealing (stored once, deduplicated by content)."""
        return {"seq": self.seq, "window": self.window, "ivf": self.ivf.to_parts(), "ids": self.ids,
                "timestamps": self.timestamps.tobytes()}

    def mutable_parts(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "deleted": np.packbits(self.deleted).tobytes(),
                "payload": self.payload.to_parts()}

    @classmethod
    def from_parts(cls, frozen: dict[str, Any], mutable: dict[str, Any], path: Path,
                   load_ivf: Callable[[], IvfSegment] | None = None) -> SealedSegment:
        """Rebuild a segment; with ``load_ivf`` the IVF index and vectors load on first use."""
        ivf = LazyIvf(load_ivf) if load_ivf is not None else IvfSegment.from_parts(frozen["ivf"], path)
        n = len(frozen["ids"])
        deleted = np.unpackbits(np.frombuffer(mutable["deleted"], np.uint8), count=n).astype(bool)
        return cls(int(frozen["seq"]), int(frozen["window"]), ivf, list(frozen["ids"]),
                   np.frombuffer(frozen["timestamps"], np.float64).copy(), list(mutable["metadata"]),
                   PayloadIndex.from_parts(mutable["payload"]), deleted)

    def close(self) -> None:
        self.ivf.close()
