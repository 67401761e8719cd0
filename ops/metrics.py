"""Prometheus metrics: one private registry per database, nothing global.

Hot paths only touch pre-built histograms and counters (``observe_*``); everything
that is state (points, tombstones, WAL, checkpoints, storage, event feeds, memory) is
read from the live objects when Prometheus scrapes (:class:`StateCollector`), so it
costs nothing between scrapes. Names follow Prometheus conventions: ``s5vec_`` prefix,
base units (``_seconds``, ``_bytes``), ``_total`` on counters.

Jobs record their runs with :meth:`Metrics.job_finished`; the backup job reports its
catalogue with :meth:`Metrics.backup_state`. Checkpoints and migrations are recorded by
the :class:`~s5vec.engine.database.Database` itself (job names ``checkpoint`` and
``migration``), whoever triggered them. A job's name is the label ``task``, never ``job``:
Prometheus owns ``job`` (the scrape job) and renames a target's own to ``exported_job``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from .process_metrics import ProcessCollector

if TYPE_CHECKING:
    from .views import EngineState

NAMESPACE: Final = "s5vec"
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format, without content negotiation
JOB_OUTCOMES: Final = ("success", "failure", "skipped")
TIERS: Final = ("recent", "historical")
# HTTP requests and searches: 250 µs .. 10 s
LATENCY_BUCKETS: Final = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0)
# jobs (checkpoints, migrations, backups): 10 ms .. 1 h
JOB_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

FeedCounter = Callable[[], Mapping[str, int]]


def resident_memory_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; else peak RSS)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Metrics:
    """The daemon's metrics and their registry. Thread safe (prometheus-client locks)."""

    def __init__(self, process: bool = True) -> None:
        # no *_created series: they double the families and no dashboard or alert reads them
        # (a process-wide switch of prometheus-client, read when a metric or child is made)
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http_requests = Histogram(
            "s5vec_http_request_duration_seconds", "HTTP request latency by matched route, method and status "
            "(streaming responses - WebSocket, SSE - are not included)",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=reg)
        self.http_in_flight = Gauge("s5vec_http_requests_in_flight", "HTTP requests being handled", registry=reg)
        self.search = Histogram(
            "s5vec_search_duration_seconds", "Search latency of one tier of a collection "
            "(recent = HNSW, historical = IVF segments); a batched search counts once per query",
            ["tier"], buckets=LATENCY_BUCKETS, registry=reg)
        self.search_partial = Counter("s5vec_search_partial_total",
                                      "Searches that hit their time budget and returned partial results",
                                      registry=reg)
        # the job's name is the label `task`: Prometheus sets `job` on every target (its scrape job) and
        # would rename a `job` label of ours to `exported_job`
        self.job_runs = Counter("s5vec_job_runs_total", "Finished job runs by task (the job's name) and outcome",
                                ["task", "outcome"], registry=reg)
        self.job_duration = Histogram("s5vec_job_duration_seconds", "Duration of finished job runs by task",
                                      ["task"], buckets=JOB_BUCKETS, registry=reg)
        self.job_last_success = Gauge("s5vec_job_last_success_timestamp_seconds",
                                      "Unix time of the last successful run of each task", ["task"], registry=reg)
        self.backups = Gauge("s5vec_backups", "Backups currently kept", registry=reg)
        self.backup_last_success = Gauge("s5vec_backup_last_success_timestamp_seconds",
                                         "Unix time of the last successful backup (0 = none yet)", registry=reg)
        self.backup_last_bytes = Gauge("s5vec_backup_last_size_bytes", "Size of the last successful backup",
                                       registry=reg)
        for job in ("checkpoint", "migration"):
            for outcome in ("success", "failure"):
                self.job_runs.labels(job, outcome)  # export zeros, so rate() works from the first failure
        self._state: StateCollector | None = None
        if process:  # ours, not prometheus-client's: that one needs /proc/stat, hidden by ProcSubset=pid
            reg.register(ProcessCollector(NAMESPACE))

    # ----------------------------------------------------------------- hot path
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).observe(seconds)

    def observe_search(self, tiers: Mapping[str, float], queries: int = 1, partial: bool = False) -> None:
        """Record one search (or a batch of ``queries`` searched together) per tier it timed."""
        for tier, seconds in tiers.items():
            child = self.search.labels(tier)
            for _ in range(queries):
                child.observe(seconds)
        if partial:
            self.search_partial.inc(queries)

    # ----------------------------------------------------------------- jobs API
    def job_finished(self, job: str, outcome: str, seconds: float, when: float | None = None) -> None:
        """Record one finished run of ``job``; ``outcome`` is success, failure or skipped.
        Raises ValueError for another outcome."""
        if outcome not in JOB_OUTCOMES:
            raise ValueError(f"job outcome must be one of {', '.join(JOB_OUTCOMES)}, got {outcome!r}")
        self.job_runs.labels(job, outcome).inc()
        self.job_duration.labels(job).observe(max(0.0, seconds))
        if outcome == "success":
            self.job_last_success.labels(job).set(time.time() if when is None else when)

    def backup_state(self, count: int, last_success: float | None, last_bytes: int | None) -> None:
        """The backup catalogue after a backup run or a prune: how many are kept, the unix
        time and size of the newest successful one (None = none)."""
        self.backups.set(count)
        self.backup_last_success.set(last_success or 0.0)
        self.backup_last_bytes.set(last_bytes or 0)

    # ------------------------------------------------------------------- state
    def attach(self, db: EngineState, feeds: FeedCounter | None = None,
               alerts: Callable[[], Iterable[tuple[str, str]]] | None = None) -> None:
        """Export ``db``'s live state at scrape time. ``feeds`` returns open live-feed
        connections by transport; ``alerts`` the (name, severity) of active health alerts."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = StateCollector(db, feeds, alerts)
        self.registry.register(self._state)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition an ``Accept`` header asks for (OpenMetrics or, by default, the
        classic text format) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _gauges(rows: Iterable[tuple[str, str, float]]) -> Iterator[GaugeMetricFamily]:
    """One unlabelled gauge per ``(name, doc, value)`` row."""
    for name, doc, value in rows:
        family = _gauge(name, doc)
        family.add_metric([], value)
        yield family


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    # prometheus-client appends _total to counter samples; the family name goes without it
    return CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))


class StateCollector(Collector):
    """Reads the database (and the daemon's feeds) when scraped; never on the hot path."""

    def __init__(self, db: EngineState, feeds: FeedCounter | None = None,
                 alerts: Callable[[], Iterable[tuple[str, str]]] | None = None) -> None:
        self._db, self._feeds, self._alerts = db, feeds, alerts

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: its families depend on live state

    def collect(self) -> Iterator[Metric]:
        db = self._db
        yield from self._collections(db)
        yield from self._durability(db)
        yield from self._storage(db)
        yield from self._shipping(db)
        yield from self._following(db)
        yield from self._events(db)
        if self._feeds is not None:
            feeds = _gauge("s5vec_feed_connections", "Open live-feed connections by transport", ["transport"])
            for transport, count in sorted(self._feeds().items()):
                feeds.add_metric([transport], count)
            yield feeds
        if self._alerts is not None:
            alerts = _gauge("s5vec_health_alerts", "Active health alerts (1 each) by name and severity",
                            ["alert", "severity"])
            for name, severity in self._alerts():
                alerts.add_metric([name, severity], 1)
            yield alerts

    @staticmethod
    def _collections(db: EngineState) -> Iterator[Metric]:
        points = _gauge("s5vec_points", "Live points by collection and tier", ["collection", "tier"])
        tombstones = _gauge("s5vec_tombstones", "Deleted points still held by an index, by collection and tier",
                            ["collection", "tier"])
        pending = _gauge("s5vec_points_pending_index",
                         "Acknowledged points not yet in the HNSW graph (searched exactly meanwhile)",
                         ["collection"])
        segments = _gauge("s5vec_segments", "Sealed IVF segments by collection", ["collection"])
        for name, coll in sorted(db.collection_items()):
            sealed = list(coll.segments)
            points.add_metric([name, "recent"], len(coll.recent))
            points.add_metric([name, "historical"], sum(s.live for s in sealed))
            tombstones.add_metric([name, "recent"], coll.recent.tombstones)
            tombstones.add_metric([name, "historical"], sum(s.n - s.live for s in sealed))
            pending.add_metric([name], coll.pending)
            segments.add_metric([name], len(sealed))
        yield points
        yield tombstones
        yield pending
        yield segments
        count = _gauge("s5vec_collections", "Collections")
        count.add_metric([], len(db.collections))
        yield count

    @staticmethod
    def _durability(db: EngineState) -> Iterator[Metric]:
        now = time.time()
        ready = _gauge("s5vec_ready", "1 once the data is loaded and the database serves, else 0")
        ready.add_metric([], 1 if db.ready else 0)
        yield ready
        yield from _gauges((
                ("s5vec_wal_size_bytes", "Bytes in the write-ahead log (folded into the next checkpoint)",
                 db.wal_bytes),
                ("s5vec_applied_lsn", "Log sequence number of the last applied write", db.applied_lsn),
                ("s5vec_checkpoint_lsn", "Log sequence number the last checkpoint covers", db.checkpoint_lsn),
                ("s5vec_checkpoint_last_timestamp_seconds", "Unix time of the last checkpoint",
                 db.last_checkpoint),
                ("s5vec_checkpoint_age_seconds", "Seconds since the last checkpoint", max(0.0, now - db.last_checkpoint)),
        ))
        syncs = _counter("s5vec_wal_syncs_total", "fsync calls of the write-ahead log (group commit: fewer than writes)")
        syncs.add_metric([], db.wal_syncs)
        yield syncs
        last = db.last_migration
        running = _gauge("s5vec_migration_running", "1 while a migration (recent -> IVF segments) runs")
        running.add_metric([], 1 if db.migrating else 0)
        yield running
        yield from _gauges((name, doc, float(last.get(key, 0) or 0)) for name, doc, key in (
                ("s5vec_migration_last_timestamp_seconds", "Unix time the last migration finished", "finished"),
                ("s5vec_migration_last_duration_seconds", "Duration of the last migration", "seconds"),
                ("s5vec_migration_last_moved_points", "Points the last migration moved into segments", "moved"),
        ))

    @staticmethod
    def _storage(db: EngineState) -> Iterator[Metric]:
        health = db.storage
        info = _gauge("s5vec_storage_info", "Storage backend mode (value 1)", ["mode"])
        info.add_metric([health.mode], 1)
        yield info
        yield from _gauges((
                ("s5vec_storage_reachable", "1 while the storage backend answers", 1 if health.reachable else 0),
                ("s5vec_storage_degraded", "1 while the backend does not answer, checkpoints or WAL writes fail, "
                 "or a blob is known corrupt",
                 1 if health.degraded else 0),
                ("s5vec_storage_consecutive_failures", "Checkpoint failures in a row (0 = healthy)",
                 health.consecutive_failures),
        ))
        failures = _counter("s5vec_checkpoint_failures_total", "Checkpoints that failed on the storage backend")
        failures.add_metric([], health.failures_total)
        yield failures
        yield from _gauges((
                ("s5vec_wal_failed", "1 once the write-ahead log refuses writes (a failed fsync) until restart",
                 1 if health.wal_failed is not None else 0),
                ("s5vec_storage_corrupt_blobs", "Blobs known not to match their content address",
                 len(health.corrupt_blobs)),
        ))
        write_errors = _counter("s5vec_wal_write_errors_total", "WAL appends that failed (the writes were refused)")
        write_errors.add_metric([], health.write_errors_total)
        yield write_errors
        stats = getattr(db.store, "stats", None)
        stats = stats if isinstance(stats, Mapping) else {}
        for kind, doc in (("requests", "Requests to the storage backend by operation"),
                          ("errors", "Failed storage backend requests by operation (after retries)"),
                          ("retries", "Retried storage backend requests by operation")):
            requests = _counter(f"s5vec_storage_{kind}_total", doc, ["op"])
            for op, count in sorted(dict(stats.get(kind, {})).items()):
                requests.add_metric([op], count)
            yield requests

    @staticmethod
    def _shipping(db: EngineState) -> Iterator[Metric]:
        # exported (as 0) on nodes that do not ship too, so the dashboard's panels always have a series
        ship = db.shipping or dict.fromkeys(("shipped_lsn", "pending_records", "lag_seconds", "last_delay_seconds",
                                             "last_ship_seconds", "waiting_acks", "chunks_shipped", "bytes_shipped",
                                             "failures"), 0)
        yield from _gauges((
            ("s5vec_wal_shipped_lsn", "Last LSN whose WAL chunk is stored and named by the published head",
             ship["shipped_lsn"]),
            ("s5vec_wal_unshipped_records", "WAL records logged here and not shipped yet", ship["pending_records"]),
            ("s5vec_wal_ship_lag_seconds", "How long the oldest unshipped WAL record has waited (0: all shipped)",
             ship["lag_seconds"]),
            ("s5vec_wal_ship_delay_seconds", "Last shipping round: its oldest record's wait from fsync to publication",
             ship["last_delay_seconds"]),
            ("s5vec_wal_ship_upload_seconds", "Last shipping round: time to store its chunks and publish the head",
             ship["last_ship_seconds"]),
            ("s5vec_replication_acks_waiting", "Writes waiting for their chunk (durability = replicated)",
             ship["waiting_acks"]),
        ))
        for name, key, doc in (("s5vec_wal_shipped_chunks_total", "chunks_shipped", "WAL chunks stored"),
                               ("s5vec_wal_shipped_bytes_total", "bytes_shipped", "Bytes of WAL chunk blobs stored"),
                               ("s5vec_wal_ship_failures_total", "failures", "Shipping rounds that failed")):
            counter = _counter(name, doc)
            counter.add_metric([], ship[key])
            yield counter

    @staticmethod
    def _following(db: EngineState) -> Iterator[Metric]:
        role = _gauge("s5vec_replication_role", "This node's role (value 1)", ["role"])
        stats = db.follower_stats() if db.follower_stats is not None else None
        role.add_metric(["follower" if stats is not None else "writer"], 1)
        yield role
        if stats is None:  # a writer: the follower gauges and counters are 0
            stats = {**dict.fromkeys(("lag_seconds", "lag_lsn", "head_lsn", "records_applied", "chunks_fetched",
                                      "poll_failures"), 0), "stale": None}
        yield from _gauges((
            ("s5vec_replication_lag_seconds", "Follower: seconds since it last had everything the head names",
             stats["lag_seconds"]),
            ("s5vec_replication_lag_lsn", "Follower: LSNs in the newest head not applied here", stats["lag_lsn"]),
            ("s5vec_replication_head_lsn", "Follower: the newest head's LSN", stats["head_lsn"]),
            ("s5vec_replication_stale", "Follower: 1 once it cannot continue from the shipped WAL (restart it)",
             1 if stats["stale"] else 0),
        ))
        for name, key, doc in (("s5vec_replication_records_applied_total", "records_applied",
                                "Follower: shipped WAL records applied"),
                               ("s5vec_replication_chunks_fetched_total", "chunks_fetched",
                                "Follower: WAL chunks fetched besides the heads"),
                               ("s5vec_replication_poll_failures_total", "poll_failures",
                                "Follower: head polls that failed")):
            counter = _counter(name, doc)
            counter.add_metric([], stats[key])
            yield counter

    @staticmethod
    def _events(db: EngineState) -> Iterator[Metric]:
        bus = db.events
        subs = list(bus._subs)
        lag = max((bus.total - sub.cursor_total for sub in subs), default=0)
        yield from _gauges((
                ("s5vec_event_subscribers", "Live-feed subscriptions on the event bus", len(subs)),
                ("s5vec_event_lag_max_events", "Events the slowest subscriber is behind the newest", max(0, lag)),
                ("s5vec_event_window_events", "Events retained for resume", bus.retained),
                ("s5vec_event_window_bytes", "Bytes of events retained for resume", bus.stats()["retained_bytes"]),
        ))
        published = _counter("s5vec_events_published_total", "Events published on the bus since start")
        published.add_metric([], bus.total)
        yield published
