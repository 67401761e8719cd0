"""The WebSocket API at ``/api/v1/ws``: requests, change feeds and standing queries on one socket.

Client frames are JSON objects with a ``type`` and an optional ``id`` echoed in the reply
(see :mod:`.wire`). Requests of one connection run concurrently (up to
``ws.max_inflight``), so replies may come in another order: match them by ``id``. A
failed request gets ``{"type": "error", "id": ..., "error": {"code", "message", "field"?}}``
and the socket stays open. Pushed frames: ``events`` (a subscription's events, oldest
first), ``matches`` (a standing query's records with their ``score``), and the notices
``lagged``, ``missed`` and ``ahead``.

Close codes: 1001 the daemon is stopping; 1008 authentication failed or timed out, or the
rate limit was abused; 1009 a frame larger than ``ws.max_message_bytes``; 4008 the
connection fell more than ``events.max_lag_events`` behind (resume with ``since``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Any, Final

import msgspec
from aiohttp import WSMsgType, web

from s5vec.index import compile_filter, prepare_query
from s5vec.engine import (
    ALL, EventBus, Notice, Query, StandingQuery, Subscription, event_id, expand, parse_event_id,
)

from . import operations
from .auth import RANK, WS_PATH, bearer_token
from .errors import ApiError, Forbidden, RequestInvalid, Unauthorized, describe
from .feeds import (
    CLOSE_GRACE_S, FRAME_BYTES, FRAME_EVENTS, GOING_AWAY, MESSAGE_TOO_BIG, POLICY_VIOLATION, TOO_SLOW, parse_types,
)
from .services import SERVICES, Services
from .wire import (
    ENCODER, MAX_BATCH, WS_DECODER, WS_ENVELOPE, DeleteIn, SearchOut, SearchResult, WsAuth, WsDelete, WsGet,
    WsMessage, WsPing, WsSearch, WsSubscribe, WsSubscribeQuery, WsUnsubscribe, WsUpsert, WsUpsertBatch,
)

log = logging.getLogger(__name__)
_WRITES: Final = (WsUpsert, WsUpsertBatch, WsDelete)
routes = web.RouteTableDef()  # in the read table: a follower's engine refuses the write messages


class SubscriptionNotFound(ApiError):
    def __init__(self, name: str) -> None:
        super().__init__(404, "subscription_not_found", f"no subscription {name!r} on this connection", "sub")


class Feed:
    """One subscription of a connection and how its frames look."""

    __slots__ = ("include_vector", "name", "prefix", "standing", "sub")

    def __init__(self, name: str, sub: Subscription, include_vector: bool) -> None:
        self.name, self.sub, self.include_vector = name, sub, include_vector
        self.standing = sub.standing is not None
        kind = b"matches" if self.standing else b"events"
        self.prefix = b'{"type":"' + kind + b'","sub":' + ENCODER.encode(name) + b',"' + kind + b'":['

    def frames(self, items: list[Any]) -> list[bytes]:
        """Consecutive events share frames (bounded by FRAME_EVENTS / FRAME_BYTES); each
        notice is a frame of its own."""
        out: list[bytes] = []
        parts: list[bytes] = []
        size = events = 0
        for item in items:
            if isinstance(item, Notice):
                if parts:
                    out.append(self.prefix + b",".join(parts) + b"]}")
                    parts, size, events = [], 0, 0
                out.append(ENCODER.encode({"type": item.kind, "sub": self.name, **item.data}))
                continue
            change, index, score = item
            if index == ALL:  # a whole change or bundle of changes: bytes shared by every subscriber
                whole = change.joined(self.include_vector)
                if change.count <= FRAME_EVENTS and len(whole) <= FRAME_BYTES:
                    pieces = [(whole, change.count)]
                else:
                    pieces = [(c.encoded(i, self.include_vector), 1) for c, i, _ in expand([item])]
            elif self.standing:
                event = change.encoded(index, self.include_vector)
                pieces = [(b'{"score":' + ENCODER.encode(score) + b',"event":' + event + b"}", 1)]
            else:
                pieces = [(change.encoded(index, self.include_vector), 1)]
            for piece, count in pieces:
                if parts and (size + len(piece) > FRAME_BYTES or events + count > FRAME_EVENTS):
                    out.append(self.prefix + b",".join(parts) + b"]}")
                    parts, size, events = [], 0, 0
                parts.append(piece)
                size += len(piece)
                events += count
        if parts:
            out.append(self.prefix + b",".join(parts) + b"]}")
        return out


class Connection:
    """One WebSocket: receives requests, runs them, pushes its subscriptions' events."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, services: Services, rank: int) -> None:
        self.request, self.ws, self.services, self.rank = request, ws, services, rank
        self.config, self.db, self.ring = services.config, services.db, services.keys
        self.bus: EventBus = self.db.events
        self.feeds: dict[str, Feed] = {}
        self.reserved: set[str] = set()  # standing queries still running their seeding search
        self.wakeup = asyncio.Event()
        self.outbox: deque[bytes] = deque()  # frames taken from queues, not yet written
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(self.config.ws.max_inflight)
        self.sender: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.stopping = False
        self.rate = float(self.config.ws.max_messages_per_s)
        self.tokens = self.rate
        self.stamp = asyncio.get_running_loop().time()
        self.counter = 0

    # -------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        self.sender = asyncio.create_task(self._send_loop(), name="s5vec-ws-sender")
        try:
            if self.rank == 0 and not await self._authenticate():
                return
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if not self._admit(msg.data):
                    if self.closer is not None:
                        break
                    continue
                await self.slots.acquire()
                task = asyncio.create_task(self._handle(msg.data))
                self.tasks.add(task)
                task.add_done_callback(self._finished)
            if self.ws.close_code == MESSAGE_TOO_BIG:
                log.info("websocket closed: frame larger than ws.max_message_bytes")
        finally:
            await self._teardown()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    async def _teardown(self) -> None:
        if self.closer is None and not self.ws.closed:
            self.close(1000, b"")
        if self.closer is not None:
            await asyncio.gather(self.closer, return_exceptions=True)
        for feed in self.feeds.values():
            self.bus.unsubscribe(feed.sub)
        self.feeds.clear()
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self.sender is not None:
            self.stopping = True
            self.wakeup.set()
            if self.ws.closed:
                self.sender.cancel()  # the transport is gone: nothing waits for it to drain
            await asyncio.gather(self.sender, return_exceptions=True)

    def close(self, code: int, reason: bytes) -> None:
        """Start closing with ``code`` (idempotent); the handler waits for it."""
        if self.closer is None and not self.ws.closed:
            self.closer = asyncio.create_task(self._close(code, reason), name="s5vec-ws-close")

    async def _close(self, code: int, reason: bytes) -> None:
        """Finish the requests in flight and deliver what is already queued (a lagged
        notice included), then the close frame; a peer that takes none of it within the
        grace period is cut off."""
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                if code != 1000 and self.tasks:
                    await asyncio.wait(list(self.tasks))
                # stop the sender between frames, never by cancelling it: tasks waiting
                # for the transport to drain share one future, which a cancel would break
                self.stopping = True
                self.wakeup.set()
                if self.sender is not None:
                    await asyncio.wait([self.sender])
                for feed in list(self.feeds.values()):
                    while feed.sub.queue and code != 1000:
                        self.outbox.extend(feed.frames(feed.sub.drain(FRAME_EVENTS)))
                while self.outbox and code != 1000:
                    await self.ws.send_frame(self.outbox.popleft(), WSMsgType.TEXT)
                await self.ws.close(code=code, message=reason)
        except (TimeoutError, ConnectionError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()

    async def shut_down(self) -> None:
        self.close(GOING_AWAY, b"server shutting down")
        if self.closer is not None:
            await asyncio.gather(self.closer, return_exceptions=True)

    def _too_slow(self, sub: Subscription) -> None:
        log.info("websocket subscriber more than %d events behind: disconnecting", self.bus.max_lag_events)
        self.close(TOO_SLOW, f"too slow: resume with since={event_id(sub.position)}".encode())

    # ---------------------------------------------------------------- receive
    async def _authenticate(self) -> bool:
        try:
            async with asyncio.timeout(self.config.ws.auth_timeout_s):
                msg = await self.ws.receive()
        except TimeoutError:
            self.close(POLICY_VIOLATION, b"authentication timed out")
            return False
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return False
        message_id: Any = None
        try:
            auth = WS_DECODER.decode(msg.data)
            message_id = auth.id
            if not isinstance(auth, WsAuth):
                raise Unauthorized("send {\"type\": \"auth\", \"key\": ...} first (or a bearer header)")
            self.rank = self.ring.rank(auth.key)
            if self.rank == 0:
                raise Unauthorized("unknown API key")
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error frame
            await self._error(message_id if message_id is not None else _envelope_id(msg.data), exc)
            self.close(POLICY_VIOLATION, b"authentication failed")
            return False
        await self._send({"type": "authenticated", "id": message_id, "scope": _scope_name(self.rank)})
        return True

    def _admit(self, data: bytes | str) -> bool:
        """Token bucket: ``max_messages_per_s``, bursts up to as many; a client that keeps
        sending while limited (a further second's worth) is disconnected."""
        now = asyncio.get_running_loop().time()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate) - 1.0
        self.stamp = now
        if self.tokens >= 0:
            return True
        if self.tokens < -self.rate:
            self.close(POLICY_VIOLATION, b"rate limit exceeded repeatedly")
            return False
        error = RateLimited(self.config.ws.max_messages_per_s)
        self._reply_soon(_encode_error(_envelope_id(data), error))
        return False

    def _reply_soon(self, frame: bytes) -> None:
        # the receive loop must not wait on a client that does not read its errors
        task = asyncio.create_task(self._send_bytes(frame))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, data: bytes | str) -> None:
        message_id: Any = None
        try:
            msg: WsMessage = WS_DECODER.decode(data)
            message_id = msg.id
            needed = "write" if isinstance(msg, _WRITES) else "read"
            if not isinstance(msg, (WsPing, WsAuth)) and self.rank < RANK[needed]:
                raise Forbidden(f"this API key lacks the '{needed}' scope")
            await self._dispatch(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one translation point for WebSocket requests
            await self._error(message_id if message_id is not None else _envelope_id(data), exc)

    async def _dispatch(self, msg: WsMessage) -> None:
        db = self.db
        if isinstance(msg, WsPing):
            await self._send({"type": "pong", "id": msg.id, "lsn": self.bus.head})
        elif isinstance(msg, WsAuth):
            rank = self.ring.rank(msg.key) if self.ring.enabled else RANK["admin"]
            if rank == 0:
                raise Unauthorized("unknown API key")
            self.rank = rank
            await self._send({"type": "authenticated", "id": msg.id, "scope": _scope_name(rank)})
        elif isinstance(msg, WsUpsert):
            record_id = await operations.upsert_one(self.services, msg.collection, msg.record)
            await self._result(msg.id, {"id": record_id, "status": "upserted"})
        elif isinstance(msg, WsUpsertBatch):
            if len(msg.records) > MAX_BATCH:
                raise RequestInvalid(f"a batch holds at most {MAX_BATCH} records, got {len(msg.records)}",
                                     "records")
            await self._result(msg.id, await operations.upsert_batch(self.services, msg.collection, msg.records))
        elif isinstance(msg, WsDelete):
            deleted = await operations.delete(db, msg.collection, DeleteIn(msg.ids, msg.filter))
            await self._result(msg.id, {"deleted": deleted})
        elif isinstance(msg, WsGet):
            found, missing = await operations.get_many(db, msg.collection, [str(i) for i in msg.ids],
                                                       msg.include_vector)
            await self._result(msg.id, {"records": found, "missing": missing})
        elif isinstance(msg, WsSearch):
            started = asyncio.get_running_loop().time()
            results, partial = await operations.search(db, msg.collection, msg)
            took = round((asyncio.get_running_loop().time() - started) * 1000, 3)
            await self._result(msg.id, SearchOut(results, len(results), took, partial))
        elif isinstance(msg, WsSubscribe):
            await self._subscribe(msg)
        elif isinstance(msg, WsSubscribeQuery):
            await self._subscribe_query(msg)
        elif isinstance(msg, WsUnsubscribe):
            feed = self.feeds.pop(msg.sub, None)
            if feed is None:
                raise SubscriptionNotFound(msg.sub)
            self.bus.unsubscribe(feed.sub)
            await self._send({"type": "unsubscribed", "id": msg.id, "sub": msg.sub})

    # ----------------------------------------------------------- subscriptions
    def _name(self, wanted: str | None) -> str:
        if len(self.feeds) + len(self.reserved) >= self.config.ws.max_subscriptions:
            raise ApiError(429, "too_many_subscriptions",
                           f"a connection holds at most {self.config.ws.max_subscriptions} subscriptions "
                           "(ws.max_subscriptions); unsubscribe first")
        if wanted is None:
            self.counter += 1
            wanted = f"s{self.counter}"
            while wanted in self.feeds or wanted in self.reserved:
                self.counter += 1
                wanted = f"s{self.counter}"
        elif wanted in self.feeds or wanted in self.reserved:
            raise ApiError(409, "subscription_exists", f"subscription {wanted!r} exists on this connection", "sub")
        return wanted

    async def _subscribe(self, msg: WsSubscribe) -> None:
        name = self._name(msg.sub)
        for collection in msg.collections or ():
            self.db.collection(collection)
        predicate = compile_filter(msg.filter, self.db.config.filter_limits) if msg.filter else None
        since = parse_event_id(msg.since) if msg.since is not None else None
        sub = self.bus.subscribe(wake=self.wakeup.set, kill=self._too_slow, collections=msg.collections,
                                 types=parse_types(msg.types), predicate=predicate, since=since)
        self.feeds[name] = Feed(name, sub, msg.include_vector)
        await self._send({"type": "subscribed", "id": msg.id, "sub": name, "lsn": self.bus.head,
                          "since": event_id(sub.position)})  # delivery starts after this
        self.wakeup.set()

    async def _subscribe_query(self, msg: WsSubscribeQuery) -> None:
        name = self._name(msg.sub)
        coll = self.db.collection(msg.collection)
        if msg.k is None and msg.score_threshold is None:
            raise RequestInvalid("a standing query needs k, score_threshold or both", "k")
        if msg.score_threshold is not None and not math.isfinite(msg.score_threshold):
            raise RequestInvalid("score_threshold must be finite", "score_threshold")
        vector = prepare_query(coll.config, msg.vector)
        predicate = compile_filter(msg.filter, self.db.config.filter_limits) if msg.filter else None
        self.reserved.add(name)
        try:
            since = self.bus.head_key  # events after this are caught up from the window
            seed: list[SearchResult] = []
            if msg.k is not None:
                hits, _ = await self.db.search(msg.collection, vector, Query(
                    k=msg.k, filter=msg.filter or None, score_threshold=msg.score_threshold))
                seed = [SearchResult(h.id, h.distance, h.score, h.metadata) for h in hits]
        finally:
            self.reserved.discard(name)
        standing = StandingQuery(vector, coll.config.metric, msg.k, msg.score_threshold)
        sub = self.bus.subscribe(wake=self.wakeup.set, kill=self._too_slow, collections=[msg.collection],
                                 predicate=predicate, standing=standing, since=since)
        sub.seed((r.id, r.score) for r in seed)
        self.feeds[name] = Feed(name, sub, msg.include_vector)
        await self._send({"type": "subscribed", "id": msg.id, "sub": name, "lsn": since[0], "since": event_id(since),
                          "results": seed})
        self.wakeup.set()

    async def _send_loop(self) -> None:
        """Push queued events: one frame per subscription per wake-up (coalescing under load)."""
        try:
            while not self.stopping:
                await self.wakeup.wait()
                self.wakeup.clear()
                for feed in list(self.feeds.values()):
                    sub = feed.sub
                    while sub.pending and not self.stopping:
                        items = sub.drain(FRAME_EVENTS)
                        if not items:
                            break
                        self.outbox.extend(feed.frames(items))
                        while self.outbox and not self.stopping:
                            # popped before the await: the write itself happens before any suspension
                            await self.ws.send_frame(self.outbox.popleft(), WSMsgType.TEXT)
                        if sub.pending:
                            await asyncio.sleep(0)  # a long catch-up must not hog the loop
        except ConnectionError:
            return

    # ------------------------------------------------------------------ replies
    async def _send(self, obj: Any) -> None:
        await self._send_bytes(ENCODER.encode(obj))

    async def _send_bytes(self, frame: bytes) -> None:
        try:
            await self.ws.send_frame(frame, WSMsgType.TEXT)
        except ConnectionError:
            pass  # the peer is gone; the receive loop ends on its own

    async def _result(self, message_id: Any, result: Any) -> None:
        await self._send({"type": "result", "id": message_id, "result": result})

    async def _error(self, message_id: Any, exc: BaseException) -> None:
        await self._send_bytes(_encode_error(message_id, exc))


class RateLimited(ApiError):
    def __init__(self, rate: int) -> None:
        super().__init__(429, "rate_limited", f"more than {rate} messages per second (ws.max_messages_per_s); "
                                              "this message was dropped")


def _encode_error(message_id: Any, exc: BaseException) -> bytes:
    _, code, message, field, _ = describe(exc)
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return ENCODER.encode({"type": "error", "id": message_id, "error": error})


def _envelope_id(data: bytes | str) -> Any:
    try:
        message_id = WS_ENVELOPE.decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return message_id if isinstance(message_id, (str, int)) and not isinstance(message_id, bool) else None


def _scope_name(rank: int) -> str:
    return next(name for name, value in RANK.items() if value == rank)


@routes.get(WS_PATH)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Upgrade to the WebSocket API (auth: bearer header, or a first ``auth`` message)."""
    services = request.app[SERVICES]
    config, ring = services.config, services.keys
    rank = RANK["admin"]
    if ring.enabled:
        token = bearer_token(request)
        rank = ring.rank(token) if token is not None else 0
        if token is not None and rank == 0:
            raise Unauthorized("unknown API key")
    ws = web.WebSocketResponse(max_msg_size=config.ws.max_message_bytes, compress=False,
                               heartbeat=config.events.heartbeat_s, decode_text=False)
    await ws.prepare(request)
    conn = Connection(request, ws, services, rank)
    feeds = services.feeds
    feeds.open.add(conn)
    try:
        await conn.run()
    finally:
        feeds.open.discard(conn)
    return ws
