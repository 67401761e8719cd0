"""Scheduled jobs inside the daemon: checkpoint, migrate, rebalance, compact, scrub, backup.

One :class:`Jobs` owns an APScheduler ``AsyncIOScheduler``; the daemon starts it after the
database opens (the database runs no schedule of its own) and stops it before the database
closes. Every job runs at most once at a time (``max_instances=1``, ``coalesce=True`` and a
lock per job: a manual trigger of a running job is refused with :class:`JobBusy`, except a
checkpoint, which waits and runs again). A failed run is logged, counted and retried by a
one-off job after an exponential backoff. CPU and disk work runs on the database's thread
pools, never on the event loop.

Quiet hours ("HH:MM-HH:MM", local time) hold back the scheduled runs of the heavy jobs
(migrate, rebalance, compact, scrub); a run in progress stops at its next safe point when
they begin. Checkpoints and backups ignore them, and so does a run triggered by hand.
The clock (``now``) is injectable so that tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from s5vec.storage import BlobCorrupt, BlobNotFound, StorageError

from s5vec.engine.health import error_summary

from .backup import BackupConfig, create_backup
from .metrics import Metrics

if TYPE_CHECKING:
    from s5vec.index import Collection

    from .views import Maintainable

log = logging.getLogger(__name__)
JOB_NAMES: Final = ("checkpoint", "migrate", "rebalance", "compact", "scrub", "backup")
CHECKPOINT_TICK_S: Final = 1.0
RETRAIN_MIN_GAIN: Final = 1.25
"""A segment is retrained only if its live rows are this much more skewed than when it was
built: data that was skewed from the start stays skewed after a retrain, so rebuilding it
again and again would buy nothing."""
_EXECUTOR: Final = "s5vec"
_QUIET: Final = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class JobError(Exception):
    """Root of the job runner's own errors."""


class JobBusy(JobError):
    """The job is running already; this trigger was refused."""


class UnknownJob(JobError):
    """No job has this name."""


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """The ``[jobs]`` section. An interval of 0 turns a job's schedule off (it can still be
    triggered). Checkpoint and migration intervals stay in ``[engine]``
    (``checkpoint_interval_s``, ``checkpoint_wal_bytes``, ``migrate_interval_s``, and
    ``migrate_max_records`` as the most one migration run moves); the backup schedule and
    retention are in ``[backup]``."""

    quiet_hours: str = ""                   # "HH:MM-HH:MM" local time, e.g. "08:00-20:00"; "" = none
    migrate_batch_records: int = 100_000    # records per migration step (plan, train, commit)
    rebalance_interval_s: float = 3600.0
    rebalance_skew: float = 3.0             # retrain a segment whose largest list holds this many times the mean
    compact_interval_s: float = 600.0
    tombstone_ratio: float = 0.5            # rebuild a recent tier's graph when this share of its labels is deleted
    segment_tombstone_ratio: float = 0.3    # rewrite a segment without its deleted rows past this share
    gc_grace_s: float = 3600.0              # an unreferenced blob is deleted only after this long
    scrub_interval_s: float = 3600.0
    scrub_sample: int = 64                  # blobs re-hashed per scrub run
    retry_first_s: float = 30.0             # a failed run is retried after this, doubling ...
    retry_max_s: float = 1800.0             # ... up to this
    retry_attempts: int = 5                 # consecutive retries before waiting for the next regular run


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily span of local time, ``start`` inclusive, ``end`` exclusive (minutes after
    midnight); it may wrap midnight (``22:00-06:00``)."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``"HH:MM-HH:MM"`` → QuietHours; ``""`` → None. Raises ValueError."""
        if not text.strip():
            return None
        match = _QUIET.match(text)
        if match is None:
            raise ValueError(f"expected HH:MM-HH:MM (local time), got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        for hour, minute in ((h1, m1), (h2, m2)):
            if minute > 59 or hour > 24 or (hour == 24 and minute):
                raise ValueError(f"{hour:02d}:{minute:02d} is not a time of day")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end or start == 1440:
            raise ValueError(f"{text!r} is an empty span")
        return cls(start, end)

    def active(self, when: float) -> bool:
        """Whether the Unix time ``when`` falls inside the span (local time)."""
        t = time.localtime(when)
        minute = t.tm_hour * 60 + t.tm_min
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


@dataclass(frozen=True, slots=True)
class JobRun:
    """What a job function is told: whether a person asked for it, their arguments, and
    ``stop()``, which turns True when quiet hours begin during a scheduled run."""

    manual: bool
    args: dict[str, Any]
    stop: Callable[[], bool]


JobFn = Callable[[JobRun], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: its function and how it is scheduled."""

    name: str
    fn: JobFn
    interval_s: float                   # 0 = only when triggered
    schedule: str = ""                  # for people: what triggers it
    quiet: bool = False                 # held back during quiet hours
    retry: bool = True                  # a failure schedules a retry with backoff
    wait_when_busy: bool = False        # a trigger while running waits (and runs again) instead of JobBusy
    due: Callable[[], Awaitable[bool]] | None = None  # asked at each scheduled tick; False = nothing to do
    metric: str | None = None           # name the database records runs under itself (no double counting)


@dataclass(slots=True)
class JobState:
    """Counters and the last outcome of one job."""

    runs: int = 0                       # finished runs, successful or not
    failures: int = 0
    consecutive_failures: int = 0
    skipped: int = 0                    # scheduled runs held back (quiet hours) or coalesced (already running)
    running: bool = False
    last_started: float | None = None
    last_finished: float | None = None
    last_seconds: float | None = None
    last_outcome: str | None = None     # success | failure | skipped
    last_skip: str | None = None        # quiet_hours | busy
    last_error: str | None = None
    last_result: dict[str, Any] | None = None
    next_retry: float | None = None
    manual: bool = False                # whether the last run was triggered by hand


class Jobs:
    """The scheduled jobs of one database (see the module docstring). Create, then
    :meth:`start`; :meth:`stop` before the database closes."""

    def __init__(self, db: Maintainable, config: JobsConfig | None = None, backup: BackupConfig | None = None,
                 now: Callable[[], float] = time.time, rng: random.Random | None = None,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        # job runs and backup state; the engine reports its own jobs to the same object
        self.metrics = metrics if metrics is not None else (db.metrics if isinstance(db.metrics, Metrics) else Metrics())
        self.config = config or JobsConfig()
        self.backup_config = backup or BackupConfig()
        self.quiet = QuietHours.parse(self.config.quiet_hours)
        self._now = now
        self._rng = rng or random.Random()
        self._specs: dict[str, JobSpec] = {}
        self.states: dict[str, JobState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._stopping = False
        self.corrupt: dict[str, float] = {}  # blob id -> when a scrub first found it corrupt (never deleted)
        for spec in self._builtin():
            self.add(spec)

    # -------------------------------------------------------------- lifecycle
    def add(self, spec: JobSpec) -> None:
        """Register a job (replacing one of the same name); scheduled if running."""
        self._specs[spec.name] = spec
        self.states.setdefault(spec.name, JobState())
        self._locks.setdefault(spec.name, asyncio.Lock())
        if self._scheduler is not None:
            self._schedule(spec)

    async def start(self) -> None:
        """Start the scheduler on the running loop and apply the GC grace period."""
        self.db.keep_unreferenced_for(self.config.gc_grace_s)
        # APScheduler logs every run at INFO, and the checkpoint tick runs every second:
        # its executor logger stays at WARNING; runs are logged here, once, with outcome.
        logging.getLogger(f"apscheduler.executors.{_EXECUTOR}").setLevel(logging.WARNING)
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=dt.UTC,
                                           executors={_EXECUTOR: AsyncIOExecutor()})
        for spec in self._specs.values():
            self._schedule(spec)
        self._scheduler.start()
        try:
            await self._report_backups()
        except StorageError as exc:
            log.warning("cannot read the backup catalog: %s", exc)

    async def stop(self) -> None:
        """Stop scheduling and interrupt running jobs (a job interrupted midway leaves the
        data as its last completed step did); waits until they are gone."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, spec: JobSpec) -> None:
        assert self._scheduler is not None
        if spec.interval_s > 0:
            self._scheduler.add_job(self.run_scheduled, "interval", seconds=spec.interval_s, args=[spec.name],
                                    id=spec.name, name=spec.name, replace_existing=True, executor=_EXECUTOR,
                                    max_instances=1, coalesce=True, misfire_grace_time=None)

    # ------------------------------------------------------------------- reads
    def quiet_now(self) -> bool:
        return self.quiet is not None and self.quiet.active(self._now())

    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> JobSpec:
        """The registered job ``name`` (replace it with ``add(dataclasses.replace(...))``). Raises UnknownJob."""
        return self._spec(name)

    def status(self, name: str) -> dict[str, Any]:
        """One job's schedule, next and last run, outcome and counters. Raises UnknownJob."""
        spec = self._spec(name)
        state = self.states[name]
        out = dataclasses.asdict(state)
        out.update({"name": name, "schedule": spec.schedule, "interval_s": spec.interval_s,
                    "honours_quiet_hours": spec.quiet, "next_run": self._next_run(name)})
        return out

    def overview(self) -> list[dict[str, Any]]:
        return [self.status(name) for name in self._specs]

    def statistics(self) -> dict[str, Any]:
        """What ``/api/v1/admin/statistics`` shows about jobs."""
        return {"quiet_hours": str(self.quiet) if self.quiet else None, "quiet_now": self.quiet_now(),
                "jobs": {name: {k: v for k, v in self.status(name).items() if k != "last_result"}
                         for name in self._specs},
                "corrupt_blobs": sorted(self.corrupt), "gc": dict(self.db.last_gc)}

    def _next_run(self, name: str) -> float | None:
        job = self._scheduler.get_job(name) if self._scheduler is not None else None
        when = getattr(job, "next_run_time", None)
        return when.timestamp() if when is not None else None

    def _spec(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownJob(f"no job {name!r} (jobs: {', '.join(self._specs)})") from None

    # --------------------------------------------------------------- running
    async def run(self, name: str, *, wait: bool = True, **args: Any) -> dict[str, Any]:
        """Run a job now, as a person asked (quiet hours do not apply): its result, or with
        ``wait=False`` its status once started in the background. Raises UnknownJob,
        JobBusy when it is running already, or the job's own error (recorded and retried)."""
        spec = self._spec(name)
        lock = self._locks[name]
        if lock.locked() and not spec.wait_when_busy:
            raise JobBusy(f"job {name!r} is running already")
        await lock.acquire()
        self.states[name].running = True
        # An owned task: a client that disconnects does not cancel the job; stop() does.
        task = asyncio.create_task(self._manual(spec, args), name=f"s5vec-job-{name}")
        self._tasks.add(task)
        task.add_done_callback(_finished)
        task.add_done_callback(self._tasks.discard)
        if not wait:
            return self.status(name)
        return await asyncio.shield(task)

    async def _manual(self, spec: JobSpec, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._execute(spec, True, args)
        finally:
            self._locks[spec.name].release()

    async def run_scheduled(self, name: str, retry: bool = False) -> None:
        """What the scheduler calls: nothing when the job is not due, held back during
        quiet hours, coalesced while it runs already; failures are recorded, not raised."""
        spec = self._specs.get(name)
        if spec is None or self._stopping:
            return
        state = self.states[name]
        if retry:
            state.next_retry = None
        try:
            if spec.due is not None:
                try:
                    if not await spec.due():
                        return
                except Exception:
                    log.exception("job %s: cannot tell whether it is due", name)
                    return
            if spec.quiet and self.quiet_now():
                self._skip(spec, "quiet_hours")
                self.metrics.job_finished(spec.metric or spec.name, "skipped", 0.0)
                return  # the next regular run after the quiet hours does the work (and any retry)
            lock = self._locks[name]
            if lock.locked():
                if spec.due is None:  # a tick finding the job busy is no event
                    self._skip(spec, "busy")
                return
            async with lock:
                await self._execute(spec, False, {})
        except asyncio.CancelledError:
            if self._stopping:
                return  # shut down midway; APScheduler would report it as a job error
            raise
        except Exception:  # recorded, logged and retried by _execute
            log.debug("scheduled %s failed", name, exc_info=True)

    def _skip(self, spec: JobSpec, reason: str) -> None:
        state = self.states[spec.name]
        state.skipped += 1
        state.last_skip = reason
        log.debug("scheduled %s held back: %s", spec.name, reason)

    async def _execute(self, spec: JobSpec, manual: bool, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``spec`` with its lock held; records the outcome; re-raises a failure."""
        state = self.states[spec.name]
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        state.running, state.manual = True, manual
        state.last_started = time.time()
        started = time.perf_counter()
        run = JobRun(manual, dict(args), (lambda: False) if manual or not spec.quiet else self.quiet_now)
        try:
            result = await spec.fn(run)
        except Exception as exc:
            seconds = time.perf_counter() - started
            state.runs += 1
            state.failures += 1
            state.consecutive_failures += 1
            state.last_outcome, state.last_error, state.last_seconds = "failure", error_summary(exc), round(seconds, 3)
            if isinstance(exc, StorageError):
                log.warning("job %s failed (%d in a row): %s", spec.name, state.consecutive_failures, state.last_error)
            else:
                log.exception("job %s failed (%d in a row)", spec.name, state.consecutive_failures)
            if spec.metric is None:
                self.metrics.job_finished(spec.name, "failure", seconds)
            if spec.retry:
                self._schedule_retry(spec)
            raise
        finally:
            state.running = False
            state.last_finished = time.time()
            if task is not None:
                self._tasks.discard(task)
        seconds = time.perf_counter() - started
        state.runs += 1
        state.consecutive_failures = 0
        state.last_outcome, state.last_error, state.last_seconds = "success", None, round(seconds, 3)
        state.last_result = result
        self._cancel_retry(spec)
        if spec.metric is None:
            self.metrics.job_finished(spec.name, "success", seconds)
        log.info("job %s finished in %.2fs%s", spec.name, seconds, " (manual)" if manual else "")
        return result

    def _schedule_retry(self, spec: JobSpec) -> None:
        state = self.states[spec.name]
        if self._scheduler is None or self._stopping or state.consecutive_failures > self.config.retry_attempts:
            state.next_retry = None
            return
        delay = min(self.config.retry_max_s, self.config.retry_first_s * 2 ** (state.consecutive_failures - 1))
        state.next_retry = time.time() + delay
        self._scheduler.add_job(self.run_scheduled, "date", args=[spec.name, True], id=f"{spec.name}.retry",
                                name=f"{spec.name} (retry)", replace_existing=True, executor=_EXECUTOR,
                                run_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay),
                                misfire_grace_time=None)

    def _cancel_retry(self, spec: JobSpec) -> None:
        self.states[spec.name].next_retry = None
        if self._scheduler is not None and self._scheduler.get_job(f"{spec.name}.retry") is not None:
            self._scheduler.remove_job(f"{spec.name}.retry")

    # ------------------------------------------------------------------- jobs
    def _builtin(self) -> list[JobSpec]:
        engine, config = self.db.config, self.config
        return [
            JobSpec("checkpoint", self._checkpoint, CHECKPOINT_TICK_S,
                    f"every {engine.checkpoint_interval_s:g}s or past {engine.checkpoint_wal_bytes} bytes of WAL "
                    "(checked every second; after a failure, exponential backoff)",
                    retry=False, wait_when_busy=True, due=self.db.checkpoint_due, metric="checkpoint"),
            JobSpec("migrate", self._migrate, engine.migrate_interval_s,
                    f"every {engine.migrate_interval_s:g}s, {config.migrate_batch_records} records a step, "
                    f"at most {engine.migrate_max_records} a run", quiet=True, metric="migration"),
            JobSpec("rebalance", self._rebalance, config.rebalance_interval_s,
                    _every(config.rebalance_interval_s, f"segments whose list skew passes {config.rebalance_skew:g}"),
                    quiet=True),
            JobSpec("compact", self._compact, config.compact_interval_s,
                    _every(config.compact_interval_s, f"graphs past {config.tombstone_ratio:g} tombstones, segments "
                           f"past {config.segment_tombstone_ratio:g}, blobs unreferenced for {config.gc_grace_s:g}s"),
                    quiet=True),
            JobSpec("scrub", self._scrub, config.scrub_interval_s,
                    _every(config.scrub_interval_s, f"re-hash {config.scrub_sample} random blobs"), quiet=True),
            JobSpec("backup", self._backup, self.backup_config.interval_s,
                    _every(self.backup_config.interval_s,
                           f"keep last {self.backup_config.keep_last}, {self.backup_config.keep_daily} daily, "
                           f"{self.backup_config.keep_weekly} weekly")),
        ]

    async def _checkpoint(self, run: JobRun) -> dict[str, Any]:
        manifest = await self.db.checkpoint()
        return {"manifest": str(manifest) if manifest else None, "lsn": self.db.checkpoint_lsn}

    async def _migrate(self, run: JobRun) -> dict[str, Any]:
        """Migrate in steps of ``migrate_batch_records`` up to ``migrate_max_records``."""
        limit = self.db.config.migrate_max_records
        started = time.time()
        total: dict[str, Any] = {"moved": 0, "segments": 0, "steps": 0, "stopped": None}
        while total["moved"] < limit:
            if run.stop():
                total["stopped"] = "quiet_hours"
                break
            step = min(self.config.migrate_batch_records, limit - total["moved"])
            result = await self.db.migrate(step)
            total["moved"] += result["moved"]
            total["segments"] += result["segments"]
            total["steps"] += 1
            if result["moved"] < step:
                break  # every collection had fewer old records than a step: all moved
        total.update(seconds=round(time.time() - started, 3), finished=time.time())
        return total

    async def _rebalance(self, run: JobRun) -> dict[str, Any]:
        threshold = self.config.rebalance_skew

        def choose(coll: Collection) -> list[int | list[int]]:
            # Runs of small segments (one per incremental migration) merge into one; the
            # segments of an older codebook than the shared one are rebuilt on it; skewed
            # segments with a codebook of their own are re-trained on their own.
            groups = coll.merge_candidates()
            merging = {seq for group in groups for seq in group}
            stale = [seq for seq in coll.stale_segments() if seq not in merging]
            merging.update(stale)
            skewed = [e["seq"] for e in coll.segment_report()
                      if needs_retrain(e, threshold) and e["seq"] not in merging and not e.get("shared")]
            return [*groups, *stale, *skewed]

        retrained = [] if run.stop() else await self.db.retrain_codebooks()
        out = await self.db.rebuild_segments(choose, run.stop)
        return {**out, "codebooks": retrained}

    async def _compact(self, run: JobRun) -> dict[str, Any]:
        ratio = self.config.segment_tombstone_ratio

        def choose(coll: Collection) -> list[int]:
            return [e["seq"] for e in coll.segment_report() if e["deleted_ratio"] > 0 and e["deleted_ratio"] >= ratio]

        out: dict[str, Any] = {"graphs": [], "segments": {"rebuilt": 0, "removed": 0}, "stopped": None}
        if not run.stop():
            out["graphs"] = await self.db.compact(self.config.tombstone_ratio)
        if not run.stop():
            out["segments"] = await self.db.rebuild_segments(choose, run.stop)
        if run.stop():
            out["stopped"] = "quiet_hours"
        await self.db.collect_garbage()
        out["gc"] = dict(self.db.last_gc)
        return out

    async def _scrub(self, run: JobRun) -> dict[str, Any]:
        """Re-hash a random sample of blobs; corrupt ones are reported, never deleted."""
        store = self.db.store
        blobs = await store.list()
        sample = self._rng.sample(blobs, min(self.config.scrub_sample, len(blobs)))
        checked = size = vanished = 0
        corrupt: list[str] = []
        for blob in sample:
            if run.stop():
                break
            try:
                await store.get(blob)
            except BlobNotFound:
                vanished += 1  # collected as garbage since it was listed
                continue
            except BlobCorrupt:
                corrupt.append(str(blob))
                self.db.storage.record_corrupt(str(blob))  # /health and the metrics show it
                if str(blob) not in self.corrupt:
                    self.corrupt[str(blob)] = self._now()
                    log.error("scrub: blob %s does not match its content address (kept for inspection; "
                              "restore from a backup if the data needs it)", blob)
            else:
                self.corrupt.pop(str(blob), None)
                self.db.storage.record_intact(str(blob))
            checked += 1
            size += blob.size
        return {"checked": checked, "bytes": size, "corrupt": corrupt, "vanished": vanished,
                "known_corrupt": len(self.corrupt)}

    async def _backup(self, run: JobRun) -> dict[str, Any]:
        label = str(run.args.get("label") or ("manual" if run.manual else "scheduled"))
        catalog = self.db.backups
        backup = await create_backup(self.db, label, self._now())
        pruned = await catalog.prune(self.backup_config)
        size = await catalog.size_of(backup)
        count = len(await catalog.backups())
        self.metrics.backup_state(count, backup.created, size)
        self.db.events.publish_job("backup_completed", {"backup": str(backup.id), "manifest": str(backup.manifest),
                                                        "lsn": backup.lsn, "bytes": size, "label": label})
        log.info("backup %s of LSN %d (%d bytes); %d kept, %d pruned", backup.id, backup.lsn, size, count, len(pruned))
        return {"backup": backup.as_dict(), "bytes": size, "pruned": [str(b.id) for b in pruned], "count": count}

    async def _report_backups(self) -> None:
        catalog = self.db.backups
        backups = await catalog.backups()
        if backups:
            self.metrics.backup_state(len(backups), backups[0].created, await catalog.size_of(backups[0]))
        else:
            self.metrics.backup_state(0, None, None)


def _finished(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: recorded and logged by _execute; the caller may be gone


def needs_retrain(entry: dict[str, Any], threshold: float) -> bool:
    """Whether a segment report entry (Collection.segment_report) calls for a retrain: its
    lists are skewed past ``threshold`` over live rows, and deletes made them so."""
    skew, built = entry.get("skew"), entry.get("built_skew")
    return (skew is not None and built is not None and (entry.get("nlist") or 1) > 1
            and skew > threshold and skew > built * RETRAIN_MIN_GAIN)


def _every(interval_s: float, what: str) -> str:
    return f"every {interval_s:g}s: {what}" if interval_s > 0 else f"on demand: {what}"
