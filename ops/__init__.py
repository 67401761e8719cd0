"""Jobs around the engine: the database (writer, indexer, checkpoints), manifests and the event bus."""

from .database import Database, DataDirLocked, EngineConfig, Query
from .events import (
    ALL, EVENT_TYPES, JOB_EVENTS, VECTOR_EVENTS, Change, EventBus, EventKey, Notice, StandingQuery, Subscription,
    event_id, expand, parse_event_id, resume_value,
)
from .backup import Backup, BackupCatalog, BackupConfig, BackupNotFound, RestoreRefused
from .health import StorageHealth
from .jobs import JobBusy, Jobs, JobsConfig, QuietHours, UnknownJob
from .manifest import read_manifest, referenced_blobs
from .metrics import Metrics
from .monitor import Alert, HealthMonitor, HealthThresholds

__all__ = ["Alert", "HealthMonitor", "HealthThresholds", "Metrics", "ALL", "EVENT_TYPES", "JOB_EVENTS", "VECTOR_EVENTS", "Change", "DataDirLocked", "EventKey", "event_id", "parse_event_id", "resume_value", "Database", "EngineConfig",
           "EventBus", "Notice", "Query", "StandingQuery", "StorageHealth", "Subscription", "read_manifest",
           "referenced_blobs", "Backup", "BackupCatalog", "BackupConfig", "BackupNotFound", "RestoreRefused",
           "JobBusy", "Jobs", "JobsConfig", "QuietHours", "UnknownJob"]
