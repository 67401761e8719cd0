"""The engine: one data directory's collections, write-ahead log, single writer, indexer,
checkpoints, maintenance and event bus, between ``index``/``storage`` below and
``ops``/``daemon`` above."""

from s5vec.storage.datadir import DataDirLocked

from .backups import Backup, BackupCatalog, BackupConfig, BackupNotFound
from .database import Database, EngineConfig, Query, ReadOnlyDatabase
from .events import (
    ALL,
    EVENT_TYPES,
    JOB_EVENTS,
    VECTOR_EVENTS,
    Change,
    EventBus,
    EventKey,
    Notice,
    StandingQuery,
    Subscription,
    event_id,
    expand,
    parse_event_id,
    resume_value,
)
from .executors import Executors
from .health import StorageHealth
from .manifest import read_manifest, referenced_blobs
from .observer import EngineMetrics, NullMetrics

__all__ = [
    "ALL", "EVENT_TYPES", "JOB_EVENTS", "VECTOR_EVENTS", "Backup", "BackupCatalog", "BackupConfig", "BackupNotFound",
    "Change", "DataDirLocked", "Database", "EngineConfig", "EngineMetrics", "EventBus", "EventKey", "Notice",
    "NullMetrics", "Query", "ReadOnlyDatabase", "Executors", "StandingQuery", "StorageHealth", "Subscription", "event_id", "expand", "parse_event_id",
    "read_manifest", "referenced_blobs", "resume_value",
]
