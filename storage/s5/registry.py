"""S5 registry entries, the root-pointer convention and portal login challenges (S5.md).

Pure functions: no I/O. Keys are ed25519 keypairs made directly from 32-byte seeds
(RFC 8032, PyNaCl ``SigningKey``); on the wire a public key carries a 0xed prefix.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Final

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from ..blobid import BLOB_PREFIX, BlobId, blake3_digest

RECORD_TYPE: Final = 0x07
ED25519_PREFIX: Final = 0xED
POINTER_PREFIX: Final = 0x1E
MAX_DATA_BYTES: Final = 48
"""What we write; the spec text says 48 although nodes accept up to 64."""
MAX_WIRE_DATA_BYTES: Final = 64
"""What we accept when parsing: the most a node stores."""
MAX_REVISION: Final = 2**48
CHALLENGE_REGISTER: Final = 1
CHALLENGE_LOGIN: Final = 2

_PUBLIC_KEY_BYTES: Final = 33
_SIGNATURE_BYTES: Final = 64
_HEADER_BYTES: Final = 1 + _PUBLIC_KEY_BYTES + 8 + 1
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


def b64url(data: bytes) -> str:
    """Base64url without padding, the form the portal API uses for binary fields."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url`; also tolerates ``=`` padding. Raises ValueError."""
    if not isinstance(text, str):
        # A wrong JSON type from a portal is bad data like any other: one exception to catch.
        raise ValueError(f"base64url value must be a string, not {type(text).__name__}")  # noqa: TRY004
    body = text.rstrip("=")
    if not _B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise ValueError(f"invalid base64url string {text[:40]!r}")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def signed_message(revision: int, data: bytes) -> bytes:
    """The bytes an entry's signature covers: 0x07 | revision u64 LE | len | data (no key)."""
    if not 0 <= revision < 2**64:
        raise ValueError(f"revision {revision} does not fit in a u64")
    if len(data) > 255:
        raise ValueError("data too long")
    return bytes([RECORD_TYPE]) + revision.to_bytes(8, "little") + bytes([len(data)]) + data


def _seed_check(seed: bytes) -> None:
    if len(seed) != 32:
        raise ValueError(f"an ed25519 seed is 32 bytes, got {len(seed)}")


def public_key_of(seed: bytes) -> bytes:
    """The 33-byte S5 public key (0xed + ed25519 key) of a 32-byte seed. Raises ValueError."""
    _seed_check(seed)
    return bytes([ED25519_PREFIX]) + bytes(SigningKey(seed).verify_key)


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One signed registry value; construction validates field sizes (ValueError)."""

    public_key: bytes  # 33 bytes: 0xed + ed25519 public key
    revision: int
    data: bytes
    signature: bytes  # 64 bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != _PUBLIC_KEY_BYTES or self.public_key[0] != ED25519_PREFIX:
            raise ValueError("registry public key must be 33 bytes starting with 0xed")
        if not 0 <= self.revision < 2**64:
            raise ValueError(f"registry revision {self.revision} does not fit in a u64")
        if len(self.data) > MAX_WIRE_DATA_BYTES:
            raise ValueError(f"data too long: {len(self.data)} bytes > {MAX_WIRE_DATA_BYTES}")
        if len(self.signature) != _SIGNATURE_BYTES:
            raise ValueError(f"registry signature must be 64 bytes, got {len(self.signature)}")

    def serialize(self) -> bytes:
        """0x07 | pk (33) | revision u64 LE | len (1) | data | signature (64)."""
        return (bytes([RECORD_TYPE]) + self.public_key + self.revision.to_bytes(8, "little")
                + bytes([len(self.data)]) + self.data + self.signature)

    @classmethod
    def parse(cls, raw: bytes) -> RegistryEntry:
        """Inverse of :meth:`serialize`; does not check the signature. Raises ValueError."""
        if len(raw) < _HEADER_BYTES + _SIGNATURE_BYTES:
            raise ValueError(f"registry entry too short ({len(raw)} bytes)")
        if raw[0] != RECORD_TYPE:
            raise ValueError(f"not a registry entry (type byte 0x{raw[0]:02x}, expected 0x07)")
        size = raw[_HEADER_BYTES - 1]
        if len(raw) != _HEADER_BYTES + size + _SIGNATURE_BYTES:
            raise ValueError(f"registry entry length {len(raw)} does not match its data length {size}")
        return cls(public_key=bytes(raw[1:1 + _PUBLIC_KEY_BYTES]),
                   revision=int.from_bytes(raw[1 + _PUBLIC_KEY_BYTES:_HEADER_BYTES - 1], "little"),
                   data=bytes(raw[_HEADER_BYTES:_HEADER_BYTES + size]),
                   signature=bytes(raw[_HEADER_BYTES + size:]))

    def signed_message(self) -> bytes:
        """The bytes the signature covers (see the module function)."""
        return signed_message(self.revision, self.data)

    def verify(self) -> bool:
        """True if the signature is valid for this key, revision and data."""
        try:
            VerifyKey(self.public_key[1:]).verify(self.signed_message(), self.signature)
        except CryptoError:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """The portal JSON body ``{"pk", "revision", "data", "signature"}``."""
        return {"pk": b64url(self.public_key), "revision": self.revision,
                "data": b64url(self.data), "signature": b64url(self.signature)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RegistryEntry:
        """Inverse of :meth:`to_json`; does not check the signature. Raises ValueError."""
        if not isinstance(d, dict):
            raise ValueError("registry entry JSON must be an object")  # noqa: TRY004
        missing = [key for key in ("pk", "revision", "data", "signature") if key not in d]
        if missing:
            raise ValueError(f"registry entry JSON lacks {', '.join(missing)}")
        revision = d["revision"]
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise ValueError(f"registry entry revision must be an integer, got {revision!r}")  # noqa: TRY004
        return cls(public_key=b64url_decode(d["pk"]), revision=revision,
                   data=b64url_decode(d["data"]), signature=b64url_decode(d["signature"]))


def sign_entry(seed: bytes, revision: int, data: bytes) -> RegistryEntry:
    """Sign ``data`` at ``revision`` with the keypair of ``seed``.

    Raises:
        ValueError: seed not 32 bytes, data over 48 bytes ("data too long"), or
            revision outside 0..2**48.
    """
    _seed_check(seed)
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"data too long: {len(data)} bytes > {MAX_DATA_BYTES}")
    if not 0 <= revision <= MAX_REVISION:
        raise ValueError(f"revision {revision} outside 0..2**48")
    key = SigningKey(seed)
    signature = key.sign(signed_message(revision, data)).signature
    return RegistryEntry(bytes([ED25519_PREFIX]) + bytes(key.verify_key), revision, bytes(data), signature)


def pointer_data(blob_id: BlobId) -> bytes:
    """Registry data naming a blob: 0x1e | blake3 (32) | size u64 LE trimmed (1-8 bytes).

    The first 33 bytes are the S5 pointer convention; the size lets a reader download it.
    """
    return blob_id.to_bytes()[len(BLOB_PREFIX) - 1:]


def blob_id_from_pointer(data: bytes) -> BlobId:
    """Inverse of :func:`pointer_data`. Raises ValueError, also for a bare 33-byte S5
    pointer, which lacks the size s5vec needs to fetch the blob."""
    if not data or data[0] != POINTER_PREFIX:
        raise ValueError("registry data is not a blob pointer (expected a 0x1e prefix)")
    if len(data) == 33:
        raise ValueError("blob pointer has a hash but no size (33-byte S5 pointer); "
                         "s5vec needs hash + size to download the blob")
    if not 34 <= len(data) <= 41:
        raise ValueError(f"blob pointer has a bad length ({len(data)} bytes, expected 34-41)")
    return BlobId.from_bytes(BLOB_PREFIX[:-1] + data)


def challenge_response(kind: int, challenge: bytes, host: str) -> bytes:
    """The 65 bytes a portal wants signed: kind (1 register, 2 login) | challenge | blake3(host).

    ``host`` is the portal's "host[:port]" as the portal sees it. Raises ValueError.
    """
    if kind not in (CHALLENGE_REGISTER, CHALLENGE_LOGIN):
        raise ValueError(f"challenge kind must be 1 (register) or 2 (login), got {kind}")
    if len(challenge) != 32:
        raise ValueError(f"portal challenge must be 32 bytes, got {len(challenge)}")
    return bytes([kind]) + challenge + blake3_digest(host.encode("utf-8"))


def sign_challenge(seed: bytes, kind: int, challenge: bytes, host: str) -> tuple[bytes, bytes]:
    """``(response, signature)`` for a portal register/login challenge. Raises ValueError."""
    _seed_check(seed)
    response = challenge_response(kind, challenge, host)
    return response, SigningKey(seed).sign(response).signature
