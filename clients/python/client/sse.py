"""The change feed over server-sent events (``GET /api/v1/stream/updates``), parsed from
the raw byte stream and resumed with ``Last-Event-ID`` after a disconnection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Self

import aiohttp
import msgspec

from .errors import ConnectionFailed, Unavailable, error_from
from .results import NOTICE_TYPES, Event, Notice
from .wire import API, ENCODER, JSON

if TYPE_CHECKING:
    from .async_client import AsyncClient

log = logging.getLogger(__name__)
_ENDINGS: Final = frozenset({"disconnected", "going_away"})


class SseEvent:
    """One dispatched server-sent event: ``event`` (type), ``data``, ``id`` (None if the
    event set none)."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: str, id: str | None) -> None:
        self.event, self.data, self.id = event, data, id


class SseParser:
    """Incremental text/event-stream parser (the HTML standard's rules): ``field: value``
    lines, ``:`` comments, a blank line dispatches; CR, LF and CRLF all end lines."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.comments = 0
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        """The events completed by ``chunk``."""
        self._buffer += chunk
        while True:
            end = self._line_end()
            if end is None:
                return
            stop, skip = end
            line = self._buffer[:stop].decode("utf-8", errors="replace")
            self._buffer = self._buffer[stop + skip:]
            event = self._line(line)
            if event is not None:
                yield event

    def _line_end(self) -> tuple[int, int] | None:
        lf = self._buffer.find(b"\n")
        cr = self._buffer.find(b"\r")
        if cr < 0 and lf < 0:
            return None
        if cr < 0 or (0 <= lf < cr):
            return lf, 1
        if cr + 1 == len(self._buffer):
            return None  # a CR at the end: wait to see whether an LF follows
        return cr, 2 if self._buffer[cr + 1:cr + 2] == b"\n" else 1

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            event = None
            if self._data:
                event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class UpdateStream:
    """``async for item in client.updates(...)``: :class:`Event` objects, and
    :class:`Notice` objects for ``lagged``, ``missed``, ``ahead``, ``disconnected`` and
    ``going_away``.

    When the stream ends or the connection breaks, it reconnects (with backoff, up to
    ``reconnect_attempts`` times in a row) sending ``Last-Event-ID``, and skips events it
    already yielded, so each event comes once and in order, unless the server says it
    ``missed`` some (they were older than its window). ``last_event_id`` is where it
    stands; pass it to a later ``updates()`` to resume from there. ``async with`` (or
    ``await stream.connect()``) connects at once; a bare ``async for`` connects on the
    first item. ``close()`` (or leaving ``async with``) ends it.
    """

    def __init__(self, client: AsyncClient, collections: Sequence[str] | None = None, *,
                 types: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None,
                 include_vector: bool = False, last_event_id: str | int | None = None, reconnect: bool = True,
                 reconnect_attempts: int = 10, idle_timeout: float | None = 120.0) -> None:
        self.client = client
        self.params: list[tuple[str, str]] = [("collection", ",".join(collections))] if collections else []
        if types:
            self.params.append(("types", ",".join(types)))
        if filter:
            self.params.append(("filter", ENCODER.encode(filter).decode()))
        if include_vector:
            self.params.append(("include_vector", "true"))
        self.last_event_id: str | None = str(last_event_id) if last_event_id is not None else None
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.idle_timeout = idle_timeout
        self.connections = 0  # how many times the stream was (re)opened
        self._lsn: int | None = None  # LSN of the last event yielded ...
        self._seen_at_lsn = 0  # ... how many events of that LSN were yielded ...
        self._complete = True  # ... and whether the id of that LSN (its last event) came
        self._skip: tuple[int, int] | None = None  # after a reconnect: (lsn, events to skip)
        self._response: aiohttp.ClientResponse | None = None
        self._iterator: AsyncGenerator[Event | Notice, None] | None = None
        self._closed = False

    def __aiter__(self) -> UpdateStream:
        return self

    async def __anext__(self) -> Event | Notice:
        if self._iterator is None:
            self._iterator = self._run()
        return await self._iterator.__anext__()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def connect(self) -> Self:
        """Open the stream now, so changes from this moment on are delivered (``async for``
        alone connects on the first item); raises CollectionNotFound and the like."""
        if self._response is None and self._iterator is None and not self._closed:
            self._response = await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: the connection is released and iteration ends."""
        self._closed = True
        if self._response is not None:
            self._response.close()
        if self._iterator is not None and not getattr(self._iterator, "ag_running", False):
            await self._iterator.aclose()

    async def _open(self) -> aiohttp.ClientResponse:
        headers = {"Accept": "text/event-stream"}
        since = self.last_event_id
        if not self._complete and self._lsn is not None:
            # part of a batch came: go back one id and skip what was already yielded
            since, self._skip = str(self._lsn - 1), (self._lsn, self._seen_at_lsn)
        if since is not None:
            headers["Last-Event-ID"] = since
        timeout = aiohttp.ClientTimeout(total=None, connect=self.client.timeout, sock_connect=self.client.timeout,
                                        sock_read=self.idle_timeout)
        session = self.client.session()
        try:
            response = await session.get(self.client.endpoint(f"{API}/stream/updates"), params=self.params,
                                         headers=headers, timeout=timeout)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"cannot connect to {self.client.url}: {exc.os_error or exc}",
                                   code="connection_failed") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed(f"connection to {self.client.url} broke: {exc}", code="connection_failed") from None
        if response.status >= 400:
            body = await response.read()
            response.release()
            try:
                decoded: Any = JSON.decode(body)
            except msgspec.DecodeError:
                decoded = body.decode(errors="replace")
            raise error_from(response.status, decoded)
        self.connections += 1
        return response

    async def _run(self) -> AsyncGenerator[Event | Notice, None]:
        failures = 0
        while not self._closed:
            if self._response is None:
                try:
                    self._response = await self._open()
                except (ConnectionFailed, Unavailable) as exc:
                    failures += 1
                    if not self.reconnect or failures > self.reconnect_attempts:
                        raise
                    log.info("event stream: %s; reconnecting", exc)
                    await asyncio.sleep(self.client.retry.delay(failures - 1))
                    continue
            response = self._response
            parser = SseParser()
            ended = False
            try:
                async for chunk in response.content.iter_any():
                    failures = 0  # the server answers: only failures in a row count
                    for raw in parser.feed(chunk):
                        item = self._item(raw)
                        if item is None:
                            continue
                        yield item
                        if isinstance(item, Notice) and item.type in _ENDINGS:
                            ended = True
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                log.info("event stream broke: %s", exc)
            finally:
                response.close()
                self._response = None
            if self._closed or not self.reconnect:
                return
            if not ended:
                failures += 1
                if failures > self.reconnect_attempts:
                    raise ConnectionFailed(f"the event stream from {self.client.url} kept breaking",
                                           code="connection_failed")
            await asyncio.sleep(self.client.retry.delay(failures))

    def _item(self, raw: SseEvent) -> Event | Notice | None:
        try:
            data = JSON.decode(raw.data)
        except msgspec.DecodeError:
            log.warning("event stream: undecodable %s event", raw.event)
            return None
        if raw.event in NOTICE_TYPES or not isinstance(data, dict) or "lsn" not in data:
            if raw.id is not None:
                self.last_event_id, self._lsn, self._seen_at_lsn, self._complete = raw.id, None, 0, True
                self._skip = None
            return Notice(type=raw.event, data=data if isinstance(data, dict) else {"data": data})
        event = msgspec.convert({**data, "event_id": raw.id}, Event)
        if self._skip is not None:
            lsn, count = self._skip
            if event.lsn < lsn:  # a job event right after LSN lsn - 1: it came before the batch
                return None
            if event.lsn == lsn and count > 0:
                self._skip = (lsn, count - 1)
                return None
            self._skip = None
        if event.lsn == self._lsn:
            self._seen_at_lsn += 1
        else:
            self._lsn, self._seen_at_lsn = event.lsn, 1
        self._complete = raw.id is not None
        if raw.id is not None:
            self.last_event_id = raw.id
        return event

