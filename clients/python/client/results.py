"""Typed results (msgspec Structs): what the client's calls return and what feeds yield.

Structs decode straight from the server's JSON, ignore fields this client does not know
(newer servers may add some) and are frozen. ``msgspec.structs.asdict(x)`` or
``msgspec.to_builtins(x)`` give plain data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec
from msgspec import Struct, field

NOTICE_TYPES: Final = frozenset({"lagged", "missed", "ahead", "disconnected", "going_away"})


class Record(Struct, frozen=True, omit_defaults=True):
    """One record: what :meth:`AsyncClient.get` returns and what upserts accept (a dict
    with the same keys works too). ``vector`` may be a numpy array when sending;
    ``timestamp`` is Unix seconds (or, when sending, an ISO 8601 string)."""

    id: str | int | None = None
    vector: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float | str | None = None


class CollectionInfo(Struct, frozen=True, kw_only=True):
    """A collection's settings and statistics; ``stats`` holds the whole server reply."""

    name: str
    dimension: int
    metric: str
    count: int = 0
    schema: str | None = None
    recent: int = 0
    indexed: int = 0
    pending: int = 0
    historical: int = 0
    segments: int = 0
    version: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class SearchHit(Struct, frozen=True):
    """One search result: ``score`` is higher-is-better, ``distance`` the metric's distance."""

    id: str
    distance: float
    score: float
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class SearchResponse(Struct, frozen=True):
    """Hits best first (iterate it, or ``.hits``); ``partial`` when ``timeout_ms`` cut the
    search short; ``cached`` when the server answered from its query cache."""

    hits: list[SearchHit] = field(name="results")
    count: int = 0
    search_time_ms: float = 0.0
    partial: bool = False
    cached: bool = False

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


class ErrorDetail(Struct, frozen=True):
    code: str
    message: str
    field: str | None = None


class ItemError(Struct, frozen=True):
    """Why the record at ``index`` of a batch was rejected."""

    index: int
    id: str | None
    error: ErrorDetail


class BatchResult(Struct, frozen=True):
    """Per-batch totals; a rejected record does not sink the others."""

    successful: int
    failed: int
    errors: list[ItemError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


class LineError(Struct, frozen=True):
    """Why line ``line`` (1-based) of a streamed ingest was rejected."""

    line: int
    id: str | None
    error: ErrorDetail


class BulkResult(Struct, frozen=True):
    """Answer of a bulk upsert: rows stored, how many of them were already historical
    (they go to sealed segments, never the graph), and WAL records written."""

    records: int
    historical: int
    wal_records: int


class IngestResult(Struct, frozen=True):
    """Totals of a streamed NDJSON ingest; ``errors`` lists at most 1,000 lines
    (``errors_truncated`` says when more failed)."""

    lines: int
    successful: int
    failed: int
    batches: int = 0
    errors: list[LineError] = field(default_factory=list)
    errors_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0


class FindResult(Struct, frozen=True):
    """Records matching a filter, one page of them: ``count`` on this page, ``total`` in all."""

    records: list[Record]
    count: int = 0
    total: int = 0


class GetResult(Struct, frozen=True):
    """Records found by a WebSocket ``get`` and the ids that were not."""

    records: list[Record]
    missing: list[str]


class EventRecord(Struct, frozen=True):
    """The record of a vector event (deletes carry only ``id``)."""

    id: str
    metadata: dict[str, Any] | None = None
    timestamp: float | None = None
    vector: list[float] | None = None


class Event(Struct, frozen=True, kw_only=True):
    """A change: ``type`` is vector_added / vector_updated / vector_deleted (with
    ``collection`` and ``record``) or a job event (migration_*, checkpoint_completed,
    backup_completed, with ``data``). ``lsn`` is the WAL sequence number; the events of
    one batch share it. ``id`` is a job event's own position (``"<lsn>.<n>"``; pass it as
    ``since`` / ``last_event_id`` to resume right after it); ``event_id`` is the SSE id
    (sent on a batch's last event and on every job event)."""

    type: str
    lsn: int
    collection: str | None = None
    record: EventRecord | None = None
    data: dict[str, Any] | None = None
    id: str | None = None
    event_id: str | None = None


class Match(Struct, frozen=True):
    """A standing query's hit: the change that brought a record in, with its score."""

    score: float
    event: Event

    @property
    def record(self) -> EventRecord | None:
        return self.event.record


class Notice(Struct, frozen=True, kw_only=True):
    """A feed notice rather than a change: ``lagged`` (you fell behind; the server feeds
    you from its window), ``missed`` (events too old for the window were lost: ``data``
    says how many and where delivery resumed), ``ahead`` (asked for ids beyond the
    server's head), ``disconnected`` / ``going_away`` (the server ended the stream; the
    client reconnects and resumes when allowed)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    sub: str | None = None

    @property
    def resume_from(self) -> int | str | None:
        """Where delivery resumes: an LSN, or ``"<lsn>.<n>"`` right after a job event."""
        value = self.data.get("resume_from")
        return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def collection_info(data: dict[str, Any]) -> CollectionInfo:
    """A CollectionInfo from a collection's statistics as the server sends them."""
    return msgspec.convert({**data, "stats": data}, CollectionInfo)
