"""The event bus: delivery, filters, the retained window, resume, backpressure, standing
queries — and how the database feeds it (commits, replay after restart, jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from s5vec.index import Collection, CollectionConfig, RawItem, compile_filter, prepare_batch, prepare_query
from s5vec.engine import Change, Database, EngineConfig, EventBus, Notice, StandingQuery, Subscription
from s5vec.engine.events import Debounced, deleted, expand, parse_event_id, scores, upserted

DIM = 4


class Inbox:
    """A consumer that records wake-ups and kills, and drains on demand."""

    def __init__(self) -> None:
        self.wakes = 0
        self.killed = False

    def wake(self) -> None:
        self.wakes += 1

    def kill(self, sub: Subscription) -> None:
        self.killed = True


def subscribe(bus: EventBus, **options: Any) -> tuple[Subscription, Inbox]:
    inbox = Inbox()
    return bus.subscribe(wake=inbox.wake, kill=inbox.kill, **options), inbox


def drain_all(sub: Subscription) -> list[Any]:
    out: list[Any] = []
    while sub.pending:
        items = sub.drain(10_000)
        if not items:
            break
        out.extend(expand(items))
    return out


def events(items: list[Any]) -> list[tuple[str, int, str | None]]:
    """(type, lsn, record id) of each delivery; notices as (kind, resume_from, None)."""
    out: list[tuple[str, int, str | None]] = []
    for item in items:
        if isinstance(item, Notice):
            out.append((item.kind, item.data.get("resume_from", -1), None))
        else:
            change, index, _ = item
            out.append((change.event_type(index), change.lsn, change.ids[index] if change.collection else None))
    return out


def batch(lsn: int, ids: list[str], existed: list[bool] | None = None, collection: str = "c",
          metadata: list[dict[str, Any]] | None = None, vectors: np.ndarray | None = None) -> Change:
    n = len(ids)
    rows = vectors if vectors is not None else np.eye(n, DIM, dtype=np.float32)
    return upserted(lsn, collection, ids, rows, metadata or [{} for _ in ids], np.full(n, 1.0),
                    existed or [False] * n)


def test_subscriber_receives_added_then_updated_then_deleted_with_lsns() -> None:
    bus = EventBus()
    sub, inbox = subscribe(bus)
    bus.publish([batch(1, ["a", "b"])])
    bus.publish([batch(2, ["a"], [True]), deleted(3, "c", ["b"])])
    assert inbox.wakes == 2
    assert events(drain_all(sub)) == [("vector_added", 1, "a"), ("vector_added", 1, "b"),
                                      ("vector_updated", 2, "a"), ("vector_deleted", 3, "b")]


def test_event_json_has_type_lsn_collection_and_record() -> None:
    change = batch(7, ["a"], metadata=[{"genre": "drama"}])
    import msgspec
    event = msgspec.json.decode(change.encoded(0))
    assert event == {"type": "vector_added", "lsn": 7, "collection": "c",
                     "record": {"id": "a", "metadata": {"genre": "drama"}, "timestamp": 1.0}}
    assert msgspec.json.decode(change.encoded(0, include_vector=True))["record"]["vector"] == [1.0, 0.0, 0.0, 0.0]


def test_subscriber_filters_by_collection_type_and_metadata() -> None:
    bus = EventBus()
    sub, _ = subscribe(bus, collections=["c"], types=["vector_added"], predicate=compile_filter({"genre": "drama"}))
    bus.publish([batch(1, ["a", "b"], metadata=[{"genre": "drama"}, {"genre": "comedy"}]),
                 batch(2, ["x"], collection="other", metadata=[{"genre": "drama"}]),
                 batch(3, ["a"], [True], metadata=[{"genre": "drama"}])])
    assert events(drain_all(sub)) == [("vector_added", 1, "a")]


def test_job_events_carry_the_head_lsn_and_pass_collection_filters() -> None:
    bus = EventBus()
    sub, _ = subscribe(bus, collections=["c"])
    bus.publish([batch(5, ["a"])])
    bus.publish_job("checkpoint_completed", {"lsn": 4})
    assert events(drain_all(sub))[-1] == ("checkpoint_completed", 5, None)


def test_job_events_get_positions_of_their_own_and_resume_delivers_exactly_what_came_after() -> None:
    bus = EventBus()
    bus.publish([batch(5, ["a", "b"])])
    bus.publish_job("checkpoint_completed", {"lsn": 5})
    bus.publish_job("backup_completed", {})
    bus.publish([batch(6, ["c"])])
    bus.publish_job("checkpoint_completed", {"lsn": 6})
    sub, _ = subscribe(bus, since=0)
    assert [c.event_id for c, _, _ in drain_all(sub)] == ["5", "5", "5.1", "5.2", "6", "6.1"]
    after = {since: [(c.kind, c.event_id) for c, _, _ in drain_all(subscribe(bus, since=parse_event_id(since))[0])]
             for since in ("5", "5.1", "5.2", "6")}
    assert after == {"5": [("checkpoint_completed", "5.1"), ("backup_completed", "5.2"), ("upsert", "6"),
                           ("checkpoint_completed", "6.1")],
                     "5.1": [("backup_completed", "5.2"), ("upsert", "6"), ("checkpoint_completed", "6.1")],
                     "5.2": [("upsert", "6"), ("checkpoint_completed", "6.1")],
                     "6": [("checkpoint_completed", "6.1")]}
    assert drain_all(subscribe(bus, since=(6, 1))[0]) == []
    (ahead,) = drain_all(subscribe(bus, since=(6, 2))[0])
    assert isinstance(ahead, Notice) and ahead.data == {"requested": "6.2", "resume_from": "6.1"}


def test_a_job_event_that_left_the_window_is_reported_missed_with_its_id() -> None:
    bus = EventBus(window_events=2)
    bus.publish([batch(5, ["a"])])
    bus.publish_job("checkpoint_completed", {"lsn": 5})
    bus.publish([batch(6, ["b"])])
    bus.publish([batch(7, ["c"])])
    missed, *rest = drain_all(subscribe(bus, since=5)[0])
    assert isinstance(missed, Notice) and missed.data == {"missed": 1, "resume_from": "5.1", "requested": 5}
    assert [e[1] for e in events(rest)] == [6, 7]


def test_since_resumes_after_the_given_lsn_from_the_window() -> None:
    bus = EventBus()
    for lsn in range(1, 6):
        bus.publish([batch(lsn, [f"r{lsn}"])])
    sub, _ = subscribe(bus, since=3)
    bus.publish([batch(6, ["r6"])])
    assert [e[1] for e in events(drain_all(sub))] == [4, 5, 6]


def test_since_older_than_the_window_reports_how_many_were_missed_and_where_it_resumes() -> None:
    bus = EventBus(window_events=3)
    for lsn in range(1, 11):
        bus.publish([batch(lsn, [f"r{lsn}"])])
    assert bus.floor == 7 and bus.retained == 3
    sub, _ = subscribe(bus, since=2)
    items = drain_all(sub)
    assert isinstance(items[0], Notice) and items[0].kind == "missed"
    assert items[0].data == {"missed": 5, "resume_from": 7, "requested": 2}
    assert [e[1] for e in events(items[1:])] == [8, 9, 10]


def test_since_beyond_the_head_is_reported_as_ahead() -> None:
    bus = EventBus()
    bus.publish([batch(1, ["a"])])
    sub, _ = subscribe(bus, since=50)
    assert events(drain_all(sub)) == [("ahead", 1, None)]


def test_window_is_bounded_by_bytes_as_well_as_events() -> None:
    bus = EventBus(window_events=1_000_000, window_bytes=10_000)
    for lsn in range(1, 51):
        bus.publish([batch(lsn, ["a"], vectors=np.ones((1, 512), np.float32))])
    assert 0 < bus.retained <= 5
    assert bus.floor >= 45


def test_slow_subscriber_is_told_it_lagged_then_catches_up_from_the_window_without_loss() -> None:
    bus = EventBus(queue_events=4, max_lag_events=1_000)
    sub, _ = subscribe(bus)
    for lsn in range(1, 21):
        bus.publish([batch(lsn, [f"r{lsn}"])])
    assert not sub.live and sub.lags == 1
    assert sub.queued == 4
    items = drain_all(sub)
    kinds = events(items)
    assert kinds[4] == ("lagged", 4, None)  # live delivery stopped after LSN 4...
    assert [e[1] for e in kinds if e[0] == "vector_added"] == list(range(1, 21))  # ...nothing was lost
    assert sub.live
    bus.publish([batch(21, ["r21"])])
    assert events(drain_all(sub)) == [("vector_added", 21, "r21")]


def test_subscriber_that_falls_out_of_the_window_while_catching_up_gets_missed() -> None:
    bus = EventBus(window_events=5, queue_events=2, max_lag_events=10_000)
    sub, _ = subscribe(bus)
    for lsn in range(1, 31):
        bus.publish([batch(lsn, [f"r{lsn}"])])
    kinds = events(drain_all(sub))
    assert kinds[:3] == [("vector_added", 1, "r1"), ("vector_added", 2, "r2"), ("lagged", 2, None)]
    assert kinds[3] == ("missed", 25, None)
    assert [e[1] for e in kinds[4:]] == [26, 27, 28, 29, 30]


def test_subscriber_too_far_behind_is_killed_and_others_are_unaffected() -> None:
    bus = EventBus(queue_events=5, max_lag_events=20)
    slow, slow_inbox = subscribe(bus)
    fast, fast_inbox = subscribe(bus)
    received = 0
    for lsn in range(1, 41):
        bus.publish([batch(lsn, [f"r{lsn}"])])
        received += len(expand(fast.drain(100)))
    assert slow_inbox.killed and slow.closed and bus.subscribers == 1
    assert not fast_inbox.killed and received == 40


def test_standing_query_with_k_pushes_records_that_enter_the_top_k() -> None:
    bus = EventBus()
    query = np.array([1, 0, 0, 0], np.float32)
    sub, _ = subscribe(bus, collections=["c"], standing=StandingQuery(query, "ip", k=2))
    sub.seed([("seed-a", 0.5), ("seed-b", 0.4)])
    rows = np.array([[0.45, 0, 0, 0], [0.3, 0, 0, 0], [0.9, 0, 0, 0], [0.42, 0, 0, 0]], np.float32)
    bus.publish([batch(1, ["p", "q", "r", "s"], vectors=rows)])
    pushed = [(item[0].ids[item[1]], round(item[2], 3)) for item in drain_all(sub)]
    assert pushed == [("p", 0.45), ("r", 0.9)]  # q is below the bar; s below the raised bar (0.5)


def test_standing_query_with_threshold_and_filter_pushes_only_matching_records() -> None:
    bus = EventBus()
    query = np.array([1, 0, 0, 0], np.float32)
    sub, _ = subscribe(bus, standing=StandingQuery(query, "ip", threshold=0.5),
                       predicate=compile_filter({"ok": True}))
    rows = np.array([[0.9, 0, 0, 0], [0.9, 0, 0, 0], [0.1, 0, 0, 0]], np.float32)
    bus.publish([batch(1, ["a", "b", "c"], vectors=rows, metadata=[{"ok": True}, {"ok": False}, {"ok": True}]),
                 deleted(2, "c", ["a"])])
    assert [(item[0].ids[item[1]], item[2]) for item in drain_all(sub)] == [("a", np.float32(0.9).item())]


def test_standing_query_scores_equal_search_scores_for_every_metric(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(50, DIM)).astype(np.float32)
    for metric in ("cosine", "ip", "l2"):
        config = CollectionConfig("c", DIM, metric)
        coll = Collection(config, tmp_path)
        prepared, _ = prepare_batch(config, [RawItem(str(i), row) for i, row in enumerate(rows)])
        coll.apply_upsert(prepared)
        query = prepare_query(config, rows[0].tolist())
        hits = coll.search(query, k=50)
        mine = scores(metric, prepared.vectors, query)
        for hit in hits:
            assert abs(hit.score - float(mine[int(hit.id)])) < 1e-4, (metric, hit)
        coll.close()


def test_unsubscribed_consumer_gets_nothing_more() -> None:
    bus = EventBus()
    sub, inbox = subscribe(bus)
    bus.unsubscribe(sub)
    bus.publish([batch(1, ["a"])])
    assert inbox.wakes == 0 and not sub.queue and bus.subscribers == 0


# ------------------------------------------------------------------ the database feeds it
async def test_database_publishes_added_updated_and_deleted_in_commit_order(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600))
    sub, _ = subscribe(db.events)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", [RawItem("a", [1, 0, 0, 0], {"v": 1}), RawItem("b", [0, 1, 0, 0])])
    await db.upsert("c", [RawItem("a", [1, 1, 0, 0], {"v": 2})])
    await db.update_metadata("c", "b", {"v": 3})
    await db.delete("c", ["a", "missing"])
    got = events(drain_all(sub))
    assert got == [("vector_added", 2, "a"), ("vector_added", 2, "b"), ("vector_updated", 3, "a"),
                   ("vector_updated", 4, "b"), ("vector_deleted", 5, "a")]
    await db.close(checkpoint=False)


async def test_events_since_the_last_checkpoint_are_retained_again_after_a_restart(tmp_path: Path) -> None:
    config = EngineConfig(checkpoint_interval_s=3600)
    db = await Database.open(tmp_path, config)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", [RawItem("a", [1, 0, 0, 0])])
    await db.checkpoint()
    await db.upsert("c", [RawItem("b", [0, 1, 0, 0])])
    await db.upsert("c", [RawItem("b", [0, 0, 1, 0])])
    await db.close(checkpoint=False)  # as after a crash: the WAL holds LSNs 3 and 4
    db = await Database.open(tmp_path, config)
    assert db.events.floor == 2 and db.events.head == 4
    sub, _ = subscribe(db.events, since=2)
    assert events(drain_all(sub)) == [("vector_added", 3, "b"), ("vector_updated", 4, "b")]
    old, _ = subscribe(db.events, since=1)
    assert events(drain_all(old))[0] == ("missed", 2, None)
    await db.close(checkpoint=False)


async def test_checkpoint_and_migration_are_announced(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600))
    sub, _ = subscribe(db.events, types=["checkpoint_completed", "migration_started", "migration_completed"])
    await db.create_collection(CollectionConfig("c", DIM, recent_threshold_s=60))
    await db.upsert("c", [RawItem(f"r{i}", np.eye(DIM)[i % DIM] + i, {}, 1_000.0) for i in range(40)])
    await db.migrate()
    await db.checkpoint()
    items = drain_all(sub)
    assert [e[0] for e in events(items)] == ["migration_started", "migration_completed", "checkpoint_completed"]
    assert items[1][0].data["moved"] == 40
    assert items[2][0].data["lsn"] == db.applied_lsn
    await db.close(checkpoint=False)


async def test_with_a_flush_interval_a_burst_of_commits_wakes_a_subscriber_once() -> None:
    import asyncio

    bus = EventBus(flush_s=0.05)
    wakes: list[float] = []
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    sub = bus.subscribe(wake=lambda: (wakes.append(loop.time()), woken.set()), kill=lambda s: None)
    assert isinstance(sub.wake, Debounced)
    started = loop.time()
    bus.publish([batch(1, ["r1"])])
    scheduled = sub.wake.pending
    assert scheduled is not None
    for lsn in range(2, 6):  # five commits in a burst
        bus.publish([batch(lsn, [f"r{lsn}"])])
    assert wakes == [] and sub.wake.pending is scheduled  # not woken per commit: one wake-up for all...
    async with asyncio.timeout(5):
        await woken.wait()
    assert len(wakes) == 1 and wakes[0] - started >= 0.045  # ...after the interval
    assert sub.wake.pending is None  # and no other is due
    assert [e[1] for e in events(drain_all(sub))] == [1, 2, 3, 4, 5]  # with everything, in order
    bus.publish([batch(6, ["r6"])])
    scheduled = sub.wake.pending
    assert scheduled is not None
    bus.unsubscribe(sub)  # a pending wake-up of a closed subscriber is cancelled
    assert scheduled.cancelled() and sub.wake.pending is None and len(wakes) == 1
