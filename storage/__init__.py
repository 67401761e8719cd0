"""Bytes on disk (or S5): content-addressed blobs, the blob codec and the write-ahead log."""

from .blobid import BlobId, blake3_digest, multibase_decode
from .blobstore import BlobStore, HeadPointer, LocalBlobStore, fsync_dir, write_atomic
from .codec import decode_blob, decode_bytes_blob, encode_blob
from .errors import (
    BackendUnavailable, BlobCorrupt, BlobNotFound, RootConflict, StorageError, StorageFull, WalCorrupt, WalFailed,
)
from .mirror import RemoteStore, RootMirror
from .wal import WalDamaged, WriteAheadLog

__all__ = [
    "BackendUnavailable", "BlobCorrupt", "BlobId", "BlobNotFound", "BlobStore", "HeadPointer", "LocalBlobStore",
    "RemoteStore", "RootConflict", "RootMirror", "StorageError", "StorageFull", "WalCorrupt", "WalDamaged",
    "WalFailed", "WriteAheadLog",
    "blake3_digest", "decode_blob", "decode_bytes_blob", "encode_blob", "fsync_dir", "multibase_decode", "write_atomic",
]
