"""The Python client's SSE change feed against a real ``s5vec serve`` subprocess: typed
events, resuming with Last-Event-ID, reconnection, and the ``missed`` notice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import conftest
import pytest
from conftest import Daemon, take
from s5vec.client import (
    AsyncClient,
    Client,
    CollectionNotFound,
    Event,
    Notice,
    RetryPolicy,
)
from s5vec.client.sse import SseParser

pytestmark = pytest.mark.e2e
FAST = RetryPolicy(retries=3, base_delay=0.05, max_delay=0.5)


@pytest.fixture
async def client(live: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live.url, retry=FAST, timeout=20) as c:
        yield c


def test_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    chunks = [b": hello\r\n\r\nevent: a\r\nid: 1\r\ndata: {\"x\"", b": 1}\r", b"\n\r\ndata: one\ndata: two\n\n",
              b"retry: 5\nid: bad\0id\nevent: b\ndata\n\n"]
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    assert [(e.event, e.data, e.id) for e in events] == [("a", '{"x": 1}', "1"), ("message", "one\ntwo", None),
                                                         ("b", "", None)]  # an id holding NUL is ignored
    assert parser.comments == 1 and parser.retry_ms == 5


async def test_updates_yield_typed_events_with_their_ids(client: AsyncClient) -> None:
    await client.create_collection("s-typed", 3, "l2")
    async with client.updates(["s-typed"], include_vector=True) as stream:
        await client.upsert_batch("s-typed", [{"id": "a", "vector": [1, 0, 0], "metadata": {"g": 1}},
                                              {"id": "b", "vector": [0, 1, 0]}])
        await client.delete("s-typed", "a")
        first, second, third = await take(stream, 3)
    assert all(isinstance(e, Event) for e in (first, second, third))
    assert (first.type, first.record.id, first.record.metadata, first.record.vector) == (
        "vector_added", "a", {"g": 1}, [1.0, 0.0, 0.0])
    assert first.event_id is None and second.event_id == str(second.lsn) == str(first.lsn)  # id on the batch's last
    assert (third.type, third.record.id, third.event_id) == ("vector_deleted", "a", str(third.lsn))
    assert stream.last_event_id == str(third.lsn)


async def test_filters_and_types_narrow_the_feed(client: AsyncClient) -> None:
    await client.create_collection("s-narrow", 2, "l2")
    async with client.updates(["s-narrow"], types=["vector_deleted"], filter={"keep": True}) as stream:
        await client.upsert_batch("s-narrow", [{"id": "a", "vector": [1, 0], "metadata": {"keep": True}},
                                               {"id": "b", "vector": [0, 1]}])
        await client.delete_many("s-narrow", ids=["b", "a"])
        (event,) = await take(stream, 1)
    assert event.type == "vector_deleted"
    with pytest.raises(CollectionNotFound):
        await take(client.updates(["nope"]), 1)


async def test_last_event_id_resumes_exactly_after_the_last_event_seen(client: AsyncClient) -> None:
    await client.create_collection("s-resume", 2, "l2")
    async with client.updates(["s-resume"]) as stream:
        await client.upsert("s-resume", "a", [1, 0])
        await take(stream, 1)
        seen = stream.last_event_id
    await client.upsert("s-resume", "b", [1, 0])  # while nobody listens
    await client.upsert("s-resume", "c", [1, 0])
    async with client.updates(["s-resume"], last_event_id=seen) as resumed:
        events = await take(resumed, 2)
    assert [e.record.id for e in events] == ["b", "c"]


async def test_resuming_after_a_data_event_gets_the_job_event_emitted_at_its_lsn(client: AsyncClient) -> None:
    await client.create_collection("s-job", 2, "l2")
    async with client.updates(["s-job"]) as stream:
        await client.upsert("s-job", "a", [1, 0])
        await client.checkpoint()
        await client.upsert("s-job", "b", [0, 1])
        added, checkpoint, _ = await take(stream, 3)
    assert checkpoint.type == "checkpoint_completed" and checkpoint.lsn == added.lsn
    assert checkpoint.event_id == checkpoint.id == f"{added.lsn}.1"
    async with client.updates(["s-job"], last_event_id=added.event_id) as resumed:
        assert [(e.type, e.event_id) for e in await take(resumed, 2)] == [
            ("checkpoint_completed", checkpoint.id), ("vector_added", str(added.lsn + 1))]
    async with client.updates(["s-job"], last_event_id=checkpoint.event_id) as resumed:
        (after,) = await take(resumed, 1)  # only what came after the job event
    assert after.record is not None and after.record.id == "b"


BIG = 4000


async def test_a_stream_broken_mid_batch_after_a_job_event_resumes_without_repeating_it(
        client: AsyncClient) -> None:
    await client.create_collection("s-mid", 2, "l2")
    types = ["vector_added", "checkpoint_completed"]  # filtered: a big batch spans several writes
    async with client.updates(["s-mid"], types=types) as stream:
        await client.upsert("s-mid", "a", [1, 0])
        await client.checkpoint()
        # 4,000 events (~0.6 MB) cannot all be in the client's buffer (aiohttp pauses reading at
        # 128 KiB) when the connection breaks: the rest must come through a reconnect
        await client.upsert_batch("s-mid", [{"id": f"r{i:04d}", "vector": [1, i]} for i in range(BIG)])
        seen = await take(stream, 3)
        assert stream._response is not None
        stream._response.close()  # the connection breaks in the middle of the batch
        seen += await take(stream, BIG - 1)
        assert stream.connections == 2
    assert [e.type for e in seen].count("checkpoint_completed") == 1
    assert [e.record.id for e in seen if e.record is not None] == ["a"] + [f"r{i:04d}" for i in range(BIG)]


async def test_a_stream_reconnects_after_the_daemon_restarts_and_misses_nothing(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = Daemon(tmp_path / "data").start()
    monkeypatch.setattr(conftest, "free_port", lambda: daemon.port)  # restart on the same address

    class Patient(RetryPolicy):
        def delay(self, attempt: int, retry_after: str | None = None) -> float:
            return 2.0  # long enough that the write below usually lands before the reconnect

    try:
        async with AsyncClient(daemon.url, retry=Patient(), timeout=20) as client:
            await client.create_collection("s-crash", 2, "l2")
            stream = await client.updates(["s-crash"], reconnect_attempts=30).connect()
            await client.upsert_batch("s-crash", [{"id": "a", "vector": [1, 0]}, {"id": "b", "vector": [0, 1]}])
            first = await take(stream, 2)
            daemon.kill()  # SIGKILL: the WAL (and so the event window) survives
            await asyncio.to_thread(daemon.start)
            await client.upsert("s-crash", "c", [1, 1])  # probably before the stream is back
            rest = await take(stream, 1, timeout=60)
            await client.upsert("s-crash", "d", [1, 1])  # and live events follow
            rest += await take(stream, 1)
            await stream.close()
        assert [e.record.id for e in first + rest] == ["a", "b", "c", "d"]
        assert stream.connections >= 2
    finally:
        daemon.stop()


async def test_a_client_behind_the_window_gets_a_missed_notice(tmp_path: Any) -> None:
    daemon = Daemon(tmp_path / "data", {"S5VEC_EVENTS__WINDOW_EVENTS": "3"}).start()
    try:
        async with AsyncClient(daemon.url, retry=FAST) as client:
            await client.create_collection("s-old", 2, "l2")
            for i in range(8):
                await client.upsert("s-old", f"r{i}", [1, i])  # LSNs 2..9
            async with client.updates(last_event_id=3) as stream:
                missed, *rest = await take(stream, 4)
        assert isinstance(missed, Notice) and missed.type == "missed"
        assert missed.data == {"missed": 3, "resume_from": 6, "requested": 3} and missed.resume_from == 6
        assert [e.record.id for e in rest] == ["r5", "r6", "r7"]
        assert stream.last_event_id == "9"
    finally:
        daemon.stop()


async def test_sync_updates_are_a_blocking_iterator(live: Daemon) -> None:
    with Client(live.url) as client:
        client.create_collection("s-sync", 2, "l2")
        client.upsert("s-sync", "a", [1, 0])
        # job events pass collection filters: checkpoints of other tests on this daemon would come first
        with client.updates(["s-sync"], types=["vector_added"], last_event_id=0) as stream:
            event = next(stream)
        assert isinstance(event, Event) and event.record is not None and event.record.id == "a"
        assert stream.last_event_id == str(event.lsn)
