"""The S5 wire format as pure functions: registry entries, blob encryption, seed phrases."""

from .crypto import decrypt_blob, encrypt_blob, pad_file_size
from .registry import (
    CHALLENGE_LOGIN,
    CHALLENGE_REGISTER,
    MAX_DATA_BYTES,
    MAX_REVISION,
    RegistryEntry,
    b64url,
    b64url_decode,
    blob_id_from_pointer,
    challenge_response,
    pointer_data,
    public_key_of,
    sign_challenge,
    sign_entry,
    signed_message,
)
from .seed import (
    Identity,
    InvalidSeedPhrase,
    checksum_words,
    dhi,
    dhs,
    entropy_to_phrase,
    generate_phrase,
    phrase_to_entropy,
    validate_phrase,
)

__all__ = [
    "CHALLENGE_LOGIN", "CHALLENGE_REGISTER", "MAX_DATA_BYTES", "MAX_REVISION", "Identity",
    "InvalidSeedPhrase", "RegistryEntry", "b64url", "b64url_decode", "blob_id_from_pointer",
    "challenge_response", "checksum_words", "decrypt_blob", "dhi", "dhs", "encrypt_blob",
    "entropy_to_phrase", "generate_phrase", "pad_file_size", "phrase_to_entropy", "pointer_data",
    "public_key_of", "sign_challenge", "sign_entry", "signed_message", "validate_phrase",
]
