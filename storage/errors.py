"""Errors raised by the storage layer; the daemon maps them to HTTP statuses."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every storage failure."""


class BlobNotFound(StorageError):
    """No blob with the requested identifier is stored."""


class BlobCorrupt(StorageError):
    """A blob's bytes do not hash to its identifier, or cannot be decoded."""


class BackendUnavailable(StorageError):
    """The storage backend cannot be reached or refused the operation."""


class RootConflict(StorageError):
    """The root pointer changed since it was read (compare-and-set lost)."""


class WalCorrupt(StorageError):
    """A write-ahead-log segment is damaged before its last record."""


class StorageFull(StorageError):
    """The disk (or quota) holding the data directory is full (ENOSPC/EDQUOT); nothing was written."""


class WalFailed(StorageError):
    """The write-ahead log could not be synced; it refuses every write until the daemon restarts."""
