"""The WebSocket API (``/api/v1/ws``): requests correlated by ``id``, subscriptions and
standing queries as async iterators, and resumption after the connection drops."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar

import aiohttp
import msgspec
from msgspec import Struct

from .errors import (
    ConnectionFailed,
    PayloadTooLarge,
    RequestTimeout,
    S5vecError,
    Unavailable,
    error_from,
)
from .results import (
    NOTICE_TYPES,
    BatchResult,
    ErrorDetail,
    Event,
    GetResult,
    Match,
    Notice,
    Record,
    SearchHit,
    SearchResponse,
)
from .wire import API, ENCODER, JSON, record_body, search_body

if TYPE_CHECKING:
    from .async_client import AsyncClient

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH: Final = 10_000
POLICY_VIOLATION: Final = 1008  # authentication failed, or the rate limit was abused
MESSAGE_TOO_BIG: Final = 1009
_FINAL_CLOSES: Final = frozenset({POLICY_VIOLATION, MESSAGE_TOO_BIG})


# ------------------------------------------------------------------ server frames
class _Events(Struct, tag="events", tag_field="type"):
    sub: str
    events: list[Event]


class _Matches(Struct, tag="matches", tag_field="type"):
    sub: str
    matches: list[Match]


class _Result(Struct, tag="result", tag_field="type"):
    id: Any
    result: msgspec.Raw


class _Error(Struct, tag="error", tag_field="type"):
    id: Any
    error: ErrorDetail


class _Subscribed(Struct, tag="subscribed", tag_field="type"):
    id: Any
    sub: str
    lsn: int | None = None
    since: str | None = None
    results: list[SearchHit] | None = None


class _Unsubscribed(Struct, tag="unsubscribed", tag_field="type"):
    id: Any
    sub: str


class _Pong(Struct, tag="pong", tag_field="type"):
    id: Any
    lsn: int = 0


_Frame = _Events | _Matches | _Result | _Error | _Subscribed | _Unsubscribed | _Pong
_FRAMES: Final = msgspec.json.Decoder(_Frame)
_SEARCH: Final = msgspec.json.Decoder(SearchResponse)
_BATCH: Final = msgspec.json.Decoder(BatchResult)
_GET: Final = msgspec.json.Decoder(GetResult)
_END: Final = object()


class Subscription(Generic[T]):
    """A change feed (``Event``) or standing query (``Match``) on one WebSocket, plus its
    ``Notice`` objects (``lagged``, ``missed``, ``ahead``).

    ``await ws.subscribe(...)`` subscribes and returns it; ``async for`` subscribes on
    first use if not yet done; ``async with`` unsubscribes on exit. ``name`` is the
    subscription's id on the connection, ``lsn`` where it started, ``results`` a standing
    query's initial top k, ``notices`` the recent notices. Frames queue up to the
    session's ``max_queue``; beyond that the socket is no longer read (the server then
    lags this connection rather than buffering without bound).
    """

    def __init__(self, session: WebSocketSession, message: dict[str, Any], name: str, standing: bool) -> None:
        self.session, self.message, self.name, self.standing = session, message, name, standing
        self.lsn: int | None = None
        self.results: list[SearchHit] = []
        self.notices: deque[Notice] = deque(maxlen=100)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(session.max_queue)
        self._buffer: deque[T] = deque()
        self._state = "new"
        self._ended = False
        self._discard = False
        self._error: BaseException | None = None
        self._position: int | str | None = message.get("since")  # resume after this event id ...
        self._seen_at: tuple[int, int] | None = None  # ... (lsn, events of it already delivered)
        self._skip: tuple[int, int] | None = None

    # ---------------------------------------------------------------- protocol
    def __await__(self) -> Generator[Any, None, Subscription[T]]:
        return self.start().__await__()

    async def __aenter__(self) -> Subscription[T]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._state == "new":
            await self.start()
        while not self._buffer:
            if self._ended and (self._discard or self._queue.empty()):
                self._state = "closed"
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            item = await self._queue.get()
            if item is not _END and not self._discard:
                self._buffer.extend(item)
        return self._buffer.popleft()

    async def start(self) -> Subscription[T]:
        """Subscribe (once); raises the server's error (e.g. CollectionNotFound)."""
        if self._state == "new":
            self.session.subscriptions[self.name] = self
            try:
                reply = await self.session.call({**self.message, "sub": self.name})
            except BaseException:
                self.session.subscriptions.pop(self.name, None)
                raise
            self._subscribed(reply)
            self._state = "active"
        return self

    async def unsubscribe(self) -> None:
        """Stop the feed; iteration ends at once (items still queued are dropped)."""
        active = self._state == "active"
        self.end(None, discard=True)  # first: frees a reader waiting for room in the queue
        if active and self.session.connected:
            try:
                await self.session.call({"type": "unsubscribe", "sub": self.name})
            except S5vecError:
                pass  # already gone on the server (reconnected, closed): nothing to stop
        self.session.subscriptions.pop(self.name, None)

    # ----------------------------------------------------------- session side
    def _subscribed(self, reply: Any) -> None:
        if isinstance(reply, _Subscribed):
            if self._position is None:
                self._position = reply.since if reply.since is not None else reply.lsn
            if self.lsn is None:
                self.lsn = reply.lsn
            if reply.results is not None:
                self.results = reply.results

    def resume_message(self) -> dict[str, Any]:
        """The subscribe message that continues exactly after what was delivered: a change
        feed goes back one LSN and skips the events of it already delivered (frames do not
        mark the end of a batch, and a large one spans several), or resumes right after the
        last job event delivered (it has an id of its own). If the daemon can no
        longer replay that LSN (it restarted from a checkpoint), a ``missed`` notice says
        so, although usually that batch had come whole. A standing query starts afresh
        (new ``results``; matches while disconnected are not replayed)."""
        message = {**self.message, "sub": self.name}
        if not self.standing:
            if self._seen_at is not None:
                lsn, count = self._seen_at
                message["since"] = lsn - 1
                self._skip = (lsn, count)
            elif self._position is not None:
                message["since"] = self._position
        return message

    async def deliver(self, frame: Any) -> None:
        """Queue a frame's items (waits while the queue is full: backpressure)."""
        items: list[Any]
        if isinstance(frame, _Events):
            items = []
            skip = self._skip
            for event in frame.events:
                if skip is not None:
                    if event.lsn < skip[0]:  # a job event right after LSN skip[0] - 1: came before
                        continue
                    if event.lsn == skip[0] and skip[1] > 0:
                        skip = (skip[0], skip[1] - 1)
                        continue
                    skip = None
                if event.id is not None:  # a job event: a position of its own
                    self._position, self._seen_at = event.id, None
                elif self._seen_at is not None and self._seen_at[0] == event.lsn:
                    self._seen_at = (event.lsn, self._seen_at[1] + 1)
                else:
                    self._seen_at = (event.lsn, 1)
                items.append(event)
            self._skip = skip
        elif isinstance(frame, _Matches):
            items = list(frame.matches)
        else:
            notice = Notice(type=frame["type"], data={k: v for k, v in frame.items() if k not in ("type", "sub")},
                            sub=self.name)
            if notice.type == "missed":
                self._skip = None
            self.notices.append(notice)
            items = [notice]
        if items and not self._ended:
            await self._queue.put(items)

    def end(self, error: BaseException | None, discard: bool = False) -> None:
        """No more items: iteration raises ``error`` (or stops) after the queued ones, or
        at once with ``discard``."""
        if discard:
            self._discard = True
            self._buffer.clear()
            while not self._queue.empty():
                self._queue.get_nowait()
        if not self._ended:
            self._ended, self._error = True, error
            try:
                self._queue.put_nowait(_END)
            except asyncio.QueueFull:
                pass  # the consumer is not waiting: it finds the end after the queue


class WebSocketSession:
    """One WebSocket to the daemon: ``async with client.websocket() as ws``.

    Requests (``upsert``, ``upsert_batch``, ``delete``, ``get``, ``search``, ``ping``)
    may run concurrently; replies are matched by ``id``. Subscriptions are async
    iterators. When the connection drops (the daemon restarts: close 1001; this client
    fell too far behind: 4008; the network) and ``reconnect`` is on, the session
    reconnects with backoff and resubscribes every live subscription where it left off;
    requests in flight at that moment fail with ConnectionFailed (they may or may not
    have been applied) and are not re-sent. Close 1008 (authentication, rate-limit abuse)
    and 1009 (a frame too large) are final.
    """

    def __init__(self, client: AsyncClient, *, reconnect: bool = True, reconnect_attempts: int = 10,
                 max_queue: int = 1000) -> None:
        self.client, self.reconnect, self.reconnect_attempts = client, reconnect, reconnect_attempts
        self.max_queue = max_queue
        self.subscriptions: dict[str, Subscription[Any]] = {}
        self.errors: deque[S5vecError] = deque(maxlen=100)  # error replies no request waited for
        self.reconnects = 0
        self.close_code: int | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._resubscribing: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: S5vecError | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        """Open the socket (retried like an idempotent call when it cannot connect)."""
        attempt = 0
        while True:
            try:
                self._ws = await self._open()
                break
            except (ConnectionFailed, Unavailable):
                if attempt >= self.client.retry.retries:
                    raise
                await asyncio.sleep(self.client.retry.delay(attempt))
                attempt += 1
        self._connected.set()
        self._reader = asyncio.create_task(self._read_loop(), name="s5vec-client-ws-reader")

    async def close(self) -> None:
        """Close the socket; subscriptions end after their queued items."""
        self._closing = True
        for task in (self._resubscribing, self._reader):  # the reader may wait for room in a queue
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._connected.clear()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        self._fail_pending(ConnectionFailed("the WebSocket was closed", code="closed"))
        self._end_all(None)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        url = self.client.endpoint(f"{API}/ws")
        try:
            return await self.client.session().ws_connect(
                url, max_msg_size=0, heartbeat=30.0, timeout=aiohttp.ClientWSTimeout(ws_close=10.0))
        except aiohttp.WSServerHandshakeError as exc:
            raise error_from(exc.status, exc.message) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"cannot connect to {self.client.url}: {exc.os_error or exc}",
                                   code="connection_failed") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed(f"WebSocket to {self.client.url} failed: {exc}", code="connection_failed") from None

    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                while True:
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        try:
                            await self._dispatch(msg.data)
                        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
                            log.warning("websocket: ignoring a frame this client cannot read: %s", exc)
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                      aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.info("websocket broke: %s", exc)
            self._connected.clear()
            if not self._closing:
                self.close_code = ws.close_code
            if not ws.closed:
                await ws.close()
            if self._closing:
                self._fail_pending(ConnectionFailed("the WebSocket was closed", code="closed"))
                return
            error = self._close_error(ws)
            self._fail_pending(error)
            if not self.reconnect or ws.close_code in _FINAL_CLOSES:
                self._fail(error)
                return
            try:
                await self._reconnect()
            except S5vecError as exc:
                self._fail(exc)
                return

    def _close_error(self, ws: aiohttp.ClientWebSocketResponse) -> S5vecError:
        code = ws.close_code
        reason = ""
        if ws.exception() is not None:
            reason = str(ws.exception())
        if code == MESSAGE_TOO_BIG:
            return PayloadTooLarge("the server closed the WebSocket: a frame was larger than ws.max_message_bytes",
                                   code="message_too_big")
        if code == POLICY_VIOLATION:
            return S5vecError("the server closed the WebSocket: authentication failed or the rate limit was abused",
                              code="policy_violation")
        return ConnectionFailed(f"the WebSocket closed (code {code}{': ' + reason if reason else ''})",
                                code="connection_failed")

    async def _reconnect(self) -> None:
        for attempt in range(self.reconnect_attempts):
            await asyncio.sleep(self.client.retry.delay(attempt))
            if self._closing:
                raise ConnectionFailed("the WebSocket was closed", code="closed")
            try:
                self._ws = await self._open()
            except (ConnectionFailed, Unavailable) as exc:
                log.info("websocket reconnect %d failed: %s", attempt + 1, exc)
                continue
            self.reconnects += 1
            self._connected.set()
            if self.subscriptions:
                self._resubscribing = asyncio.create_task(self._resubscribe(), name="s5vec-client-ws-resubscribe")
            return
        raise ConnectionFailed(f"could not reconnect to {self.client.url} after {self.reconnect_attempts} attempts",
                               code="connection_failed")

    async def _resubscribe(self) -> None:
        for sub in list(self.subscriptions.values()):
            if sub._state != "active":
                continue
            try:
                sub._subscribed(await self.call(sub.resume_message()))
            except S5vecError as exc:
                self.subscriptions.pop(sub.name, None)
                sub.end(exc)

    def _fail_pending(self, error: S5vecError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _fail(self, error: S5vecError) -> None:
        self._failure = error
        self._end_all(error)

    def _end_all(self, error: S5vecError | None) -> None:
        subs, self.subscriptions = list(self.subscriptions.values()), {}
        for sub in subs:
            sub.end(error)

    # -------------------------------------------------------------- messages
    async def _dispatch(self, data: bytes | str) -> None:
        try:
            frame: Any = _FRAMES.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            frame = JSON.decode(data)  # notices and replies this client does not type
            if not isinstance(frame, dict):
                return
            if frame.get("type") in NOTICE_TYPES and frame.get("sub") in self.subscriptions:
                await self.subscriptions[frame["sub"]].deliver(frame)
                return
            request_id = frame.get("id")
            future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if isinstance(frame, (_Events, _Matches)):
            sub = self.subscriptions.get(frame.sub)
            if sub is not None:
                await sub.deliver(frame)
            return
        future = self._pending.pop(frame.id, None) if isinstance(frame.id, int) else None
        if isinstance(frame, _Error):
            error = error_from(None, {"error": msgspec.structs.asdict(frame.error)})
            if future is not None and not future.done():
                future.set_exception(error)
            else:
                log.warning("websocket error reply: %s", error)
                self.errors.append(error)
        elif future is not None and not future.done():
            future.set_result(frame)

    async def call(self, message: dict[str, Any]) -> Any:
        """Send one request and wait for its reply frame; raises the mapped error."""
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise ConnectionFailed("the WebSocket is closed", code="closed")
        timeout = self.client.timeout
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                ws = self._ws
                assert ws is not None
                request_id = next(self._ids)
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = future
                try:
                    await ws.send_frame(ENCODER.encode({**message, "id": request_id}), aiohttp.WSMsgType.TEXT)
                    return await future
                finally:
                    self._pending.pop(request_id, None)
        except TimeoutError:
            raise RequestTimeout(f"no WebSocket reply within {timeout} s", code="timeout") from None
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionFailed(f"WebSocket send failed: {exc}", code="connection_failed") from None

    async def _result(self, message: dict[str, Any]) -> msgspec.Raw:
        reply = await self.call(message)
        if not isinstance(reply, _Result):
            raise S5vecError(f"unexpected reply {reply!r}", code="protocol_error")
        return reply.result

    # -------------------------------------------------------------- requests
    async def upsert(self, collection: str, id: str | int | None, vector: Any = None,
                     metadata: Mapping[str, Any] | None = None, timestamp: float | str | None = None, *,
                     text: str | None = None) -> str:
        """Upsert one record (upserts arriving together become one durable batch)."""
        raw = await self._result({"type": "upsert", "collection": collection,
                                  "record": record_body(id, vector, metadata, timestamp, text)})
        return str(JSON.decode(raw)["id"])

    async def upsert_batch(self, collection: str, records: Iterable[Record | Mapping[str, Any]]) -> BatchResult:
        """Upsert many records, in messages of at most 10,000; per-record errors."""
        items = list(records)
        successful = failed = 0
        errors: list[Any] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start:start + MAX_BATCH]
            result = _BATCH.decode(await self._result({"type": "upsert_batch", "collection": collection,
                                                        "records": chunk}))
            successful += result.successful
            failed += result.failed
            errors.extend(msgspec.structs.replace(e, index=e.index + start) for e in result.errors)
        return BatchResult(successful, failed, errors)

    async def delete(self, collection: str, ids: Sequence[str | int] | None = None,
                     filter: Mapping[str, Any] | None = None) -> int:
        """Delete by ids or by filter (exactly one); returns how many existed."""
        message: dict[str, Any] = {"type": "delete", "collection": collection}
        message.update({"ids": list(ids)} if ids is not None else {"filter": filter})
        return int(JSON.decode(await self._result(message))["deleted"])

    async def get(self, collection: str, ids: Sequence[str | int], include_vector: bool = False) -> GetResult:
        """Fetch up to 1,000 records by id: found records and missing ids."""
        return _GET.decode(await self._result({"type": "get", "collection": collection, "ids": list(ids),
                                               "include_vector": include_vector}))

    async def search(self, collection: str, vector: Any = None, k: int = 10,
                     filter: Mapping[str, Any] | None = None, *, text: str | None = None,
                     **options: Any) -> SearchResponse:
        """As :meth:`AsyncClient.search` (same keyword options)."""
        if "nprobe" in options:
            options["ivf_nprobe"] = options.pop("nprobe")
        body = search_body(vector, k, filter, options, text)
        return _SEARCH.decode(await self._result({"type": "search", "collection": collection, **body}))

    async def ping(self) -> int:
        """Round trip; returns the server's newest LSN."""
        reply = await self.call({"type": "ping"})
        return int(reply.lsn) if isinstance(reply, _Pong) else 0

    # --------------------------------------------------------- subscriptions
    def _name(self) -> str:
        return f"c{next(self._names)}"

    def subscribe(self, collections: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None, *,
                  types: Sequence[str] | None = None, since: int | str | None = None,
                  include_vector: bool = False) -> Subscription[Event | Notice]:
        """Changes of ``collections`` (all when None) whose metadata matches ``filter``,
        of the given event ``types``, live or replayed from after event id ``since`` (an
        LSN, or a job event's ``"<lsn>.<n>"``)."""
        message: dict[str, Any] = {"type": "subscribe", "include_vector": include_vector}
        for key, value in (("collections", list(collections) if collections is not None else None),
                           ("filter", filter), ("types", list(types) if types is not None else None),
                           ("since", since)):
            if value is not None:
                message[key] = value
        return Subscription(self, message, self._name(), standing=False)

    def subscribe_query(self, collection: str, vector: Any, k: int | None = None, *,
                        score_threshold: float | None = None, filter: Mapping[str, Any] | None = None,
                        include_vector: bool = False) -> Subscription[Match | Notice]:
        """A standing query: new or updated records scoring into the top ``k`` (seeded by
        a search when subscribing: ``results``) and/or at least ``score_threshold``."""
        message: dict[str, Any] = {"type": "subscribe_query", "collection": collection, "vector": vector,
                                   "include_vector": include_vector}
        for key, value in (("k", k), ("score_threshold", score_threshold), ("filter", filter)):
            if value is not None:
                message[key] = value
        return Subscription(self, message, self._name(), standing=True)
