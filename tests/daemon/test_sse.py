"""Server-sent events through the real app in process, parsed from the raw byte stream."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from s5vec.daemon.services import SERVICES

API = "/api/v1"


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """A minimal text/event-stream parser over the raw response body (per the HTML spec:
    ``field: value`` lines, a blank line dispatches, ``:`` starts a comment)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.last_id: str | None = None
        self.comments: list[str] = []

    async def next(self) -> Event | None:
        """The next event, or None when the stream ended; safety timeout only."""
        event = Event()
        data: list[str] = []
        async with asyncio.timeout(10):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data or event.event != "message":
                        event.data = "\n".join(data)
                        if event.id is not None:
                            self.last_id = event.id
                        return event
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event.event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event.id = value

    async def events(self, count: int) -> list[Event]:
        out = []
        while len(out) < count:
            event = await self.next()
            assert event is not None, "stream ended early"
            out.append(event)
        return out


async def create(client: Any, name: str = "videos") -> None:
    resp = await client.post(f"{API}/collections", json={"name": name, "dimension": 3})
    assert resp.status == 201


async def upsert(client: Any, records: list[dict[str, Any]], name: str = "videos") -> None:
    resp = await client.post(f"{API}/collections/{name}/vectors/batch", json={"vectors": records})
    assert resp.status == 200 and (await resp.json())["failed"] == 0


async def test_stream_sends_typed_events_with_the_wal_sequence_number_as_id(client: Any) -> None:
    await create(client)
    resp = await client.get(f"{API}/stream/updates")
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    reader = SseReader(resp)
    await upsert(client, [{"id": "a", "vector": [1, 0, 0], "metadata": {"genre": "drama"}}])
    await upsert(client, [{"id": "a", "vector": [0, 1, 0]}])
    await client.delete(f"{API}/collections/videos/vectors/a")
    added, updated, deleted = await reader.events(3)
    assert (added.event, added.id) == ("vector_added", "2")
    assert added.json == {"type": "vector_added", "lsn": 2, "collection": "videos",
                          "record": {"id": "a", "metadata": {"genre": "drama"}, "timestamp": added.json["record"]["timestamp"]}}
    assert (updated.event, updated.id) == ("vector_updated", "3")
    assert (deleted.event, deleted.id, deleted.json["record"]) == ("vector_deleted", "4", {"id": "a"})
    resp.close()


async def test_events_of_one_batch_share_its_id_which_comes_with_the_last(client: Any) -> None:
    await create(client)
    resp = await client.get(f"{API}/stream/updates")
    reader = SseReader(resp)
    await upsert(client, [{"id": f"r{i}", "vector": [1, i, 0]} for i in range(3)])
    events = await reader.events(3)
    assert [e.json["lsn"] for e in events] == [2, 2, 2]
    assert [e.id for e in events] == [None, None, "2"]  # resuming after "2" cannot lose half a batch
    resp.close()


async def test_stream_filters_by_collection_and_type(client: Any) -> None:
    await create(client, "videos")
    await create(client, "clips")
    resp = await client.get(f"{API}/stream/updates?collection=clips&types=vector_deleted")
    reader = SseReader(resp)
    await upsert(client, [{"id": "v", "vector": [1, 0, 0]}], "videos")
    await upsert(client, [{"id": "c", "vector": [1, 0, 0]}], "clips")
    await client.delete(f"{API}/collections/videos/vectors/v")
    await client.delete(f"{API}/collections/clips/vectors/c")
    (event,) = await reader.events(1)
    assert event.event == "vector_deleted" and event.json["collection"] == "clips"
    resp.close()


async def test_unknown_collection_or_event_type_is_rejected_before_streaming(client: Any) -> None:
    resp = await client.get(f"{API}/stream/updates?collection=nope")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "collection_not_found"
    resp = await client.get(f"{API}/stream/updates?types=vector_exploded")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "types"
    resp = await client.get(f"{API}/stream/updates?since=-3")
    assert resp.status == 400


async def test_last_event_id_resumes_exactly_after_the_last_event_seen(client: Any) -> None:
    await create(client)
    resp = await client.get(f"{API}/stream/updates")
    reader = SseReader(resp)
    await upsert(client, [{"id": "a", "vector": [1, 0, 0]}])
    await reader.events(1)
    resp.close()  # the client goes away; writes continue
    await upsert(client, [{"id": "b", "vector": [1, 0, 0]}])
    await upsert(client, [{"id": "c", "vector": [1, 0, 0]}])
    resumed = await client.get(f"{API}/stream/updates", headers={"Last-Event-ID": reader.last_id})
    events = await SseReader(resumed).events(2)
    assert [e.json["record"]["id"] for e in events] == ["b", "c"]
    resumed.close()
    by_query = await client.get(f"{API}/stream/updates?since=3")
    (event,) = await SseReader(by_query).events(1)
    assert event.json["record"]["id"] == "c"
    by_query.close()


async def test_client_too_far_behind_the_window_is_told_how_many_it_missed(make_client: Any) -> None:
    client = await make_client({"S5VEC_EVENTS__WINDOW_EVENTS": "3"})
    await create(client)
    for i in range(8):
        await upsert(client, [{"id": f"r{i}", "vector": [1, i, 0]}])  # LSNs 2..9
    resp = await client.get(f"{API}/stream/updates", headers={"Last-Event-ID": "3"})
    reader = SseReader(resp)
    missed, *rest = await reader.events(4)
    assert missed.event == "missed" and missed.id == "6"
    assert missed.json == {"missed": 3, "resume_from": 6, "requested": 3}
    assert [e.id for e in rest] == ["7", "8", "9"]
    resp.close()


async def test_checkpoint_is_announced_on_the_stream(client: Any) -> None:
    await create(client)
    await upsert(client, [{"id": "a", "vector": [1, 0, 0]}])
    resp = await client.get(f"{API}/stream/updates?types=checkpoint_completed")
    reader = SseReader(resp)
    assert (await client.post(f"{API}/admin/checkpoint")).status == 200
    (event,) = await reader.events(1)
    assert event.event == "checkpoint_completed" and event.id == "2.1" and event.json["id"] == "2.1"
    assert event.json["data"]["lsn"] == 2 and event.json["data"]["manifest"].startswith("b")
    resp.close()


async def test_resuming_with_a_data_event_id_gets_the_job_event_emitted_at_that_lsn(client: Any) -> None:
    await create(client)
    await upsert(client, [{"id": "a", "vector": [1, 0, 0]}])  # LSN 2
    assert (await client.post(f"{API}/admin/checkpoint")).status == 200  # emitted at LSN 2: id "2.1"
    await upsert(client, [{"id": "b", "vector": [0, 1, 0]}])  # LSN 3
    resp = await client.get(f"{API}/stream/updates", headers={"Last-Event-ID": "2"})
    checkpoint, added = await SseReader(resp).events(2)
    assert (checkpoint.event, checkpoint.id, checkpoint.json["id"]) == ("checkpoint_completed", "2.1", "2.1")
    assert (added.event, added.id, added.json["record"]["id"]) == ("vector_added", "3", "b")
    resp.close()
    for resume in ({"headers": {"Last-Event-ID": "2.1"}}, {"params": {"since": "2.1"}}):
        resp = await client.get(f"{API}/stream/updates", **resume)
        (after,) = await SseReader(resp).events(1)  # only what came after the job event
        assert (after.event, after.id) == ("vector_added", "3")
        resp.close()
    for bad in ("2.x", "-1", "2.", ".1", "1.2.3"):  # neither "<lsn>" nor "<lsn>.<n>"
        resp = await client.get(f"{API}/stream/updates", headers={"Last-Event-ID": bad})
        assert resp.status == 400, bad
        assert (await resp.json())["error"]["field"] == "since"


async def test_idle_stream_gets_heartbeat_comments(make_client: Any) -> None:
    client = await make_client({"S5VEC_EVENTS__HEARTBEAT_S": "0.05"})
    resp = await client.get(f"{API}/stream/updates")
    reader = SseReader(resp)
    async with asyncio.timeout(10):
        while "heartbeat" not in reader.comments:
            line = await resp.content.readline()
            if line.startswith(b":"):
                reader.comments.append(line[1:].decode().strip())
    resp.close()


async def test_slow_stream_reader_is_disconnected_with_a_final_event(make_client: Any) -> None:
    client = await make_client({"S5VEC_EVENTS__QUEUE_EVENTS": "20", "S5VEC_EVENTS__MAX_LAG_EVENTS": "200"})
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": 512})
    assert resp.status == 201
    stream = await client.get(f"{API}/stream/updates?include_vector=true")  # and then it does not read
    bus = client.app[SERVICES].db.events
    batches = 0
    while bus.subscribers:  # write until the server gives up on the reader
        assert batches < 200, "the slow reader was never disconnected"
        await upsert(client, [{"id": f"r{batches}-{i}", "vector": [1.0 + i] * 512} for i in range(50)])
        batches += 1  # each write was acknowledged: the slow reader never blocks writers
    reader = SseReader(stream)
    kinds = []
    while (event := await reader.next()) is not None:
        kinds.append(event.event)
        last = event
    assert "lagged" in kinds and kinds[-1] == "disconnected"
    assert last.json["reason"] == "too_slow" and last.json["resume_from"] >= 2
    stream.close()


async def test_shutdown_ends_streams_cleanly(make_client: Any) -> None:
    client = await make_client()
    async with aiohttp.ClientSession() as session:
        resp = await session.get(client.make_url(f"{API}/stream/updates"))
        reader = SseReader(resp)
        assert await resp.content.readline()  # the stream is open
        closing = asyncio.create_task(client.server.close())
        event = await reader.next()
        assert event is not None and event.event == "going_away"
        assert await reader.next() is None  # then the body ends
        resp.close()
        await closing
