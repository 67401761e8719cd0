"""What each part of ``ops`` needs of the engine, as protocols: the metrics collector and the
health monitor read :class:`EngineState`, the job scheduler drives :class:`Maintainable`.
:class:`s5vec.engine.Database` satisfies both; a test can pass something smaller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from s5vec.engine import BackupCatalog, EngineConfig, EventBus, StorageHealth
    from s5vec.index import Collection
    from s5vec.storage import BlobId, BlobStore


class EngineState(Protocol):
    """The engine's state as read at scrape or health-check time (no method does work)."""

    ready: bool
    applied_lsn: int
    checkpoint_lsn: int
    last_checkpoint: float
    last_migration: dict[str, Any]
    storage: StorageHealth
    store: BlobStore
    events: EventBus
    collections: dict[str, Collection]
    follower_stats: Callable[[], dict[str, Any]] | None

    @property
    def wal_bytes(self) -> int: ...

    @property
    def wal_syncs(self) -> int: ...

    @property
    def migrating(self) -> bool: ...

    @property
    def shipping(self) -> dict[str, Any] | None: ...

    def collection_items(self) -> list[tuple[str, Collection]]: ...


class Maintainable(Protocol):
    """What the scheduled jobs run on the engine."""

    config: EngineConfig
    checkpoint_lsn: int
    last_gc: dict[str, Any]
    storage: StorageHealth
    store: BlobStore
    events: EventBus
    backups: BackupCatalog

    async def checkpoint_due(self) -> bool: ...

    async def checkpoint(self) -> BlobId | None: ...

    async def migrate(self, max_records: int | None = None, now: float | None = None) -> dict[str, Any]: ...

    async def compact(self, tombstone_ratio: float) -> list[str]: ...

    async def rebuild_segments(self, choose: Callable[[Collection], Sequence[int | Sequence[int]]],
                               stop: Callable[[], bool] | None = None) -> dict[str, Any]: ...

    async def collect_garbage(self) -> int: ...

    def keep_unreferenced_for(self, seconds: float) -> None: ...
