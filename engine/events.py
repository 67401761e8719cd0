"""The event bus: committed changes as events, a retained window to resume from, and
subscribers with bounded queues. Transport-free: the daemon feeds WebSocket and SSE from it.

Every event carries the WAL sequence number (LSN) of the record that caused it; the events
of one WAL record (an upsert batch) share its LSN and are published together. Job events
(migration, checkpoint, backup) have no WAL record of their own: they carry the highest
LSN published so far, so ids never go backwards.

Positions in the feed (event ids) are derived from the LSN stream alone, so another node
replaying the same WAL gives the same ids: ``"<lsn>"`` is the position right after the data
change at that LSN, ``"<lsn>.<n>"`` the position right after the n-th job event emitted
after it (n counts from 1 and restarts with every new LSN). Positions order as the pair
``(lsn, n)``; resuming with an id delivers exactly what came after it, so a job event
emitted at LSN N reaches a client resuming with ``"N"``, and resuming with its own id
``"N.1"`` does not repeat it. Job events are not in the WAL: after a restart the window
holds none from before it, and their numbering at the checkpoint's LSN starts again at 1.

Backpressure: a subscriber queues at most ``queue_events`` events. When it is that far
behind, live delivery stops, a ``lagged`` notice tells where it stood, and once its queue
has drained it is fed from the retained window (catch-up) until it is live again. Events
that left the window before it got them are reported by a ``missed`` notice (how many
sequence numbers, where delivery resumes) — never skipped silently. A subscriber more than
``max_lag_events`` events behind the head is killed (its transport disconnects it).

Thread safety: everything runs on the event loop thread, except that :class:`Database`
publishes replayed WAL records from its writer thread while opening, before anyone can
subscribe.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from s5vec.index.metrics import raw_distances, score_of

VECTOR_EVENTS: Final = ("vector_added", "vector_updated", "vector_deleted")
JOB_EVENTS: Final = ("migration_started", "migration_completed", "checkpoint_completed", "backup_completed")
EVENT_TYPES: Final = VECTOR_EVENTS + JOB_EVENTS
_RECORD_OVERHEAD: Final = 96  # bytes a retained record costs beyond its vector (ids, list slots)
_JSON: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(dict[str, Any]).decode
_ENCODED_CHANGES: Final = 1024  # the most recent changes keep their encodings
_MAX_ID: Final = 2**63 - 1
EventKey = tuple[int, int]  # (lsn, n): a position in the feed, see the module doc


def event_id(key: EventKey) -> str:
    """The text of a feed position: ``"<lsn>"`` or ``"<lsn>.<n>"`` after a job event."""
    return str(key[0]) if key[1] == 0 else f"{key[0]}.{key[1]}"


def resume_value(key: EventKey) -> int | str:
    """A position as notices report it: the LSN (an integer) when it is a data change's,
    else the ``"<lsn>.<n>"`` text."""
    return key[0] if key[1] == 0 else event_id(key)


def parse_event_id(value: str | int) -> EventKey:
    """A feed position from an event id: ``N`` (a plain LSN, as older ids) or ``"N.n"``.

    Raises:
        ValueError: not such an id (the message says what one looks like).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= _MAX_ID:
            return value, 0
    elif isinstance(value, str):
        lsn, dot, n = value.partition(".")
        if lsn.isascii() and lsn.isdigit() and (not dot or (n.isascii() and n.isdigit())):
            key = int(lsn), int(n) if dot else 0
            if key[0] <= _MAX_ID and key[1] <= _MAX_ID:
                return key
    raise ValueError("an event id is a non-negative integer (an LSN) or \"<lsn>.<n>\" (a job event's id)")


class Change:
    """The events of one WAL record (or one job notice), published together."""

    __slots__ = ("_cache", "collection", "count", "data", "end", "existed", "ids", "kind", "lsn", "metadata",
                 "n", "nbytes", "seq", "timestamps", "vectors")

    def __init__(self, lsn: int, collection: str | None, kind: str, ids: Sequence[str] = (),
                 existed: Sequence[bool] | None = None, vectors: np.ndarray | None = None,
                 metadata: Sequence[bytes] | None = None, timestamps: np.ndarray | None = None,
                 data: dict[str, Any] | None = None) -> None:
        self.lsn, self.collection, self.kind = lsn, collection, kind
        self.ids, self.existed, self.vectors = ids, existed, vectors
        self.metadata, self.timestamps, self.data = metadata, timestamps, data
        self.count = len(ids) if collection is not None else 1  # events in this change
        self.nbytes = ((vectors.nbytes if vectors is not None else 0) + _RECORD_OVERHEAD * self.count
                       + (sum(map(len, metadata)) if metadata is not None else 0))
        self.n = 0  # a job event's number after its LSN (its id is "<lsn>.<n>"), assigned by publish_job
        self.seq = 0  # position in the bus, assigned by publish
        self.end = 0  # events published up to and including this change
        self._cache: dict[Any, Any] | None = None  # encodings, shared by every subscriber

    @property
    def key(self) -> EventKey:
        """The feed position right after this change."""
        return self.lsn, self.n

    @property
    def event_id(self) -> str:
        """The id of this change's (last) event: ``"<lsn>"``, or ``"<lsn>.<n>"`` for a job event."""
        return event_id((self.lsn, self.n))

    def document(self, index: int) -> dict[str, Any]:
        """The metadata of one record as a dict (decoded on demand: filters need it)."""
        if self.metadata is None:
            return {}
        doc: dict[str, Any] = _DECODE(self.metadata[index])
        return doc

    def event_type(self, index: int) -> str:
        if self.kind == "upsert":
            return "vector_updated" if self.existed is not None and self.existed[index] else "vector_added"
        if self.kind == "meta":
            return "vector_updated"
        if self.kind == "delete":
            return "vector_deleted"
        return self.kind

    def _encodings(self) -> dict[Any, Any]:
        if self._cache is None:
            self._cache = {}
        return self._cache

    def encoded(self, index: int, include_vector: bool = False) -> bytes:
        """The event's JSON object (cached): ``{"type", "lsn", "collection", "record"}``
        for vector events, ``{"type", "id", "lsn", "data"}`` for job events."""
        include_vector = include_vector and self.vectors is not None
        cache = self._encodings()
        events = cache.get(include_vector)
        if events is None:
            events = cache[include_vector] = [None] * self.count
        out: bytes | None = events[index]
        if out is None:
            out = events[index] = _JSON.encode(self._event(index, include_vector))
        return out

    def joined(self, include_vector: bool = False) -> bytes:
        """Every event of the change as JSON objects joined by commas (cached)."""
        cache = self._encodings()
        key = ("joined", include_vector)
        if key not in cache:
            cache[key] = b",".join([self.encoded(i, include_vector) for i in range(self.count)])
        return cache[key]  # type: ignore[no-any-return]

    def sse(self, include_vector: bool = False) -> bytes:
        """Every event of the change as server-sent events, ``id:`` on the last (cached)."""
        cache = self._encodings()
        key = ("sse", include_vector)
        if key not in cache:
            parts = []
            for i in range(self.count):
                parts.append(b"event: " + self.event_type(i).encode() + b"\n")
                if i == self.count - 1:
                    parts.append(b"id: " + self.event_id.encode() + b"\n")
                parts.append(b"data: " + self.encoded(i, include_vector) + b"\n\n")
            cache[key] = b"".join(parts)
        return cache[key]  # type: ignore[no-any-return]

    def forget_encodings(self) -> None:
        self._cache = None

    def _event(self, index: int, include_vector: bool) -> dict[str, Any]:
        kind = self.event_type(index)
        if self.collection is None:
            return {"type": kind, "id": self.event_id, "lsn": self.lsn, "data": self.data or {}}
        record: dict[str, Any] = {"id": self.ids[index]}
        if self.kind != "delete":
            record["metadata"] = msgspec.Raw(self.metadata[index]) if self.metadata is not None else {}
            if self.timestamps is not None:
                record["timestamp"] = float(self.timestamps[index])
            if include_vector and self.vectors is not None:
                record["vector"] = self.vectors[index].tolist()
        return {"type": kind, "lsn": self.lsn, "collection": self.collection, "record": record}


class Bundle:
    """The changes of one publish that a plain subscriber wants whole: queued as one item,
    encoded once for every such subscriber."""

    __slots__ = ("_cache", "changes", "count")

    def __init__(self, changes: Sequence[Change]) -> None:
        self.changes = changes
        self.count = sum(c.count for c in changes)
        self._cache: dict[Any, bytes] = {}

    def joined(self, include_vector: bool = False) -> bytes:
        key = ("joined", include_vector)
        if key not in self._cache:
            self._cache[key] = b",".join([c.joined(include_vector) for c in self.changes])
        return self._cache[key]

    def sse(self, include_vector: bool = False) -> bytes:
        key = ("sse", include_vector)
        if key not in self._cache:
            self._cache[key] = b"".join([c.sse(include_vector) for c in self.changes])
        return self._cache[key]


def upserted(lsn: int, collection: str, ids: Sequence[str], vectors: np.ndarray,
             metadata: Sequence[dict[str, Any] | None], timestamps: np.ndarray, existed: Sequence[bool]) -> Change:
    """Records written by one upsert; ``existed`` says which ids were present before.
    Metadata is kept as JSON (compact while retained; events need it encoded anyway)."""
    encode = _JSON.encode
    return Change(lsn, collection, "upsert", ids, existed, vectors,
                  [encode(m) if m is not None else b"{}" for m in metadata], timestamps)


def metadata_replaced(lsn: int, collection: str, record_id: str, vector: np.ndarray | None,
                      metadata: dict[str, Any], timestamp: float) -> Change:
    vectors = vector[None, :] if vector is not None else None
    return Change(lsn, collection, "meta", [record_id], None, vectors, [_JSON.encode(metadata)],
                  np.array([timestamp]))


def deleted(lsn: int, collection: str, ids: Sequence[str]) -> Change:
    return Change(lsn, collection, "delete", list(ids))


def scores(metric: str, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Search scores of ``vectors`` against one query, exactly as ``index/`` reports them
    (the one formula: :mod:`s5vec.index.metrics`)."""
    return score_of(metric, raw_distances(metric, vectors, query))


@dataclass(frozen=True, slots=True)
class StandingQuery:
    """A query evaluated against every new or updated record of one collection.

    With ``k``, records are pushed when they score at least as well as the k-th best
    record seen so far (seeded by a search at subscribe time); the bar only rises. With
    ``threshold``, when they score at least that; with both, when both hold."""

    vector: np.ndarray
    metric: str
    k: int | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A message about the feed itself: ``lagged``, ``missed`` or ``ahead``."""

    kind: str
    data: dict[str, Any]


Delivery = tuple[Change | Bundle, int, float | None]  # change, event index (ALL: every event), score
ALL: Final = -1
Item = Delivery | Notice


def expand(items: Iterable[Item]) -> list[Item]:
    """Items with every event of a change (index ``ALL``) spelled out one by one."""
    out: list[Item] = []
    for item in items:
        if not isinstance(item, Notice) and item[1] == ALL:
            changes = item[0].changes if isinstance(item[0], Bundle) else [item[0]]
            out.extend((change, index, None) for change in changes for index in range(change.count))
        else:
            out.append(item)
    return out


class Debounced:
    """``wake`` called at most once per ``delay`` seconds, ``delay`` after the first call.

    Every wake-up of a subscriber costs a task switch and one frame write per connection;
    at a thousand single-record writes a second to a hundred subscribers, waking each
    subscriber on every commit would spend the event loop on frame overhead. Gathering a
    few milliseconds of events into one frame per subscriber bounds that cost by the
    number of subscribers, not by the write rate, at the price of ``delay`` of latency."""

    __slots__ = ("_delay", "_handle", "_wake")

    def __init__(self, wake: Callable[[], None], delay: float) -> None:
        self._wake, self._delay = wake, delay
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._wake()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def pending(self) -> asyncio.TimerHandle | None:
        """The wake-up scheduled now, if any (lets a test see a wake-up is due, or cancelled)."""
        return self._handle


class Subscription:
    """One consumer's view of the bus: what it wants, its queue and its position.

    ``wake`` is called (on the loop) whenever the queue gains something; ``kill`` once,
    when the subscriber fell more than ``max_lag_events`` behind."""

    def __init__(self, bus: EventBus, collections: frozenset[str] | None, types: frozenset[str] | None,
                 predicate: Callable[[dict[str, Any]], bool] | None, standing: StandingQuery | None,
                 wake: Callable[[], None], kill: Callable[[Subscription], None]) -> None:
        self.bus = bus
        self.collections, self.types, self.predicate, self.standing = collections, types, predicate, standing
        self.wake, self._kill = wake, kill
        self.queue: deque[Item] = deque()
        self.queued = 0  # events (not notices) in the queue
        self.cursor = bus.seq  # seq of the last change considered
        self.cursor_total = bus.total  # events published up to the cursor
        self.position = bus.head_key  # feed position of the last change considered: where a resume starts
        self.live = True
        self.closed = False
        self.lags = 0
        self._best: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    # --------------------------------------------------------------- consumer side
    def drain(self, limit: int) -> list[Item]:
        """Take up to ``limit`` queued items; refills from the window while catching up."""
        if not self.queue and not self.live and not self.closed:
            self._fill()
        out: list[Item] = []
        queue = self.queue
        taken = 0
        while queue and taken < limit:
            item = queue.popleft()
            if not isinstance(item, Notice):
                count = item[0].count if item[1] == ALL else 1
                self.queued -= count
                taken += count
            out.append(item)
        return out

    @property
    def pending(self) -> bool:
        """Whether :meth:`drain` would return something now."""
        return bool(self.queue) or (not self.live and not self.closed)

    def seed(self, hits: Iterable[tuple[str, float]]) -> None:
        """Start a ``k`` standing query from the results of a search."""
        for record_id, score in hits:
            self._admit(record_id, score)

    # --------------------------------------------------------------- producer side
    def _offer(self, changes: Sequence[Change], bundle: Bundle | None) -> None:
        before = len(self.queue)
        limit = self.bus.queue_events
        if bundle is not None and self.queued < limit and changes[0].seq > self.cursor:
            last = changes[-1]
            self.cursor, self.cursor_total, self.position = last.seq, last.end, last.key
            self.queue.append((bundle, ALL, None))
            self.queued += bundle.count
            self.wake()
            return
        for change in changes:
            if change.seq <= self.cursor:
                continue
            if self.queued >= limit:
                self.live = False
                self.lags += 1
                self.queue.append(Notice("lagged", {"resume_from": resume_value(self.position), "queued": self.queued}))
                break
            self._consider(change)
        if len(self.queue) != before:
            self.wake()

    def _consider(self, change: Change) -> None:
        self.cursor, self.cursor_total, self.position = change.seq, change.end, change.key
        types = self.types
        if change.collection is None:  # a job event: collections and filters concern records
            if types is None or change.kind in types:
                self.queue.append((change, 0, None))
                self.queued += 1
            return
        if self.collections is not None and change.collection not in self.collections:
            return
        if self.standing is not None:
            self._consider_standing(change)
            return
        predicate = self.predicate
        if predicate is None and (types is None or types.issuperset(VECTOR_EVENTS)):
            self.queue.append((change, ALL, None))  # the common case: O(1) per subscriber
            self.queued += change.count
            return
        for index in range(len(change.ids)):
            if types is not None and change.event_type(index) not in types:
                continue
            if predicate is not None and change.kind != "delete" and not predicate(change.document(index)):
                continue
            self.queue.append((change, index, None))
            self.queued += 1

    def _consider_standing(self, change: Change) -> None:
        standing = self.standing
        assert standing is not None
        if change.kind == "delete" or change.vectors is None:
            return
        values = scores(standing.metric, change.vectors, standing.vector).tolist()
        predicate = self.predicate
        for index, score in enumerate(values):
            if score < self._bar():
                continue
            if predicate is not None and not predicate(change.document(index)):
                continue
            record_id = change.ids[index]
            known = self._best.get(record_id)
            if known is not None and abs(known - score) < 1e-6:
                continue  # already known (a write seen by the seeding search)
            self._admit(record_id, score)
            self.queue.append((change, index, score))
            self.queued += 1

    def _bar(self) -> float:
        standing = self.standing
        assert standing is not None
        bar = standing.threshold if standing.threshold is not None else -math.inf
        if standing.k is not None and len(self._best) >= standing.k:
            heap, best = self._heap, self._best
            while heap and best.get(heap[0][1]) != heap[0][0]:
                heapq.heappop(heap)  # stale: the id was re-scored
            if heap:
                bar = max(bar, heap[0][0])
        return bar

    def _admit(self, record_id: str, score: float) -> None:
        k = self.standing.k if self.standing is not None else None
        if k is None:
            return
        best, heap = self._best, self._heap
        best[record_id] = score
        heapq.heappush(heap, (score, record_id))
        while len(best) > k:
            low, low_id = heapq.heappop(heap)
            if best.get(low_id) == low:
                del best[low_id]

    def _fill(self) -> None:
        """Catch-up: queue window changes after the cursor, up to the queue bound."""
        bus = self.bus
        first = bus.first_seq
        if self.cursor + 1 < first:  # the changes it needed left the window
            self.queue.append(Notice("missed", {"missed": max(1, bus.floor - self.position[0]),
                                                "resume_from": resume_value(bus.floor_key)}))
            self.cursor, self.position = first - 1, bus.floor_key
            self.cursor_total = bus.events_through(first - 1)
        limit = bus.queue_events
        while self.cursor < bus.seq:
            if self.queued >= limit:
                return
            change = bus.change_at(self.cursor + 1)
            assert change is not None
            self._consider(change)
        self.live = True

    def _die(self) -> None:
        if not self.closed:
            self.closed = True
            self.bus.unsubscribe(self)
            self._kill(self)


class EventBus:
    """Publishes changes to subscribers and keeps a window of recent ones (see module doc)."""

    def __init__(self, window_events: int = 100_000, window_bytes: int = 64 << 20, queue_events: int = 1_000,
                 max_lag_events: int = 100_000, flush_s: float = 0.0) -> None:
        self.window_events, self.window_bytes = window_events, window_bytes
        self.flush_s = flush_s  # > 0: a subscriber is woken at most once per this many seconds
        self.queue_events, self.max_lag_events = queue_events, max_lag_events
        self._window: list[Change] = []
        self._start = 0  # index of the oldest retained change in _window
        self._keys: list[EventKey] = []  # parallel to _window (each change's position), for bisect
        self._events = 0
        self._bytes = 0
        self.seq = 0  # seq of the last change published
        self.total = 0  # events ever published
        self.head = 0  # highest LSN published
        self.floor = 0  # changes with an LSN at or below this are not retained
        self.floor_key: EventKey = (0, 0)  # ... and those at or before this position
        self._jobs: EventKey = (0, 0)  # (LSN, job events published after it)
        self._subs: list[Subscription] = []

    # ------------------------------------------------------------------ window
    def start_at(self, lsn: int) -> None:
        """Before replay at open: everything up to ``lsn`` (the checkpoint) is not retained."""
        self.head = max(self.head, lsn)
        self.floor = max(self.floor, lsn)
        self.floor_key = max(self.floor_key, (lsn, 0))

    @property
    def head_key(self) -> EventKey:
        """The feed position of the newest change: the head LSN and its job events."""
        return self.head, self._jobs[1] if self._jobs[0] == self.head else 0

    @property
    def first_seq(self) -> int:
        """Seq of the oldest retained change (``seq + 1`` when the window is empty)."""
        return self._window[self._start].seq if self._start < len(self._window) else self.seq + 1

    @property
    def retained(self) -> int:
        """Events in the window."""
        return self._events

    def events_through(self, seq: int) -> int:
        """Events published up to and including change ``seq`` (as far as the window knows)."""
        if self._start >= len(self._window) or seq >= self.seq:
            return self.total
        oldest = self._window[self._start]
        if seq < oldest.seq:
            return oldest.end - oldest.count
        return self._window[self._start + seq - oldest.seq].end

    def change_at(self, seq: int) -> Change | None:
        """The retained change with this seq, if any."""
        first = self.first_seq
        if first <= seq <= self.seq:
            return self._window[self._start + seq - first]
        return None

    def _trim(self) -> None:
        window = self._window
        while len(window) - self._start > 1 and (self._events > self.window_events
                                                 or self._bytes > self.window_bytes):
            change = window[self._start]
            window[self._start] = None  # type: ignore[call-overload]
            self._start += 1
            self._events -= change.count
            self._bytes -= change.nbytes
            self.floor = max(self.floor, change.lsn)
            self.floor_key = max(self.floor_key, change.key)
        if self._start > 1024 and self._start * 2 > len(window):
            del window[: self._start]
            del self._keys[: self._start]
            self._start = 0

    # ----------------------------------------------------------------- publish
    def publish(self, changes: Sequence[Change], head: int = 0) -> None:
        """Retain ``changes`` and offer them to every live subscriber (loop thread).
        ``head``: the LSN the database has applied (records without events count too)."""
        self.head = max(self.head, head)
        for change in changes:
            self.seq += 1
            self.total += change.count
            change.seq, change.end = self.seq, self.total
            self.head = max(self.head, change.lsn)
            self._window.append(change)
            self._keys.append(change.key)
            if len(self._window) - self._start > _ENCODED_CHANGES:  # catch-up re-encodes older ones
                self._window[-_ENCODED_CHANGES - 1].forget_encodings()
            self._events += change.count
            self._bytes += change.nbytes
        self._trim()
        if not self._subs or not changes:
            return
        bundle: Bundle | None = None
        for sub in list(self._subs):
            if sub.live:
                whole = None
                if sub.predicate is None and sub.standing is None and sub.types is None and (
                        sub.collections is None
                        or all(c.collection is None or c.collection in sub.collections for c in changes)):
                    whole = bundle = bundle or Bundle(changes)
                sub._offer(changes, whole)
            elif self.total - sub.cursor_total > self.max_lag_events:
                sub._die()

    def publish_job(self, kind: str, data: dict[str, Any]) -> None:
        """A job event (``migration_*``, ``checkpoint_completed``, ``backup_completed``) at the
        head LSN, with its own position ``"<head>.<n>"`` (see the module doc)."""
        if kind not in JOB_EVENTS:
            raise ValueError(f"unknown job event {kind!r}")
        change = Change(self.head, None, kind, data=data)
        self._jobs = (self.head, self.head_key[1] + 1)
        change.n = self._jobs[1]
        self.publish([change])

    # --------------------------------------------------------------- subscribe
    def subscribe(self, *, wake: Callable[[], None], kill: Callable[[Subscription], None],
                  collections: Iterable[str] | None = None, types: Iterable[str] | None = None,
                  predicate: Callable[[dict[str, Any]], bool] | None = None,
                  standing: StandingQuery | None = None, since: EventKey | int | None = None) -> Subscription:
        """A new subscriber, live from now or, with ``since`` (a position, or a plain LSN),
        from the first change after it (a ``missed`` notice first when those left the window)."""
        if self.flush_s > 0:
            wake = Debounced(wake, self.flush_s)
        sub = Subscription(self, frozenset(collections) if collections is not None else None,
                           frozenset(types) if types is not None else None, predicate, standing, wake, kill)
        if since is not None:
            self._rewind(sub, (since, 0) if isinstance(since, int) else since)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        if isinstance(sub.wake, Debounced):
            sub.wake.cancel()
        try:
            self._subs.remove(sub)
        except ValueError:
            pass

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _rewind(self, sub: Subscription, since: EventKey) -> None:
        if since > self.head_key:
            sub.queue.append(Notice("ahead", {"requested": resume_value(since),
                                              "resume_from": resume_value(self.head_key)}))
            return
        if since < self.floor_key:
            sub.queue.append(Notice("missed", {"missed": max(1, self.floor - since[0]),
                                               "resume_from": resume_value(self.floor_key),
                                               "requested": resume_value(since)}))
            since = self.floor_key
        index = bisect.bisect_right(self._keys, since, lo=self._start)
        if index < len(self._window):
            seq = self._window[index].seq - 1
            sub.cursor, sub.position, sub.live = seq, since, False
            sub.cursor_total = self.events_through(seq)
        else:
            sub.position = since

    def stats(self) -> dict[str, Any]:
        return {"subscribers": len(self._subs), "retained_events": self._events, "retained_bytes": self._bytes,
                "head": self.head, "floor": self.floor, "published_events": self.total}
