"""Jobs around the engine: the database (writer, indexer, checkpoints) and manifests."""

from .database import Database, DataDirLocked, EngineConfig, Query
from .manifest import read_manifest, referenced_blobs

__all__ = ["DataDirLocked", "Database", "EngineConfig", "Query", "read_manifest", "referenced_blobs"]
