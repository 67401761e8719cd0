"""Encryption of blobs before upload, in the s5.js mutable-blob layout (S5.md).

``blob = 0x8d 0x01 | nonce (24) | XChaCha20-Poly1305(key, nonce, u32 LE len | data | zeros)``,
padded so that ``len(blob) == pad_file_size(len(data) + 46)``; padding hides exact sizes.
"""

from __future__ import annotations

from typing import Final

import nacl.utils
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as _aead_decrypt
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as _aead_encrypt
from nacl.exceptions import CryptoError

from ..errors import BlobCorrupt

HEADER: Final = b"\x8d\x01"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16
OVERHEAD: Final = len(HEADER) + NONCE_BYTES + TAG_BYTES + 4
"""Bytes added to the plaintext before padding: header, nonce, tag, length field (46)."""
_KIB: Final = 1024
_MAX_DATA: Final = 2**32 - 1


def pad_file_size(n: int) -> int:
    """Round ``n`` up to a multiple of 2^k * 4 KiB for the least k with n <= 2^k * 80 KiB.

    Raises ValueError for negative sizes or sizes beyond 2^52 * 80 KiB.
    """
    if n < 0:
        raise ValueError(f"size must not be negative, got {n}")
    for k in range(53):
        if n <= (1 << k) * 80 * _KIB:
            block = (1 << k) * 4 * _KIB
            return -(-n // block) * block
    raise ValueError(f"size {n} is too large to pad")


def _key_check(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"an XChaCha20-Poly1305 key is 32 bytes, got {len(key)}")


def encrypt_blob(key: bytes, data: bytes, nonce: bytes | None = None) -> bytes:
    """Encrypt ``data`` with a 32-byte key; a random nonce unless one is given (tests only).

    Raises ValueError for a bad key or nonce length or data over 4 GiB.
    """
    _key_check(key)
    if nonce is None:
        nonce = nacl.utils.random(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"an XChaCha20 nonce is 24 bytes, got {len(nonce)}")
    if len(data) > _MAX_DATA:
        raise ValueError("data too large for a u32 length field")
    padding = pad_file_size(len(data) + OVERHEAD) - len(data) - OVERHEAD
    plaintext = len(data).to_bytes(4, "little") + bytes(data) + bytes(padding)
    return HEADER + nonce + _aead_encrypt(plaintext, None, nonce, key)


def decrypt_blob(key: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`encrypt_blob`.

    Raises:
        BlobCorrupt: wrong header, too short, authentication failure or bad length field.
        ValueError: the key is not 32 bytes.
    """
    _key_check(key)
    if len(blob) < OVERHEAD:
        raise BlobCorrupt(f"encrypted blob too short ({len(blob)} bytes < {OVERHEAD})")
    if blob[:len(HEADER)] != HEADER:
        raise BlobCorrupt(f"not an encrypted S5 blob (header {bytes(blob[:2]).hex()}, expected 8d01)")
    nonce = bytes(blob[len(HEADER):len(HEADER) + NONCE_BYTES])
    try:
        plaintext = _aead_decrypt(bytes(blob[len(HEADER) + NONCE_BYTES:]), None, nonce, key)
    except CryptoError:
        raise BlobCorrupt("encrypted blob failed authentication (wrong key or damaged bytes)") from None
    size = int.from_bytes(plaintext[:4], "little")
    if size > len(plaintext) - 4:
        raise BlobCorrupt(f"encrypted blob length field {size} exceeds its {len(plaintext) - 4} bytes")
    return plaintext[4:4 + size]
