"""``s5vec bench --crash-loop``: SIGKILL the daemon at random moments under a steady write
load, restart it, and check after every restart that nothing acknowledged was lost.

One run: start ``s5vec serve`` as a subprocess on a fresh data directory with every job
made cheap and frequent, create one collection whose records turn historical after two
seconds, then repeat ``--kills`` times: drive writes (single and batch upserts, deletes,
metadata updates of real MiniLM vectors, each id owned by one writer so at most one write
per id is in flight), aim a SIGKILL at a phase drawn at random from :data:`PHASES`, verify
the stored blobs offline, restart and check the daemon against the model:

* every acknowledged write is there with its acknowledged value, an acknowledged delete
  stays deleted; a write in flight at the kill is either fully there or fully absent (a
  batch is one WAL record) and never twice; nothing appears that was never sent;
* the collection count equals the number of distinct ids, searches never return an id
  twice, and recall@10 against brute force over the model is at least ``--min-recall``;
* the root manifest, every blob it references and every retained backup re-hash to their
  content addresses (offline, daemon stopped), and a full scrub finds nothing corrupt;
* the daemon logged no ERROR or CRITICAL line and no traceback while it ran.

The last round stops the daemon with SIGTERM (exit 0 required) and checks a clean restart.
Writes ``--out`` (JSON, the ``RELIABILITY.md`` input) and prints a short summary.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from s5vec.client import AsyncClient, S5vecError
from s5vec.ops.backup import BackupCatalog
from s5vec.engine.manifest import read_manifest, referenced_blobs
from s5vec.storage import (
    BlobCorrupt,
    BlobId,
    BlobNotFound,
    LocalBlobStore,
    StorageError,
)

from .daemon_proc import free_port
from .dataset import default_data_dir

PHASES: Final = ("ingest", "group_commit", "checkpoint", "migrate", "compact", "backup")
JOB_PHASES: Final = ("checkpoint", "migrate", "compact", "backup")
COLLECTION: Final = "crash"
DIMENSION: Final = 384
DEFAULT_OUT: Final = Path("bench-results/reliability/crashloop.json")
# Jobs cheap and frequent: checkpoints every second, scheduled migrations and compactions,
# garbage collected at once, two backups kept, a scrub re-hashes every blob.
DAEMON_ENV: Final = {
    "S5VEC_ENGINE__CHECKPOINT_INTERVAL_S": "1",
    "S5VEC_ENGINE__MIGRATE_INTERVAL_S": "2",
    "S5VEC_ENGINE__MIGRATE_MAX_RECORDS": "600",   # short steps that commit: a kill mid-run leaves
    "S5VEC_JOBS__MIGRATE_BATCH_RECORDS": "300",   # some moved, and the backlog cannot snowball
    "S5VEC_JOBS__COMPACT_INTERVAL_S": "3",
    "S5VEC_JOBS__TOMBSTONE_RATIO": "0.15",
    "S5VEC_JOBS__SEGMENT_TOMBSTONE_RATIO": "0.15",
    "S5VEC_JOBS__GC_GRACE_S": "0",
    "S5VEC_JOBS__SCRUB_INTERVAL_S": "0",
    "S5VEC_JOBS__SCRUB_SAMPLE": "1000000",
    "S5VEC_JOBS__RETRY_FIRST_S": "1",
    "S5VEC_BACKUP__KEEP_LAST": "2",
    "S5VEC_BACKUP__KEEP_DAILY": "0",
    "S5VEC_BACKUP__KEEP_WEEKLY": "0",
    "S5VEC_HTTP__QUERY_CACHE_ENTRIES": "0",
}
WRITERS: Final = 4            # steady load: mixed single/batch upserts, deletes, metadata updates
SMALL_WRITERS: Final = 24     # group commit phase: many concurrent single-record writes
SEARCH_QUERIES: Final = 16    # real queries per check
VECTOR_SAMPLE: Final = 24     # records fetched with their vector per check
FINISHED: Final = re.compile(r"s5vec\.ops\.jobs: job (\w+) finished")
OPS: Final = ("upsert", "batch", "delete_many", "delete", "metadata")
WEIGHTS: Final = (35, 25, 12, 8, 20)
SMALL_WEIGHTS: Final = (70, 0, 0, 5, 25)
FINISH_SHARE: Final = 0.25    # of the kills aimed at a job, those that wait for it to finish


class HarnessError(RuntimeError):
    """The harness itself cannot go on (the daemon does not start, the data set is missing)."""


# ---------------------------------------------------------------------- model
@dataclass(frozen=True, slots=True)
class Value:
    """What one id holds: the base row of its vector and the write that set it."""

    row: int
    version: int

    def metadata(self, owner: str) -> dict[str, Any]:
        return {"row": self.row, "v": self.version, "owner": owner}


@dataclass(slots=True)
class Model:
    """Per id the last acknowledged value (None: deleted) and the values of writes that were
    sent but not acknowledged (in flight at a kill, or failed): each may or may not have landed."""

    acked: dict[str, Value | None] = field(default_factory=dict)
    pending: dict[str, list[Value | None]] = field(default_factory=dict)
    owned: dict[str, list[str]] = field(default_factory=dict)   # writer -> its ids, in creation order
    groups: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # (what, phase, ids) in flight
    acknowledged_writes: int = 0

    def begin(self, intents: dict[str, Value | None]) -> None:
        for rid, value in intents.items():
            self.pending.setdefault(rid, []).append(value)

    def ack(self, intents: dict[str, Value | None]) -> None:
        for rid, value in intents.items():
            self.acked[rid] = value
            self.pending.pop(rid, None)
        self.acknowledged_writes += 1

    def present(self) -> dict[str, Value]:
        """The ids that exist once every pending write is resolved."""
        return {rid: v for rid, v in self.acked.items() if v is not None}


@dataclass(slots=True)
class Resolution:
    """What one comparison found: violations, and how the in-flight writes turned out."""

    violations: list[str] = field(default_factory=list)
    landed: int = 0
    dropped: int = 0


def compare(model: Model, observed: dict[str, dict[str, Any]], where: str) -> Resolution:
    """Check ``observed`` (id -> metadata as exported) against ``model`` and resolve the
    pending writes to what was found (a write seen after a restart came back from the WAL:
    it is durable now; after a violation the model also takes what was found, so it is
    reported once). No I/O; ``where`` prefixes every violation (kill number and phase)."""
    out = Resolution()
    for what, phase, group in model.groups:  # one request is one WAL record: all of it landed or none
        landed = {rid for rid in group if _seen(observed, rid) != model.acked.get(rid)
                  and _seen(observed, rid) in model.pending.get(rid, [])}
        if landed and len(landed) != len(group):
            out.violations.append(f"{where}: the {what} of {len(group)} ids in flight during {phase} landed "
                                  f"partly ({len(landed)} of them, e.g. {sorted(landed)[:3]})")
    ids = set(model.acked) | set(model.pending)
    for rid in sorted(set(observed) - ids):
        out.violations.append(f"{where}: id {rid!r} is present but was never written (metadata {observed[rid]})")
        model.acked[rid] = _seen(observed, rid)
    for rid in sorted(ids):
        seen = _seen(observed, rid)
        acked = model.acked.get(rid)
        options = model.pending.get(rid)
        if options is None:
            if seen != acked:
                out.violations.append(f"{where}: id {rid!r} {_describe(seen)}, acknowledged {_describe(acked)}"
                                      + (" (lost write)" if seen is None else ""))
                model.acked[rid] = seen  # reported once; later checks start from what is there
            continue
        if seen != acked and seen not in options:
            out.violations.append(f"{where}: id {rid!r} {_describe(seen)}, expected {_describe(acked)} or one of "
                                  f"the unacknowledged writes {[_describe(v) for v in options]}")
        elif seen != acked:
            out.landed += 1
        else:
            out.dropped += 1
        model.acked[rid] = seen
        model.pending.pop(rid)
    model.groups.clear()
    return out


def _seen(observed: dict[str, dict[str, Any]], rid: str) -> Value | None:
    meta = observed.get(rid)
    return None if meta is None else Value(int(meta.get("row", -1)), int(meta.get("v", -1)))


def _describe(value: Value | None) -> str:
    return "absent" if value is None else f"row {value.row} version {value.version}"


# --------------------------------------------------------------------- daemon
@dataclass(slots=True)
class Server:
    """``s5vec serve`` as a subprocess on a fresh port of 127.0.0.1, its log appended to ``log``."""

    data_dir: Path
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, timeout: float = 120.0) -> float:
        """Spawn and wait for ``/ready``; returns the seconds it took. Raises HarnessError."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "s5vec.daemon.cli", "serve", "--data-dir", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise HarnessError(f"the daemon exited with {self.proc.returncode} while starting:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise HarnessError(f"the daemon was not ready within {timeout:.0f}s:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code (SIGKILL after ``timeout``: -9)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def read_log(self, offset: int) -> tuple[list[str], list[str], int]:
        """The log past byte ``offset``: lines that report an error (ERROR, CRITICAL, a
        traceback: a job failing while the daemon runs is a finding too), the names of the
        jobs that finished, and the new offset."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return [], [], offset
        lines = data.decode(errors="replace").splitlines()
        errors = [line for line in lines
                  if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
        finished = [m.group(1) for m in map(FINISHED.search, lines) if m is not None]
        return errors, finished, offset + len(data)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# ---------------------------------------------------------------------- load
@dataclass(slots=True)
class Load:
    """The writers of one round and what they share."""

    client: AsyncClient
    model: Model
    base: np.ndarray
    rng: random.Random
    next_row: Callable[[], int]
    next_version: Callable[[], int]
    phase: str
    killed: bool = False
    outstanding: int = 0
    errors: list[str] = field(default_factory=list)

    def vector(self, row: int) -> list[float]:
        return self.base[row % len(self.base)].astype(np.float32).tolist()  # type: ignore[no-any-return]

    def timestamp(self, rng: random.Random) -> float | None:
        """Half the records are written an hour old: historical at once, so every migration
        has work and later writes replace records that live in sealed segments."""
        return time.time() - 3600.0 if rng.random() < 0.5 else None

    async def send(self, intents: dict[str, Value | None], what: str, call: Awaitable[Any],
                   expect: Callable[[Any], bool] | None = None) -> bool:
        """One write: pending until acknowledged. False once the daemon is gone. ``expect``
        checks the answer (a batch with failed items, a delete that found fewer ids)."""
        self.model.begin(intents)
        self.outstanding += 1
        try:
            answer = await call
            if expect is not None and not expect(answer):
                self.errors.append(f"{what} of {sorted(intents)[:3]} answered {answer!r}")
        except (S5vecError, OSError, TimeoutError) as exc:
            if len(intents) > 1:
                self.model.groups.append((what, self.phase, tuple(intents)))
            if not self.killed:
                self.errors.append(f"{what} of {sorted(intents)[:3]} failed with the daemon up: {exc}")
            return False
        finally:
            self.outstanding -= 1
        self.model.ack(intents)
        return True

    async def writer(self, owner: str, cap: int, small: bool) -> None:
        """Write until the daemon dies; ``small``: single-record upserts and updates only."""
        ids = self.model.owned.setdefault(owner, [])
        rng = random.Random(self.rng.random())
        client, model = self.client, self.model
        while not self.killed:
            live = [rid for rid in ids[-400:] if model.acked.get(rid) is not None and rid not in model.pending]
            op = rng.choices(OPS, SMALL_WEIGHTS if small else WEIGHTS)[0] if live else "upsert"
            if op == "upsert":
                rid = self._pick(owner, ids, cap, rng)
                value = Value(self.next_row(), self.next_version())
                ok = await self.send({rid: value}, "upsert", client.upsert(
                    COLLECTION, rid, self.vector(value.row), value.metadata(owner), self.timestamp(rng)))
            elif op == "batch":
                chosen = list(dict.fromkeys(self._pick(owner, ids, cap, rng) for _ in range(rng.randint(5, 60))))
                intents: dict[str, Value | None] = {rid: Value(self.next_row(), self.next_version()) for rid in chosen}
                records = [{"id": rid, "vector": self.vector(v.row), "metadata": v.metadata(owner),
                            "timestamp": self.timestamp(rng)} for rid, v in intents.items() if v is not None]
                ok = await self.send(intents, "batch upsert", client.upsert_batch(COLLECTION, records),
                                     lambda answer: bool(answer.failed == 0))
            elif op == "delete_many":
                chosen = rng.sample(live, min(len(live), rng.randint(1, 8)))
                count = len(chosen)
                ok = await self.send(dict.fromkeys(chosen), "delete", client.delete_many(COLLECTION, chosen),
                                     lambda answer, count=count: bool(answer == count))
            elif op == "delete":
                rid = rng.choice(live)
                ok = await self.send({rid: None}, "delete", client.delete(COLLECTION, rid))
            else:
                rid = rng.choice(live)
                old = model.acked[rid]
                assert old is not None
                value = Value(old.row, self.next_version())
                ok = await self.send({rid: value}, "metadata update",
                                     client.update_metadata(COLLECTION, rid, value.metadata(owner)))
            if not ok:
                return

    @staticmethod
    def _pick(owner: str, ids: list[str], cap: int, rng: random.Random) -> str:
        """A new id while the writer owns fewer than ``cap``, else an old one (maybe deleted)."""
        if not ids or (len(ids) < cap and rng.random() < 0.6):
            ids.append(f"{owner}-{len(ids)}")
            return ids[-1]
        return rng.choice(ids)


# -------------------------------------------------------------------- checks
async def verify_storage(data_dir: Path, where: str) -> tuple[list[str], int]:
    """Offline (daemon stopped): the root manifest, every blob it references and every blob
    of each retained backup exist and re-hash to their content ids. (violations, blobs)."""
    problems: list[str] = []
    store = LocalBlobStore(data_dir)
    try:
        root = await store.get_root()
    except StorageError as exc:
        return [f"{where}: the root pointer cannot be read: {exc}"], 0
    wanted: dict[BlobId, str] = {}
    if root is not None:
        try:
            manifest = await read_manifest(store, root)
        except (BlobNotFound, BlobCorrupt) as exc:
            return [f"{where}: the root manifest {root} cannot be read: {exc}"], 1
        wanted[root] = "root manifest"
        wanted.update(dict.fromkeys(referenced_blobs(manifest), f"blob of root manifest {root}"))
    catalog = BackupCatalog(data_dir, store)
    try:
        for backup in await catalog.backups():
            for blob in await catalog.blobs_of(backup):
                wanted.setdefault(blob, f"blob of backup {backup.id}")
    except StorageError as exc:
        problems.append(f"{where}: the backup catalog cannot be read: {exc}")
    for blob, owner in sorted(wanted.items(), key=lambda kv: str(kv[0])):
        try:
            await store.get(blob)
        except BlobNotFound:
            problems.append(f"{where}: {owner}: {blob} is missing")
        except BlobCorrupt:
            problems.append(f"{where}: {owner}: {blob} does not match its content address")
    return problems, len(wanted)


async def export_metadata(client: AsyncClient) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every record's metadata by id, and the ids the export listed more than once."""
    seen: dict[str, dict[str, Any]] = {}
    twice: list[str] = []
    async for record in client.export(COLLECTION, include_vector=False):
        rid = str(record.id)
        if rid in seen:
            twice.append(rid)
        seen[rid] = dict(record.metadata)
    return seen, twice


def unit_rows(base: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    matrix = base[np.asarray(rows, dtype=np.int64) % len(base)].astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


async def check_daemon(client: AsyncClient, model: Model, base: np.ndarray, queries: np.ndarray,
                       rng: random.Random, where: str, min_recall: float) -> tuple[Resolution, float | None]:
    """Compare the running daemon with the model (see the module docstring); returns the
    resolution and the mean recall@10 over the sampled queries (None: empty collection)."""
    observed, twice = await export_metadata(client)
    result = compare(model, observed, where)
    problems = result.violations
    problems += [f"{where}: the export lists id {rid!r} more than once" for rid in twice]
    info = await client.get_collection(COLLECTION)
    present = model.present()
    if info.count != len(present):
        problems.append(f"{where}: the collection counts {info.count} records, {len(present)} distinct ids "
                        f"exist (recent {info.recent}, historical {info.historical})")
    for rid in rng.sample(sorted(present), min(VECTOR_SAMPLE, len(present))):
        record = await client.get(COLLECTION, rid, include_vector=True)
        want = unit_rows(base, [present[rid].row])[0]
        if record.vector is None or not np.allclose(np.asarray(record.vector, np.float32), want, atol=1e-5):
            problems.append(f"{where}: id {rid!r} has a vector other than row {present[rid].row}")
    if not present:
        return result, None
    ids = sorted(present)
    matrix = unit_rows(base, [present[rid].row for rid in ids])
    position = {rid: i for i, rid in enumerate(ids)}
    k = min(10, len(ids))
    recalls = []
    for q in rng.sample(range(len(queries)), min(SEARCH_QUERIES, len(queries))):
        query = queries[q].astype(np.float32)
        query /= np.linalg.norm(query)
        scores = matrix @ query
        threshold = float(np.partition(-scores, k - 1)[k - 1]) * -1.0
        got = (await client.search(COLLECTION, query.tolist(), k=10, include_metadata=False)).ids
        if len(got) != len(set(got)):
            dupes = sorted(rid for rid, n in Counter(got).items() if n > 1)
            problems.append(f"{where}: search for query {q} returned ids twice: {dupes}")
        unknown = [rid for rid in got if rid not in position]
        if unknown:
            problems.append(f"{where}: search for query {q} returned ids that do not exist: {unknown[:5]}")
        hits = sum(1 for rid in set(got) if rid in position and scores[position[rid]] >= threshold - 1e-5)
        recalls.append(hits / k)
    recall = float(np.mean(recalls))
    if recall < min_recall:
        problems.append(f"{where}: recall@10 {recall:.3f} < {min_recall} over {len(recalls)} queries "
                        f"({len(ids)} records)")
    scrub = decode_json(await client.request("POST", "/api/v1/admin/scrub", retries=0))
    if scrub.get("corrupt") or scrub.get("known_corrupt"):
        problems.append(f"{where}: the scrub found corrupt blobs: {scrub.get('corrupt')}")
    return result, recall


def decode_json(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw) if raw else {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------- loop
@dataclass(slots=True)
class Options:
    kills: int = 20
    seed: int = 0
    data_dir: Path | None = None          # None: a temporary directory, removed when the run passes
    data: Path = field(default_factory=default_data_dir)
    phases: tuple[str, ...] = PHASES
    max_records: int = 4000               # distinct ids the steady writers create at most
    min_recall: float = 0.95
    env: dict[str, str] = field(default_factory=dict)   # extra daemon environment (S5VEC_*)
    before_restart: Callable[[Path, int], None] | None = None  # test hook: tamper with the directory
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


@dataclass(slots=True)
class Kill:
    number: int
    phase: str
    in_flight: bool
    running_jobs: list[str]
    outstanding_writes: int
    delay_s: float


async def crash_loop(options: Options) -> dict[str, Any]:
    """Run the loop (see the module docstring); returns the JSON result."""
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    rng = random.Random(options.seed)
    log = options.log
    if not (options.data / "base.f16.npy").is_file():
        raise HarnessError(f"no data set at {options.data}")
    base = np.load(options.data / "base.f16.npy", mmap_mode="r")
    queries = np.load(options.data / "queries.f16.npy")[:200]
    workdir = options.data_dir or Path(tempfile.mkdtemp(prefix="s5vec-crashloop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    env.update(DAEMON_ENV)
    env.update(options.env)
    server = Server(data_dir, workdir / "daemon.log", env)
    model = Model()
    counters = {"row": rng.randrange(len(base)), "version": 0}

    def next_row() -> int:
        counters["row"] += 1
        return counters["row"] % len(base)

    def next_version() -> int:
        counters["version"] += 1
        return counters["version"]

    violations: list[str] = []
    kills: list[Kill] = []
    restarts: list[float] = []
    check_times: list[float] = []
    recalls: list[float] = []
    landed = dropped = blobs_checked = 0
    notes: list[str] = []
    restarts.append(server.start())
    log_offset = 0
    jobs_finished: Counter[str] = Counter()
    job_seconds: dict[str, float] = {}  # the last full run of each job seen here
    try:
        async with AsyncClient(server.url, retries=0, timeout=120) as client:
            await client.create_collection(COLLECTION, DIMENSION, recent_threshold_s=2.0, window_s=60.0,
                                           segment_records=1500, ivf={"nprobe": 64, "rerank": 8})
        schedule = phase_schedule(options.phases, options.kills, rng)
        for number in range(1, options.kills + 2):
            final = number > options.kills
            phase = "graceful_stop" if final else schedule[number - 1]
            where = f"kill {number} ({phase})" if not final else "after graceful stop"
            async with AsyncClient(server.url, retries=0, timeout=120) as client:
                load = Load(client, model, base, rng, next_row, next_version, phase)
                kill = await drive(server, load, phase, rng, number, options.max_records, job_seconds)
                violations += [f"kill {number} ({phase}): {e}" for e in load.errors[:5]]
            if final:
                code = server.stop()
                if code != 0:
                    violations.append(f"{where}: SIGTERM ended the daemon with exit code {code}")
            else:
                kills.append(kill)
            logged, finished, log_offset = server.read_log(log_offset)
            jobs_finished.update(finished)
            violations += [f"{where}: the daemon logged: {line[:300]}" for line in logged[:3]]
            problems, count = await verify_storage(data_dir, where)
            violations += problems
            blobs_checked += count
            if options.before_restart is not None:
                options.before_restart(data_dir, number)
            try:
                restarts.append(server.start())
            except HarnessError as exc:
                violations.append(f"{where}: the daemon does not restart: {exc}")
                break
            checked = time.perf_counter()
            try:
                async with AsyncClient(server.url, retries=0, timeout=120) as client:
                    resolution, recall = await check_daemon(client, model, base, queries, rng, where,
                                                            options.min_recall)
            except S5vecError as exc:  # e.g. the collection is gone: the model cannot be resolved
                violations.append(f"{where}: the check could not read the daemon: {type(exc).__name__}: {exc}")
                break
            violations += resolution.violations
            landed += resolution.landed
            dropped += resolution.dropped
            if recall is not None:
                recalls.append(recall)
            check_times.append(time.perf_counter() - checked)
            log(f"{where}: in flight {kill.in_flight} jobs {kill.running_jobs} writes {kill.outstanding_writes}; "
                f"restart {restarts[-1]:.1f}s, check {check_times[-1]:.1f}s, {len(model.present())} records, recall {recall}, "
                f"in flight landed {resolution.landed} dropped {resolution.dropped}, violations {len(violations)}")
            if len(violations) > 200:
                notes.append("stopped early: more than 200 violations")
                break
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
    logged, finished, _ = server.read_log(log_offset)
    jobs_finished.update(finished)
    violations += [f"last restart: the daemon logged: {line[:300]}" for line in logged[:3]]
    seconds = time.perf_counter() - started
    per_phase = {p: {"kills": sum(1 for k in kills if k.phase == p),
                     "in_flight": sum(1 for k in kills if k.phase == p and k.in_flight)} for p in PHASES}
    restart_times = sorted(restarts[1:])
    summary = {
        "kills": len(kills), "phases": per_phase,
        "jobs_running_at_kill": dict(Counter(j for k in kills for j in k.running_jobs)),
        "jobs_finished": dict(jobs_finished),
        "acknowledged_writes": model.acknowledged_writes, "records_at_end": len(model.present()),
        "lost": sum("(lost write)" in v for v in violations),
        "duplicates": sum("more than once" in v or "returned ids twice" in v or "distinct ids" in v
                          for v in violations),
        "in_flight_resolved": {"present": landed, "absent": dropped},
        "recall_at_10": {"min": round(min(recalls), 4) if recalls else None,
                         "mean": round(float(np.mean(recalls)), 4) if recalls else None,
                         "checks": len(recalls)},
        "restart_s": {"p50": round(float(np.median(restart_times)), 2) if restart_times else None,
                      "max": round(max(restart_times), 2) if restart_times else None,
                      "count": len(restart_times)},
        "check_s": {"p50": round(float(np.median(check_times)), 2) if check_times else None,
                    "max": round(max(check_times), 2) if check_times else None},
        "blobs_verified": blobs_checked, "seed": options.seed, "data_dir": str(workdir),
        "daemon_env": {**DAEMON_ENV, **options.env}, "notes": notes,
        "kill_log": [{"kill": k.number, "phase": k.phase, "in_flight": k.in_flight, "jobs": k.running_jobs,
                      "writes_in_flight": k.outstanding_writes, "after_s": round(k.delay_s, 3)} for k in kills],
    }
    result = {"name": "crash-loop", "command": " ".join(shlex.quote(a) for a in sys.argv),
              "started": started_at.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
              "ok": not violations, "summary": summary, "violations": violations}
    if not violations and options.data_dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def phase_schedule(phases: Sequence[str], kills: int, rng: random.Random) -> list[str]:
    """The phase of each kill: random, but each run of ``len(phases)`` kills aims at every
    phase once (a short loop still covers them all)."""
    order: list[str] = []
    while len(order) < kills:
        block = list(phases)
        rng.shuffle(block)
        order += block
    return order[:kills]


async def drive(server: Server, load: Load, phase: str, rng: random.Random, number: int,
                max_records: int, job_seconds: dict[str, float]) -> Kill:
    """Run the writers, aim at ``phase`` and SIGKILL the daemon (for ``graceful_stop`` the
    writers are stopped first and the daemon is left running); returns what was in flight."""
    cap = max(10, max_records // WRITERS)
    tasks = [asyncio.create_task(load.writer(f"w{i}", cap, False)) for i in range(WRITERS)]
    started = time.perf_counter()
    in_flight = seen_running = False
    job: asyncio.Task[bytes] | None = None
    try:
        if phase == "group_commit":
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            tasks += [asyncio.create_task(load.writer(f"g{i}", 60, True)) for i in range(SMALL_WRITERS)]
            await asyncio.sleep(rng.uniform(0.2, 1.0))
        elif phase in JOB_PHASES:
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            job = asyncio.create_task(load.client.request("POST", f"/api/v1/admin/{phase}", retries=0,
                                                          idempotent=False))
            seen_running = await aim_at_job(load.client, phase, job, rng, job_seconds)
        else:
            await asyncio.sleep(rng.uniform(0.3, 2.0))
        running = await running_jobs(load.client)
        if phase in JOB_PHASES:
            in_flight = phase in running or (seen_running and job is not None and not job.done())
        elif phase == "group_commit":
            in_flight = load.outstanding > WRITERS
        else:
            in_flight = load.outstanding > 0
        outstanding = load.outstanding
        delay = time.perf_counter() - started
        load.killed = True
        if phase != "graceful_stop":
            server.kill()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks, return_exceptions=True)
        if job is not None:
            await asyncio.gather(job, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        if job is not None:
            job.cancel()
    return Kill(number, phase, in_flight, running, outstanding, delay)


async def aim_at_job(client: AsyncClient, name: str, job: asyncio.Task[bytes], rng: random.Random,
                     seconds: dict[str, float]) -> bool:
    """Wait until job ``name`` runs (triggered by ``job``, or by its schedule when the trigger
    got 409), then a random part of its run time (the daemon's last run, else the last one
    seen here); one time in four let it finish and kill just after (what it left behind:
    a pruned catalog, collected garbage). True if it was seen running."""
    started = time.perf_counter()
    finish = rng.random() < FINISH_SHARE
    status: dict[str, Any] = {}
    try:
        async with asyncio.timeout(60):
            while True:
                status = (await job_statuses(client)).get(name, {})
                if status.get("running"):
                    if finish:
                        await asyncio.wait({job})
                        break
                    last = status.get("last_seconds") or seconds.get(name, 0.5)
                    await asyncio.wait({job}, timeout=rng.uniform(0.0, 0.9 * float(last)))
                    break
                if job.done() and status:
                    break  # finished between two looks (or refused): the kill lands after it
                await asyncio.sleep(0.003)
    except TimeoutError:
        pass  # neither ran nor ended in a minute: kill anyway, the state is what it is
    if job.done() and not job.cancelled() and job.exception() is None:
        seconds[name] = time.perf_counter() - started
    if finish:
        await asyncio.sleep(rng.uniform(0.0, 0.3))
    return bool(status.get("running"))


async def job_statuses(client: AsyncClient) -> dict[str, dict[str, Any]]:
    """``GET /api/v1/admin/jobs`` by job name (empty if it does not answer at once)."""
    try:
        raw = await asyncio.wait_for(client.request("GET", "/api/v1/admin/jobs", retries=0), 2.0)
    except (S5vecError, OSError, TimeoutError):
        return {}
    return {j["name"]: j for j in decode_json(raw).get("jobs", [])}


async def running_jobs(client: AsyncClient) -> list[str]:
    """The jobs running now (empty if the daemon does not answer at once)."""
    return [name for name, status in (await job_statuses(client)).items() if status.get("running")]


# ----------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s5vec bench --crash-loop",
        description="SIGKILL the daemon at random moments under write load; check every acknowledged write "
                    "survives exactly once, recall@10 and the stored blobs after each restart.")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path,
                        help="work directory (daemon data dir and log); default a temp dir, kept on failure")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="data set with base.f16.npy and queries.f16.npy (default: %(default)s)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated phases to aim at (default: all: %(default)s)")
    parser.add_argument("--max-records", type=int, default=4000, help="distinct ids at most (default: %(default)s)")
    parser.add_argument("--min-recall", type=float, default=0.95,
                        help="recall@10 every check must reach (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = sorted(set(phases) - set(PHASES))
    if unknown or not phases or args.kills < 1:
        print(f"s5vec bench --crash-loop: --phases must name some of {', '.join(PHASES)} and --kills must be "
              f"positive (unknown: {unknown})", file=sys.stderr)
        return 2
    options = Options(args.kills, args.seed, args.data_dir, args.data, phases, args.max_records, args.min_recall)
    try:
        result = asyncio.run(crash_loop(options))
    except HarnessError as exc:
        print(f"s5vec bench --crash-loop: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    return 0 if result["ok"] else 1


def render(result: dict[str, Any]) -> str:
    """A few lines for people."""
    s = result["summary"]
    phases = ", ".join(f"{p} {v['kills']} ({v['in_flight']} in flight)" for p, v in s["phases"].items())
    resolved = s["in_flight_resolved"]
    lines = [
        (f"crash loop: {'OK' if result['ok'] else 'FAILED'} - {s['kills']} kills in {result['seconds']:.0f}s "
         f"(seed {s['seed']})"),
        f"  kills per phase: {phases}",
        (f"  acknowledged writes {s['acknowledged_writes']}, records at end {s['records_at_end']}, in-flight "
         f"writes resolved present {resolved['present']} / absent {resolved['absent']}"),
        (f"  recall@10 min {s['recall_at_10']['min']} mean {s['recall_at_10']['mean']}; restart p50 "
         f"{s['restart_s']['p50']}s max {s['restart_s']['max']}s; {s['blobs_verified']} blob checks"),
    ]
    lines.append(f"  jobs finished between kills: {s['jobs_finished']}; running at the kills: "
                 f"{s['jobs_running_at_kill']}")
    lines += [f"  VIOLATION {v}" for v in result["violations"][:20]]
    if len(result["violations"]) > 20:
        lines.append(f"  ... {len(result['violations']) - 20} more in the JSON")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
