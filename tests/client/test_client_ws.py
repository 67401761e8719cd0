"""The Python client's WebSocket API against a real ``s5vec serve`` subprocess:
requests, subscriptions and standing queries as async iterators, lag and resumption."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import conftest
import pytest
from conftest import Daemon, take
from s5vec.client import (
    AsyncClient,
    Client,
    CollectionNotFound,
    DimensionMismatch,
    Event,
    InvalidRequest,
    Match,
    Notice,
    RetryPolicy,
)

pytestmark = pytest.mark.e2e
FAST = RetryPolicy(retries=3, base_delay=0.05, max_delay=0.5)


@pytest.fixture
async def client(live: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live.url, retry=FAST, timeout=20) as c:
        yield c


async def until(feed: Any, record_id: str, timeout: float = 60) -> AsyncIterator[Any]:
    """Items of ``feed`` up to the event of ``record_id``."""
    async with asyncio.timeout(timeout):
        async for item in feed:
            yield item
            if isinstance(item, Event) and item.record is not None and item.record.id == record_id:
                return


async def test_subscription_is_an_async_iterator_of_typed_events(client: AsyncClient) -> None:
    await client.create_collection("w-sub", 3, "l2")
    async with client.websocket() as ws:
        async with ws.subscribe(["w-sub"], filter={"genre": "drama"}, include_vector=True) as dramas:
            everything = await ws.subscribe(["w-sub"])
            assert dramas.name != everything.name and dramas.lsn is not None
            assert await ws.upsert("w-sub", "a", [1, 0, 0], {"genre": "drama"}) == "a"
            await client.upsert("w-sub", "b", [0, 1, 0], {"genre": "comedy"})  # REST writes feed it too
            await ws.delete("w-sub", ids=["a"])
            (added,) = await take(dramas, 1)
            assert isinstance(added, Event) and added.type == "vector_added" and added.collection == "w-sub"
            assert added.record is not None and added.record.id == "a" and added.record.vector == [1.0, 0.0, 0.0]
            kinds = [(e.type, e.record.id) for e in await take(everything, 3)]
            assert kinds == [("vector_added", "a"), ("vector_added", "b"), ("vector_deleted", "a")]
        async for _ in dramas:  # unsubscribed on leaving the block: iteration is over
            raise AssertionError("no events after unsubscribe")


async def test_subscribing_since_a_data_event_gets_the_job_event_emitted_at_its_lsn(client: AsyncClient) -> None:
    await client.create_collection("w-job", 2, "l2")
    async with client.websocket() as ws:
        async with ws.subscribe(["w-job"]) as feed:
            await client.upsert("w-job", "a", [1, 0])
            await client.checkpoint()
            await client.upsert("w-job", "b", [0, 1])
            added, checkpoint, _ = await take(feed, 3)
        assert checkpoint.type == "checkpoint_completed" and checkpoint.id == f"{added.lsn}.1"
        for since in (added.lsn, str(added.lsn)):
            async with ws.subscribe(["w-job"], since=since) as resumed:
                assert [(e.type, e.id) for e in await take(resumed, 2)] == [
                    ("checkpoint_completed", checkpoint.id), ("vector_added", None)]
        async with ws.subscribe(["w-job"], since=checkpoint.id) as resumed:
            assert resumed.lsn == added.lsn + 1
            (after,) = await take(resumed, 1)  # only what came after the job event
            assert after.record is not None and after.record.id == "b"


async def test_a_socket_broken_mid_batch_after_a_job_event_resubscribes_without_repeating_it(
        client: AsyncClient) -> None:
    await client.create_collection("w-mid", 2, "l2")
    async with client.websocket(max_queue=1) as ws:  # reads the socket only as fast as we consume
        feed = await ws.subscribe(["w-mid"], types=["vector_added", "checkpoint_completed"])
        await client.upsert("w-mid", "a", [1, 0])
        await client.checkpoint()
        await client.upsert_batch("w-mid", [{"id": f"r{i:03d}", "vector": [1, i]} for i in range(600)])
        seen = await take(feed, 3)
        assert ws._ws is not None
        await ws._ws.close()  # the connection breaks in the middle of the batch
        seen += await take(feed, 599)
        assert ws.reconnects == 1
    assert [e.type for e in seen].count("checkpoint_completed") == 1
    assert [e.record.id for e in seen if e.record is not None] == ["a"] + [f"r{i:03d}" for i in range(600)]


async def test_standing_query_yields_matches_and_starts_with_the_top_k(client: AsyncClient) -> None:
    await client.create_collection("w-sq", 3, "ip")
    await client.upsert_batch("w-sq", [{"id": "a", "vector": [0.5, 0, 0]}, {"id": "b", "vector": [0.2, 0, 0]}])
    async with client.websocket() as ws:
        query = await ws.subscribe_query("w-sq", [1, 0, 0], k=2)
        assert [h.id for h in query.results] == ["a", "b"]
        await ws.upsert_batch("w-sq", [{"id": "low", "vector": [0.1, 0, 0]}, {"id": "high", "vector": [0.9, 0, 0]}])
        (match,) = await take(query, 1)
        assert isinstance(match, Match) and match.record is not None
        assert (match.record.id, round(match.score, 3)) == ("high", 0.9)
        threshold = await ws.subscribe_query("w-sq", [1, 0, 0], score_threshold=0.7, filter={"tag": "x"})
        await ws.upsert("w-sq", "tagged", [0.8, 0, 0], {"tag": "x"})
        (hit,) = await take(threshold, 1)
        assert hit.record.id == "tagged" and hit.score >= 0.7


async def test_concurrent_requests_are_matched_to_their_replies_by_id(client: AsyncClient) -> None:
    await client.create_collection("w-many", 2, "l2")
    async with client.websocket() as ws:
        ids = await asyncio.gather(*(ws.upsert("w-many", f"r{i}", [i, 1]) for i in range(50)))
        assert ids == [f"r{i}" for i in range(50)]
        searches = await asyncio.gather(*(ws.search("w-many", [i, 1], k=1, ef=32) for i in range(50)))
        assert [s.ids[0] for s in searches] == [f"r{i}" for i in range(50)]
        got = await ws.get("w-many", ["r1", "nope"], include_vector=True)
        assert [r.id for r in got.records] == ["r1"] and got.missing == ["nope"]
        assert got.records[0].vector == [1.0, 1.0]
        batch = await ws.upsert_batch("w-many", [{"id": "x", "vector": [1, 1]}, {"id": "y", "vector": [1]}])
        assert (batch.successful, batch.failed, batch.errors[0].index) == (1, 1, 1)
        assert await ws.delete("w-many", filter={"nothing": 1}) == 0
        assert await ws.ping() >= 1


async def test_error_replies_raise_mapped_exceptions_and_the_socket_stays_open(client: AsyncClient) -> None:
    await client.create_collection("w-err", 2, "l2")
    async with client.websocket() as ws:
        with pytest.raises(CollectionNotFound):
            await ws.upsert("nope", "a", [1, 0])
        with pytest.raises(DimensionMismatch):
            await ws.upsert("w-err", "a", [1, 0, 0])
        with pytest.raises(InvalidRequest) as bad:
            await ws.subscribe_query("w-err", [1, 0])  # neither k nor score_threshold
        assert bad.value.code == "invalid_request"
        with pytest.raises(CollectionNotFound):
            await ws.subscribe(["nope"])
        assert ws.subscriptions == {}
        assert await ws.upsert("w-err", "ok", [1, 0]) == "ok"


async def test_sync_websocket_subscription_is_a_blocking_iterator(live: Daemon) -> None:
    with Client(live.url) as client, client.websocket() as ws:
        client.create_collection("w-sync", 2, "l2")
        with ws.subscribe(["w-sync"]) as feed:
            ws.upsert("w-sync", "a", [1, 0])
            event = next(iter(feed))
            assert isinstance(event, Event) and event.record is not None and event.record.id == "a"
        query = ws.subscribe_query("w-sync", [1, 0], k=1)
        assert [h.id for h in query.results] == ["a"]
        query.close()


def lagging_daemon(factory: pytest.TempPathFactory, max_lag: int) -> Daemon:
    """Per-subscriber queues of 20 events: a slow reader lags at once; more than
    ``max_lag`` events behind it is cut off (4008)."""
    return Daemon(factory.mktemp("lag") / "data", {"S5VEC_EVENTS__QUEUE_EVENTS": "20",
                                                   "S5VEC_EVENTS__MAX_LAG_EVENTS": str(max_lag)}).start()


@pytest.fixture(scope="module")
def laggy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = lagging_daemon(tmp_path_factory, 100_000)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = lagging_daemon(tmp_path_factory, 300)
    yield daemon
    daemon.stop()


async def write_then_read(daemon: Daemon, collection: str, batches: int) -> tuple[list[str], list[Any], Any]:
    """Subscribe, write ``batches`` x 50 records of 512 floats without reading, then read
    them all: (ids written, items read, the session)."""
    async with AsyncClient(daemon.url, retry=FAST, timeout=30) as client:
        await client.create_collection(collection, 512, "l2")
        async with client.websocket(max_queue=1) as ws:  # reads the socket only as fast as we consume
            feed = await ws.subscribe([collection], include_vector=True)
            written: list[str] = []
            for batch in range(batches):
                records = [{"id": f"r{batch:03d}-{i:02d}", "vector": [1.0 + i] * 512} for i in range(50)]
                assert (await client.upsert_batch(collection, records)).ok  # a slow reader never blocks writers
                written.extend(r["id"] for r in records)
            items: list[Any] = []
            async with asyncio.timeout(60):
                async for item in feed:
                    items.append(item)
                    if sum(1 for i in items if isinstance(i, Event)) == len(written):
                        break
            assert await ws.ping() > 0
            return written, items, ws


async def test_a_slow_subscriber_is_told_it_lagged_and_still_gets_every_event(laggy: Daemon) -> None:
    written, items, ws = await write_then_read(laggy, "w-lag", 100)
    assert [i.record.id for i in items if isinstance(i, Event)] == written  # each once, in order
    lagged = [i for i in items if isinstance(i, Notice) and i.type == "lagged"]
    assert lagged and lagged[0].resume_from is not None and lagged[0].sub is not None
    assert ws.reconnects == 0


async def test_a_subscriber_cut_off_for_lag_resumes_where_it_stopped(strict: Daemon) -> None:
    written, items, ws = await write_then_read(strict, "w-cut", 120)
    assert [i.record.id for i in items if isinstance(i, Event)] == written  # nothing lost, nothing twice
    # cut off (4008, or 1006 when the close frame cannot reach a reader this far behind within
    # the server's grace period), then resubscribed from the last event it had
    assert ws.reconnects >= 1 and ws.close_code in (4008, 1006)


async def test_subscriptions_resume_after_the_daemon_restarts(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = Daemon(tmp_path / "data").start()
    monkeypatch.setattr(conftest, "free_port", lambda: daemon.port)  # restart on the same address
    try:
        async with AsyncClient(daemon.url, retry=RetryPolicy(retries=3, base_delay=0.2, max_delay=1.0),
                               timeout=20) as client:
            await client.create_collection("w-restart", 2, "l2")
            async with client.websocket(reconnect_attempts=30) as ws:
                feed = await ws.subscribe(["w-restart"])
                await client.upsert("w-restart", "before", [1, 0])
                (first,) = await take(feed, 1)
                assert first.record.id == "before"
                assert daemon.stop() == 0  # SIGTERM: the socket closes with 1001 (going away)
                await asyncio.to_thread(daemon.start)
                await client.upsert("w-restart", "after", [0, 1])
                events = [e async for e in until(feed, "after")]
                assert [e.record.id for e in events if isinstance(e, Event)] == ["after"]
                assert ws.reconnects >= 1 and ws.close_code == 1001
                assert await ws.upsert("w-restart", "again", [1, 1]) == "again"
    finally:
        daemon.stop()
