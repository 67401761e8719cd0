"""Errors of the engine (the storage and index layers have their own)."""

from __future__ import annotations

from s5vec.storage import StorageError


class ReadOnlyDatabase(StorageError):
    """A write, checkpoint or maintenance job on a database opened read-only."""


class NotWriter(StorageError):
    """This node may not acknowledge writes: another writer replaced it (the replication
    head moved under it) or its leadership lease ran out."""
