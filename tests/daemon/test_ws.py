"""The WebSocket API through the real app in process: aiohttp's client and an independent
implementation (the ``websockets`` package)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from s5vec.daemon import ConfigError, load_config
from s5vec.daemon.services import SERVICES
from s5vec.daemon.upserts import SingleUpserts
from s5vec.daemon.wire import VectorIn
from s5vec.index import CollectionConfig, CollectionNotFound, DimensionMismatch
from s5vec.engine import Database, EngineConfig

API = "/api/v1"
READ_KEY = "r" * 20
WRITE_KEY = "w" * 20


async def create(client: Any, name: str = "videos", dimension: int = 3, **extra: Any) -> None:
    resp = await client.post(f"{API}/collections", json={"name": name, "dimension": dimension, **extra})
    assert resp.status == 201, await resp.text()


class Socket:
    """An aiohttp client WebSocket that keeps pushed frames seen while waiting for a reply."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pushed: list[dict[str, Any]] = []

    async def send_json(self, message: Any) -> None:
        await self.ws.send_json(message)

    async def send_str(self, text: str) -> None:
        await self.ws.send_str(text)

    async def receive(self, kind: str | None = None, **match: Any) -> dict[str, Any]:
        """The next frame (of ``kind`` with these fields, skipping others); safety timeout only."""
        def wanted(frame: dict[str, Any]) -> bool:
            return (kind is None or frame["type"] == kind) and all(frame.get(k) == v for k, v in match.items())
        for frame in self.pushed:
            if wanted(frame):
                self.pushed.remove(frame)
                return frame
        async with asyncio.timeout(10):
            while True:
                frame = await self.ws.receive_json()
                if wanted(frame):
                    return frame
                self.pushed.append(frame)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply (matched by id); pushed frames are kept."""
        await self.ws.send_json(message)
        async with asyncio.timeout(10):
            while True:
                frame = await self.ws.receive_json()
                if frame.get("id") == message.get("id") and frame["type"] not in ("events", "matches"):
                    return frame
                self.pushed.append(frame)


@contextlib.asynccontextmanager
async def open_ws(client: Any, **options: Any) -> AsyncIterator[Socket]:
    async with client.ws_connect(f"{API}/ws", **options) as ws:
        yield Socket(ws)


async def test_subscriber_receives_writes_as_events_with_their_lsn(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        reply = await ws.request({"type": "subscribe", "id": "s", "collections": ["videos"]})
        assert reply == {"type": "subscribed", "id": "s", "sub": "s1", "lsn": 1, "since": "1"}
        ack = await ws.request({"type": "upsert", "id": 1, "collection": "videos",
                                 "record": {"id": "a", "vector": [1, 0, 0], "metadata": {"genre": "drama"}}})
        assert ack == {"type": "result", "id": 1, "result": {"id": "a", "status": "upserted"}}
        frame = await ws.receive("events")
        assert frame["sub"] == "s1"
        (event,) = frame["events"]
        assert event["type"] == "vector_added" and event["lsn"] == 2 and event["collection"] == "videos"
        assert event["record"]["id"] == "a" and event["record"]["metadata"] == {"genre": "drama"}
        resp = await client.delete(f"{API}/collections/videos/vectors/a")  # REST writes feed it too
        assert resp.status == 200
        frame = await ws.receive("events")
        assert frame["events"][0]["type"] == "vector_deleted" and frame["events"][0]["lsn"] == 3


async def test_subscription_filters_by_metadata_and_event_type(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        await ws.request({"type": "subscribe", "id": 1, "sub": "dramas", "collections": ["videos"],
                           "filter": {"genre": "drama"}, "types": ["vector_added"], "include_vector": True})
        await ws.request({"type": "upsert_batch", "id": 2, "collection": "videos", "records": [
            {"id": "a", "vector": [1, 0, 0], "metadata": {"genre": "comedy"}},
            {"id": "b", "vector": [0, 1, 0], "metadata": {"genre": "drama"}}]})
        frame = await ws.receive("events", sub="dramas")
        assert [(e["record"]["id"], e["record"]["vector"]) for e in frame["events"]] == [("b", [0.0, 1.0, 0.0])]


async def test_standing_query_starts_with_the_top_k_and_pushes_records_that_enter_it(client: Any) -> None:
    await create(client, metric="ip")
    async with open_ws(client) as ws:
        await ws.request({"type": "upsert_batch", "id": 1, "collection": "videos", "records": [
            {"id": "a", "vector": [0.5, 0, 0]}, {"id": "b", "vector": [0.2, 0, 0]}]})
        reply = await ws.request({"type": "subscribe_query", "id": 2, "collection": "videos",
                                   "vector": [1, 0, 0], "k": 2})
        assert [r["id"] for r in reply["results"]] == ["a", "b"]
        await ws.request({"type": "upsert_batch", "id": 3, "collection": "videos", "records": [
            {"id": "low", "vector": [0.1, 0, 0]}, {"id": "high", "vector": [0.9, 0, 0]}]})
        frame = await ws.receive("matches")
        assert [(m["event"]["record"]["id"], round(m["score"], 3)) for m in frame["matches"]] == [("high", 0.9)]


async def test_standing_query_with_score_threshold_and_filter(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        await ws.request({"type": "subscribe_query", "id": 1, "sub": "q", "collection": "videos",
                           "vector": [1, 0, 0], "score_threshold": 0.9, "filter": {"views": {"$gte": 10}}})
        await ws.request({"type": "upsert_batch", "id": 2, "collection": "videos", "records": [
            {"id": "near-few", "vector": [1, 0.1, 0], "metadata": {"views": 1}},
            {"id": "far", "vector": [0, 1, 0], "metadata": {"views": 99}},
            {"id": "near-many", "vector": [1, 0.2, 0], "metadata": {"views": 99}}]})
        frame = await ws.receive("matches", sub="q")
        assert [m["event"]["record"]["id"] for m in frame["matches"]] == ["near-many"]
        assert frame["matches"][0]["score"] > 0.9


async def test_errors_come_back_as_error_frames_and_keep_the_socket_open(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        cases = [
            ({"type": "nope", "id": 1}, "invalid_request", "type"),
            ({"type": "upsert", "id": 2, "collection": "videos", "record": {"id": "a", "vector": [1, 0]}},
             "dimension_mismatch", None),
            ({"type": "search", "id": 3, "collection": "missing", "vector": [1, 0, 0]}, "collection_not_found", None),
            ({"type": "subscribe", "id": 4, "types": ["vector_exploded"]}, "invalid_request", "types[0]"),
            ({"type": "subscribe_query", "id": 5, "collection": "videos", "vector": [1, 0, 0]}, "invalid_request", "k"),
            ({"type": "unsubscribe", "id": 6, "sub": "ghost"}, "subscription_not_found", "sub"),
            ({"type": "delete", "id": 7, "collection": "videos"}, "invalid_request", "ids"),
        ]
        for message, code, field in cases:
            reply = await ws.request(message)
            assert reply["type"] == "error" and reply["id"] == message["id"], reply
            assert reply["error"]["code"] == code and reply["error"]["message"]
            assert reply["error"].get("field") == field, reply
        await ws.send_str("{not json")
        reply = await ws.receive("error")
        assert reply["id"] is None and reply["error"]["code"] == "invalid_request"
        assert (await ws.request({"type": "ping", "id": "p"}))["type"] == "pong"


async def test_search_get_and_delete_answer_like_rest(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        await ws.request({"type": "upsert", "id": 1, "collection": "videos",
                           "record": {"id": "a", "vector": [1, 0, 0], "metadata": {"t": "A"}}})
        found = await ws.request({"type": "search", "id": 2, "collection": "videos", "vector": [1, 0.1, 0], "k": 1})
        assert [r["id"] for r in found["result"]["results"]] == ["a"]
        got = await ws.request({"type": "get", "id": 3, "collection": "videos", "ids": ["a", "zz"]})
        assert got["result"]["records"][0]["metadata"] == {"t": "A"} and got["result"]["missing"] == ["zz"]
        gone = await ws.request({"type": "delete", "id": 4, "collection": "videos", "ids": ["a"]})
        assert gone["result"] == {"deleted": 1}


async def test_upsert_batch_reports_per_item_errors_and_keeps_the_good_ones(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        reply = await ws.request({"type": "upsert_batch", "id": 1, "collection": "videos", "records": [
            {"id": "a", "vector": [1, 0, 0]}, {"id": "b", "vector": "oops"}, {"id": "c", "vector": [1, 2]}]})
        result = reply["result"]
        assert result["successful"] == 1 and result["failed"] == 2
        assert [(e["index"], e["error"]["code"]) for e in result["errors"]] == [
            (1, "invalid_request"), (2, "dimension_mismatch")]


async def test_unsubscribe_stops_the_feed(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        await ws.request({"type": "subscribe", "id": 1, "sub": "first"})
        await ws.request({"type": "subscribe", "id": 2, "sub": "second"})
        assert (await ws.request({"type": "unsubscribe", "id": 3, "sub": "first"}))["type"] == "unsubscribed"
        await ws.request({"type": "upsert", "id": 4, "collection": "videos", "record": {"id": "a", "vector": [1, 0, 0]}})
        frame = await ws.receive("events")
        assert frame["sub"] == "second"  # the sender serves subscriptions in order: "first" would come before


async def test_since_replays_events_a_client_missed(client: Any) -> None:
    await create(client)
    for i in range(3):
        await client.post(f"{API}/collections/videos/vectors", json={"id": f"r{i}", "vector": [1, i, 0]})
    async with open_ws(client) as ws:
        await ws.request({"type": "subscribe", "id": 1, "since": 2})
        frame = await ws.receive("events")
        assert [(e["lsn"], e["record"]["id"]) for e in frame["events"]] == [(3, "r1"), (4, "r2")]


async def test_since_a_data_event_id_replays_the_job_event_at_that_lsn_and_its_own_id_skips_it(
        client: Any) -> None:
    await create(client)
    await client.post(f"{API}/collections/videos/vectors", json={"id": "a", "vector": [1, 0, 0]})  # LSN 2
    assert (await client.post(f"{API}/admin/checkpoint")).status == 200  # emitted at LSN 2: "2.1"
    await client.post(f"{API}/collections/videos/vectors", json={"id": "b", "vector": [0, 1, 0]})  # LSN 3
    async with open_ws(client) as ws:
        for number, since in enumerate((2, "2")):  # old plain integers still work
            reply = await ws.request({"type": "subscribe", "id": number, "since": since, "sub": f"d{number}"})
            assert reply["since"] == "2"
            frame = await ws.receive("events", sub=f"d{number}")
            assert [(e["type"], e.get("id"), e["lsn"]) for e in frame["events"]] == [
                ("checkpoint_completed", "2.1", 2), ("vector_added", None, 3)]
        reply = await ws.request({"type": "subscribe", "id": "j", "since": "2.1", "sub": "j"})
        assert reply["since"] == "2.1"
        frame = await ws.receive("events", sub="j")
        assert [(e["type"], e["lsn"]) for e in frame["events"]] == [("vector_added", 3)]
        bad = await ws.request({"type": "subscribe", "id": "bad", "since": "2.x"})
        assert bad["type"] == "error" and bad["error"]["field"] == "since"


async def test_subscriptions_per_connection_are_limited(make_client: Any) -> None:
    client = await make_client({"S5VEC_WS__MAX_SUBSCRIPTIONS": "2"})
    async with open_ws(client) as ws:
        for i in range(2):
            assert (await ws.request({"type": "subscribe", "id": i}))["type"] == "subscribed"
        reply = await ws.request({"type": "subscribe", "id": 9})
        assert reply["error"]["code"] == "too_many_subscriptions"
        assert (await ws.request({"type": "ping", "id": "still-open"}))["type"] == "pong"


async def test_message_rate_is_limited_and_abuse_closes_the_socket(make_client: Any) -> None:
    client = await make_client({"S5VEC_WS__MAX_MESSAGES_PER_S": "5"})
    async with open_ws(client) as ws:
        for i in range(40):
            await ws.send_json({"type": "ping", "id": i})
        codes = []
        async with asyncio.timeout(10):
            async for msg in ws.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    codes.append(json.loads(msg.data).get("error", {}).get("code"))
        assert "rate_limited" in codes and codes.count(None) >= 5
        assert ws.ws.close_code == 1008


async def test_frame_larger_than_the_limit_closes_with_1009(make_client: Any) -> None:
    client = await make_client({"S5VEC_WS__MAX_MESSAGE_BYTES": "1024"})
    async with open_ws(client) as ws:
        await ws.send_str(json.dumps({"type": "ping", "id": "x" * 2000}))
        async with asyncio.timeout(10):
            msg = await ws.ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.ws.close_code == 1009


@pytest.fixture
async def keyed(make_client: Any) -> Any:
    client = await make_client({"S5VEC_API_KEYS": f"{READ_KEY}:read;{WRITE_KEY}:write"})
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": 3},
                             headers={"Authorization": f"Bearer {WRITE_KEY}"})
    assert resp.status == 201
    return client


async def test_bearer_header_authenticates_the_upgrade_and_scopes_apply(keyed: Any) -> None:
    async with open_ws(keyed, headers={"Authorization": f"Bearer {READ_KEY}"}) as ws:
        assert (await ws.request({"type": "subscribe", "id": 1}))["type"] == "subscribed"
        reply = await ws.request({"type": "upsert", "id": 2, "collection": "videos",
                                   "record": {"id": "a", "vector": [1, 0, 0]}})
        assert reply["error"]["code"] == "forbidden"
        assert (await ws.request({"type": "ping", "id": 3}))["type"] == "pong"
    resp = await keyed.get(f"{API}/ws", headers={"Authorization": "Bearer unknown-key-xxxxxxxx"})
    assert resp.status == 401


async def test_first_message_auth_for_browsers(keyed: Any) -> None:
    async with open_ws(keyed) as ws:
        reply = await ws.request({"type": "auth", "id": 0, "key": WRITE_KEY})
        assert reply == {"type": "authenticated", "id": 0, "scope": "write"}
        ack = await ws.request({"type": "upsert", "id": 1, "collection": "videos",
                                 "record": {"id": "a", "vector": [1, 0, 0]}})
        assert ack["type"] == "result"


async def test_anything_but_auth_first_is_refused_and_closes_with_1008(keyed: Any) -> None:
    async with open_ws(keyed) as ws:
        reply = await ws.request({"type": "subscribe", "id": 1})
        assert reply["error"]["code"] == "unauthorized"
        async with asyncio.timeout(10):
            msg = await ws.ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.ws.close_code == 1008
    async with open_ws(keyed) as ws:
        reply = await ws.request({"type": "auth", "id": 1, "key": "wrong-key-xxxxxxxxxxxx"})
        assert reply["error"]["code"] == "unauthorized"
        async with asyncio.timeout(10):
            await ws.ws.receive()
        assert ws.ws.close_code == 1008


async def test_independent_websocket_client_subscribes_and_receives_events(client: Any) -> None:
    await create(client)
    url = str(client.make_url(f"{API}/ws")).replace("http://", "ws://")
    async with ws_connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": 1, "collections": ["videos"]}))
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv())["type"] == "subscribed"
        resp = await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": [
            {"id": "a", "vector": [1, 0, 0]}, {"id": "b", "vector": [0, 1, 0]}]})
        assert resp.status == 200
        async with asyncio.timeout(10):
            frame = json.loads(await ws.recv())
        assert [e["record"]["id"] for e in frame["events"]] == ["a", "b"]
        await ws.send(json.dumps({"type": "ping", "id": 2}))
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv()) == {"type": "pong", "id": 2, "lsn": 2}


async def test_slow_consumer_gets_lagged_then_4008_while_others_keep_up(make_client: Any) -> None:
    client = await make_client({"S5VEC_EVENTS__QUEUE_EVENTS": "20", "S5VEC_EVENTS__MAX_LAG_EVENTS": "200"})
    await create(client, dimension=512)
    bus = client.app[SERVICES].db.events
    url = str(client.make_url(f"{API}/ws")).replace("http://", "ws://")
    # the slow consumer: an independent client that stops reading after subscribing
    async with ws_connect(url, max_queue=1, max_size=None) as slow, open_ws(client) as fast:
        await slow.send(json.dumps({"type": "subscribe", "id": 1, "include_vector": True}))
        async with asyncio.timeout(10):
            assert json.loads(await slow.recv())["type"] == "subscribed"
        await fast.request({"type": "subscribe", "id": 1})
        fast_ids: list[str] = []
        batches = 0
        while bus.subscribers == 2:  # write until the server gives up on the slow one
            assert batches < 200, "the slow consumer was never disconnected"
            records = [{"id": f"r{batches}-{i}", "vector": [1.0 + i] * 512} for i in range(50)]
            resp = await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": records})
            assert resp.status == 200  # writers are never blocked by the slow consumer
            batches += 1
            while len(fast_ids) < batches * 50:
                frame = await fast.receive("events")
                fast_ids.extend(e["record"]["id"] for e in frame["events"])
        assert len(fast_ids) == batches * 50  # the fast subscriber got everything, in order
        kinds: list[str] = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(30):
                while True:
                    kinds.append(json.loads(await slow.recv())["type"])
        assert "lagged" in kinds and kinds.index("lagged") > 0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        assert "since=" in closed.value.rcvd.reason


async def test_shutdown_closes_websockets_with_going_away(make_client: Any) -> None:
    client = await make_client()
    async with aiohttp.ClientSession() as session:
        raw = await session.ws_connect(client.make_url(f"{API}/ws"))
        await Socket(raw).request({"type": "subscribe", "id": 1})
        closing = asyncio.create_task(client.server.close())
        async with asyncio.timeout(30):
            msg = await raw.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and raw.close_code == 1001
        await raw.close()
        await closing


@pytest.mark.parametrize("key,value", [("S5VEC_EVENTS__QUEUE_EVENTS", "0"), ("S5VEC_WS__MAX_MESSAGE_BYTES", "10"),
                                       ("S5VEC_EVENTS__MAX_LAG_EVENTS", "5"), ("S5VEC_WS__RATE", "5")])
def test_feed_limits_are_validated_at_startup(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(env={key: value})
    assert key.removeprefix("S5VEC_").split("__")[0].lower() in str(error.value)


async def test_feed_routes_are_in_the_openapi_document(client: Any) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert {"/api/v1/stream/updates", "/api/v1/collections/{c}/ingest"} <= set(doc["paths"])
    # a WebSocket is no request/response operation: the document names it in its description
    assert "/api/v1/ws" in doc["info"]["description"] and "/api/v1/ws" not in doc["paths"]


async def test_a_large_batch_arrives_in_bounded_frames_in_order(client: Any) -> None:
    await create(client)
    async with open_ws(client) as ws:
        await ws.request({"type": "subscribe", "id": 1})
        body = "".join(json.dumps({"id": f"r{i}", "vector": [1, i, 0]}) + "\n" for i in range(600)).encode()
        assert (await client.post(f"{API}/collections/videos/ingest", data=body)).status == 200
        ids: list[str] = []
        while len(ids) < 600:
            frame = await ws.receive("events")
            assert len(frame["events"]) <= 256
            ids.extend(e["record"]["id"] for e in frame["events"])
        assert ids == [f"r{i}" for i in range(600)]


async def test_single_upserts_arriving_together_become_one_batch_with_their_own_results(tmp_path: Any) -> None:
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600))
    await db.create_collection(CollectionConfig("videos", 3))
    upserts = SingleUpserts(db)
    before = db.applied_lsn
    bodies = [VectorIn([1, i, 0], f"r{i}") for i in range(4)] + [VectorIn([1, 0], "short")]
    results = await asyncio.gather(*(upserts.upsert("videos", b) for b in bodies), return_exceptions=True)
    assert results[:4] == ["r0", "r1", "r2", "r3"]
    assert isinstance(results[4], DimensionMismatch)
    assert db.applied_lsn == before + 1  # one WAL record for the four good ones
    missing = await asyncio.gather(upserts.upsert("nope", bodies[0]), return_exceptions=True)
    assert isinstance(missing[0], CollectionNotFound)
    await db.close(checkpoint=False)
