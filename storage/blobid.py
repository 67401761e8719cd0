"""S5 blob identifiers: BLAKE3 hash + size, in the multibase forms S5 uses (see S5.md)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

import base58
import blake3

BLOB_PREFIX: Final = b"\x5b\x82\x1e"
LEGACY_PREFIX: Final = b"\x26\x1f"
_PARALLEL_HASH_BYTES: Final = 1 << 20


def blake3_digest(data: bytes | memoryview) -> bytes:
    """BLAKE3-256 of ``data``; large inputs hash on several threads (GIL released)."""
    threads = blake3.blake3.AUTO if len(data) >= _PARALLEL_HASH_BYTES else 1
    return blake3.blake3(data, max_threads=threads).digest()


def _size_bytes(size: int) -> bytes:
    raw = size.to_bytes(8, "little").rstrip(b"\x00")
    return raw or b"\x00"


@dataclass(frozen=True, slots=True)
class BlobId:
    """Content address of an immutable blob: its BLAKE3 hash and byte length."""

    hash: bytes
    size: int

    @classmethod
    def of(cls, data: bytes | memoryview) -> BlobId:
        return cls(blake3_digest(data), len(data))

    def to_bytes(self) -> bytes:
        return BLOB_PREFIX + self.hash + _size_bytes(self.size)

    def to_legacy_cid(self) -> bytes:
        return LEGACY_PREFIX + self.hash + _size_bytes(self.size)

    def base32(self) -> str:
        """Multibase ``b`` form: lower case, no padding; safe as a file name."""
        return "b" + base64.b32encode(self.to_bytes()).decode().rstrip("=").lower()

    def base58(self) -> str:
        """Multibase ``z`` form, the one S5 portals expect in URLs."""
        return "z" + base58.b58encode(self.to_bytes()).decode()

    def __str__(self) -> str:
        return self.base32()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlobId:
        """Parse a current blob id or a legacy raw CID. Raises ValueError."""
        if raw.startswith(BLOB_PREFIX):
            body = raw[len(BLOB_PREFIX):]
        elif raw.startswith(LEGACY_PREFIX):
            body = raw[len(LEGACY_PREFIX):]
        else:
            raise ValueError("not an S5 blob identifier (unknown prefix)")
        if len(body) < 32 or len(body) > 40:
            raise ValueError("S5 blob identifier has a bad length")
        return cls(body[:32], int.from_bytes(body[32:] or b"\x00", "little"))

    @classmethod
    def parse(cls, text: str) -> BlobId:
        """Parse any multibase form (f, b, z, u). Raises ValueError."""
        return cls.from_bytes(multibase_decode(text))


def multibase_decode(text: str) -> bytes:
    """Decode a multibase string with prefix f, b, z or u. Raises ValueError."""
    if not text:
        raise ValueError("empty multibase string")
    base, body = text[0], text[1:]
    try:
        if base == "f":
            return bytes.fromhex(body)
        if base == "b":
            return base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        if base == "z":
            return base58.b58decode(body)
        if base == "u":
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid multibase string: {exc}") from None
    raise ValueError(f"unknown multibase prefix {base!r}")
