"""Server-sent events at ``/api/v1/stream/updates``: the change feed as ``text/event-stream``.

Query: ``collection`` (repeatable or comma-separated; default all), ``types``
(comma-separated event types; default all), ``filter`` (JSON metadata filter),
``include_vector``, ``since`` (an event id; the ``Last-Event-ID`` header wins, as browsers
send it when they reconnect).

Each event is ``event: <type>`` + ``data: <JSON>``; ``id: <LSN>`` is sent on the last event
of each WAL record (the events of one batch share its LSN) and ``id: <LSN>.<n>`` on the n-th
job event after that LSN, so a client that reconnects with the last id it saw gets exactly
what came after (see :mod:`s5vec.engine.events`). Notices: ``lagged`` (the stream fell
``events.queue_events`` behind and is being fed from the retained window), ``missed``
(events too old for the window: how many sequence numbers and where delivery resumed),
``ahead`` (``since`` is beyond this server's head), and a final ``disconnected`` (too far
behind) or ``going_away`` (shutdown) before the stream ends. Idle streams get a
``: heartbeat`` comment every ``events.heartbeat_s``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from s5vec.engine import ALL, EventKey, Notice, Subscription, parse_event_id, resume_value

from .errors import RequestInvalid
from .feeds import CLOSE_GRACE_S, FRAME_EVENTS, parse_types
from .params import filter_query, flag
from .services import SERVICES
from .wire import ENCODER

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


class EventStream:
    """One SSE response fed by one subscription."""

    def __init__(self, request: web.Request, response: web.StreamResponse, heartbeat_s: float) -> None:
        self.request, self.response, self.heartbeat_s = request, response, heartbeat_s
        self.wakeup = asyncio.Event()
        self.ending: dict[str, Any] | None = None  # the final event's type and data
        self.writing = False
        self._abort: asyncio.TimerHandle | None = None
        self.sub: Subscription | None = None

    async def run(self, sub: Subscription, include_vector: bool) -> None:
        self.sub = sub
        try:
            await self.response.write(b": s5vec event stream\n\n")
            while True:
                if not sub.pending and self.ending is None:
                    try:
                        async with asyncio.timeout(self.heartbeat_s):
                            await self.wakeup.wait()
                    except TimeoutError:
                        await self._write(b": heartbeat\n\n")
                        continue
                    self.wakeup.clear()
                if self.ending is not None:
                    while sub.queue:  # what is queued (a lagged notice included) goes first
                        await self._write(self._chunk(sub, sub.drain(FRAME_EVENTS), include_vector))
                    kind = self.ending.pop("event")
                    await self._write(b"event: " + kind.encode() + b"\ndata: " + ENCODER.encode(self.ending)
                                      + b"\n\n")
                    return
                items = sub.drain(FRAME_EVENTS)
                if items:
                    await self._write(self._chunk(sub, items, include_vector))
                    if sub.pending:
                        await asyncio.sleep(0)  # a long catch-up must not hog the loop
        except ConnectionError:
            return
        finally:
            if self._abort is not None:
                self._abort.cancel()

    async def _write(self, data: bytes) -> None:
        self.writing = True
        try:
            await self.response.write(data)
        finally:
            self.writing = False

    @staticmethod
    def _chunk(sub: Subscription, items: list[Any], include_vector: bool) -> bytes:
        out: list[bytes] = []
        for position, item in enumerate(items):
            if isinstance(item, Notice):
                out.append(b"event: " + item.kind.encode() + b"\n")
                if item.kind in ("missed", "ahead"):
                    out.append(b"id: " + str(item.data["resume_from"]).encode() + b"\n")
                out.append(b"data: " + ENCODER.encode(item.data) + b"\n\n")
                continue
            change: Any = item[0]  # a Change, or a Bundle of them with index ALL
            index: int = item[1]
            if index == ALL:  # a whole change or bundle of changes
                out.append(change.sse(include_vector))  # shared bytes, id on the last event
                continue
            out.append(b"event: " + change.event_type(index).encode() + b"\n")
            following = items[position + 1] if position + 1 < len(items) else (sub.queue[0] if sub.queue else None)
            if following is None or isinstance(following, Notice) or following[0] is not change:
                out.append(b"id: " + change.event_id.encode() + b"\n")  # the record's last event: safe to resume after
            out.append(b"data: " + change.encoded(index, include_vector) + b"\n\n")
        return b"".join(out)

    def end(self, event: str, **data: Any) -> None:
        """Finish with one last ``event``; a peer that does not read is cut off after a grace."""
        if self.ending is None:
            self.ending = {"event": event, **data}
            self.wakeup.set()
            transport = self.request.transport
            if transport is not None and self._abort is None:
                self._abort = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)

    def too_slow(self, sub: Subscription) -> None:
        log.info("SSE subscriber more than %d events behind: disconnecting", sub.bus.max_lag_events)
        self.end("disconnected", reason="too_slow", resume_from=resume_value(sub.position))

    async def shut_down(self) -> None:
        self.end("going_away", reason="server shutting down",
                 resume_from=resume_value(self.sub.position) if self.sub is not None else None)


def _since(request: web.Request) -> EventKey | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("since")
    if raw is None or raw == "":
        return None
    try:
        return parse_event_id(raw.strip())
    except ValueError as exc:
        raise RequestInvalid(f"since / Last-Event-ID must be an event id: {exc}", "since") from None


@routes.get("/api/v1/stream/updates")
async def stream_updates(request: web.Request) -> web.StreamResponse:
    """The change feed as server-sent events (see module docstring)."""
    services = request.app[SERVICES]
    db, config = services.db, services.config
    names = [n for value in request.query.getall("collection", []) for n in value.split(",") if n]
    for name in names:
        db.collection(name)  # 404 for a typo rather than a silent, empty stream
    types = parse_types(request.query.get("types", "").split(",")) if "types" in request.query else None
    _, predicate = filter_query(request)
    include_vector = flag(request, "include_vector", False)
    since = _since(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    stream = EventStream(request, response, config.events.heartbeat_s)
    sub = db.events.subscribe(wake=stream.wakeup.set, kill=stream.too_slow, collections=names or None,
                              types=types, predicate=predicate, since=since)
    feeds = services.feeds
    feeds.open.add(stream)
    try:
        await stream.run(sub, include_vector)
    finally:
        feeds.open.discard(stream)
        db.events.unsubscribe(sub)
    return response
