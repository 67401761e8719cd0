"""Blob codec: CBOR documents compressed with zstd. Data only, never pickle."""

from __future__ import annotations

from typing import Any, Final

import cbor2
import zstandard

from .errors import BlobCorrupt

_LEVEL: Final = 3
_FAST_LEVEL: Final = 1
_FAST_ABOVE: Final = 4 << 20


def encode_blob(obj: Any) -> bytes:
    """CBOR-encode ``obj`` (canonical) and compress it; CPU heavy for big objects."""
    raw = cbor2.dumps(obj, canonical=True)
    level = _FAST_LEVEL if len(raw) > _FAST_ABOVE else _LEVEL
    threads = 2 if len(raw) > _FAST_ABOVE else 0
    return zstandard.ZstdCompressor(level=level, threads=threads).compress(raw)


def decode_blob(data: bytes) -> Any:
    """Inverse of :func:`encode_blob`. Raises BlobCorrupt on any malformed input."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
        return cbor2.loads(raw)
    except (zstandard.ZstdError, cbor2.CBORDecodeError, ValueError, TypeError, MemoryError) as exc:
        raise BlobCorrupt(f"blob is not valid zstd-compressed CBOR: {exc}") from None
