"""S5 seed phrases (15 words, not BIP39) and the key tree derived from them (S5.md).

Words 1-12 carry 10 bits each and word 13 carries 8 bits: 16 bytes of entropy, most
significant bit first. Words 14-15 are a checksum over blake3(entropy).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Final

from ..blobid import blake3_digest

PHRASE_WORDS: Final = 15
ENTROPY_BYTES: Final = 16
_WORDLIST_SIZE: Final = 1024
_PREFIX: Final = 3
_PACKAGE: Final = __name__.rpartition(".")[0]


class InvalidSeedPhrase(ValueError):
    """A seed phrase is malformed; the message names the word or check that failed."""


@cache
def _wordlist() -> tuple[tuple[str, ...], dict[str, int]]:
    """The 1024 words and a map from each unique 3-letter prefix to its index."""
    words = tuple(files(_PACKAGE).joinpath("wordlist.txt").read_text("utf-8").split())
    prefixes = {word[:_PREFIX]: index for index, word in enumerate(words)}
    if len(words) != _WORDLIST_SIZE or len(prefixes) != _WORDLIST_SIZE:
        raise RuntimeError("the bundled S5 word list is damaged")
    return words, prefixes


def checksum_words(entropy: bytes) -> tuple[int, int]:
    """The word indices of words 14 and 15 for ``entropy``."""
    h = blake3_digest(entropy)
    return ((h[0] << 8) + h[1]) >> 6, (((h[1] << 10) & 0xFFFF) + (h[2] << 2)) >> 6


def entropy_to_phrase(entropy: bytes) -> str:
    """The 15-word phrase for 16 bytes of entropy. Raises ValueError for another length."""
    if len(entropy) != ENTROPY_BYTES:
        raise ValueError(f"seed entropy is {ENTROPY_BYTES} bytes, got {len(entropy)}")
    words, _ = _wordlist()
    bits = int.from_bytes(entropy, "big")
    indices = [(bits >> (8 + 10 * (11 - i))) & 0x3FF for i in range(12)]
    indices += [bits & 0xFF, *checksum_words(entropy)]
    return " ".join(words[i] for i in indices)


def generate_phrase() -> str:
    """A new phrase from 16 bytes of cryptographically secure random entropy."""
    return entropy_to_phrase(secrets.token_bytes(ENTROPY_BYTES))


def phrase_to_entropy(phrase: str) -> bytes:
    """The 16 bytes of entropy a phrase encodes; words match by their first 3 letters
    after trimming and lower-casing.

    Raises:
        InvalidSeedPhrase: naming the wrong word count, unknown word, word 13 out of
            range or checksum mismatch.
    """
    typed = phrase.strip().lower().split()
    if len(typed) != PHRASE_WORDS:
        raise InvalidSeedPhrase(f"a seed phrase has {PHRASE_WORDS} words, got {len(typed)}")
    _, prefixes = _wordlist()
    indices = []
    for number, word in enumerate(typed, start=1):
        if len(word) < _PREFIX:
            raise InvalidSeedPhrase(f"word {number} {word!r} is shorter than 3 letters")
        if word[:_PREFIX] not in prefixes:
            raise InvalidSeedPhrase(f"word {number} {word!r} is not in the S5 word list")
        indices.append(prefixes[word[:_PREFIX]])
    if indices[12] >= 256:
        raise InvalidSeedPhrase(f"word 13 {typed[12]!r} must be one of the first 256 words of the list")
    bits = 0
    for index in indices[:12]:
        bits = (bits << 10) | index
    entropy = ((bits << 8) | indices[12]).to_bytes(ENTROPY_BYTES, "big")
    if tuple(indices[13:]) != checksum_words(entropy):
        raise InvalidSeedPhrase("checksum does not match (words 14-15): a word is mistyped or missing")
    return entropy


def validate_phrase(phrase: str) -> bool:
    """True if ``phrase`` is a valid S5 seed phrase."""
    try:
        phrase_to_entropy(phrase)
    except InvalidSeedPhrase:
        return False
    return True


def dhi(base: bytes, n: int) -> bytes:
    """Derive a child key by index: blake3(base | n as 32-byte LE)."""
    if n < 0:
        raise ValueError(f"derivation index must not be negative, got {n}")
    return blake3_digest(base + n.to_bytes(32, "little"))


def dhs(base: bytes, data: bytes) -> bytes:
    """Derive a child key by bytes: blake3(base | blake3(data))."""
    return blake3_digest(base + blake3_digest(data))


@dataclass(frozen=True, slots=True, repr=False)
class Identity:
    """The S5 key tree of one seed phrase. All fields are 32-byte secrets; repr hides them."""

    seed: bytes
    main: bytes
    private_sub: bytes
    storage_accounts: bytes
    hidden_db: bytes
    file_system: bytes
    fs_root_write_key: bytes

    @classmethod
    def from_entropy(cls, entropy: bytes) -> Identity:
        """Derive the tree from 16 bytes of entropy. Raises ValueError for another length."""
        if len(entropy) != ENTROPY_BYTES:
            raise ValueError(f"seed entropy is {ENTROPY_BYTES} bytes, got {len(entropy)}")
        seed = blake3_digest(entropy)
        main = dhi(seed, 0)
        private_sub = dhi(dhi(main, 64), 0)
        file_system = dhi(private_sub, 67)
        return cls(seed=seed, main=main, private_sub=private_sub,
                   storage_accounts=dhi(private_sub, 65), hidden_db=dhi(private_sub, 66),
                   file_system=file_system, fs_root_write_key=dhi(file_system, 1))

    @classmethod
    def from_phrase(cls, phrase: str) -> Identity:
        """Derive the tree from a seed phrase. Raises InvalidSeedPhrase."""
        return cls.from_entropy(phrase_to_entropy(phrase))

    def account_key(self, account_seed: bytes) -> bytes:
        """The ed25519 seed of a portal account: blake3(storage_accounts | account_seed)."""
        if len(account_seed) != 32:
            raise ValueError(f"an account seed is 32 bytes, got {len(account_seed)}")
        return blake3_digest(self.storage_accounts + account_seed)

    def root_registry_seed(self) -> bytes:
        """s5vec: ed25519 seed of the registry entry pointing at the current manifest,
        ``dhi(hidden_db, 1)``."""
        return dhi(self.hidden_db, 1)

    def blob_encryption_key(self) -> bytes:
        """s5vec: the 32-byte XChaCha20-Poly1305 key for every uploaded blob,
        ``dhi(hidden_db, 2)``."""
        return dhi(self.hidden_db, 2)

    def portal_account_seed(self) -> bytes:
        """s5vec: a deterministic account seed, ``dhi(hidden_db, 3)``, so every daemon with
        the same phrase logs in as the same portal account
        (key = ``account_key(portal_account_seed())``)."""
        return dhi(self.hidden_db, 3)

    def __repr__(self) -> str:
        return "Identity(***)"
