"""A minimal HTTP/1.1 keep-alive client for the load generators.

The benchmark machine has 2 cores and the load generator shares them with the server it
measures, so the client's own cost per request is part of every figure.  aiohttp's client
spends ~100 us of CPU per request (headers objects, cookie jar, tracing hooks, a response
object); this one writes a request prepared once and reads back a status line, the
headers it needs and the body: one ``write`` and two or three ``read`` calls on an asyncio
stream.  Both servers of a comparison are driven by the same client.

Only what the benchmarks send is supported: one request at a time per connection (no
pipelining), ``Content-Length`` or ``chunked`` responses, ``Connection: close`` honoured
by reconnecting.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
"""The stream limit: a response head longer than this is an error."""


class HttpError(RuntimeError):
    """The server's answer could not be read as HTTP/1.1."""


def prepare_post(url: str, body: bytes, content_type: str = "application/json") -> bytes:
    """The bytes of one ``POST url`` request carrying ``body``."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("ascii") + body


class KeepAlive:
    """One keep-alive connection to the host of ``url``; :meth:`send` is not re-entrant."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"url: only http://host:port URLs are supported, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a request made by :func:`prepare_post`; returns (status, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER_BYTES)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError(f"response headers longer than {reader._limit} bytes") from exc  # noqa: SLF001
        except asyncio.IncompleteReadError as exc:
            await self.close()
            raise HttpError("connection closed before a response") from exc
        status, length, chunked, close = _parse_head(head)
        if chunked:
            body = await _read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            body = await reader.read()
            close = True
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


@dataclass
class LoadResult:
    """One timed run of :class:`LoadPool`."""

    first: list[bytes | None]  # each body's answer on the first pass (None where it failed)
    latencies: list[float] = field(default_factory=list)  # seconds, request written -> body read
    failures: int = 0  # answers other than 200
    errors: list[str] = field(default_factory=list)  # the first 10 of them
    elapsed: float = 0.0  # start -> last answer


class LoadPool:
    """``clients`` keep-alive connections, each sending one request at a time, cycling over
    ``bodies`` POSTed to ``endpoint``; the one load loop of the benchmarks' generators."""

    def __init__(self, endpoint: str, bodies: list[bytes], clients: int) -> None:
        if not bodies or clients < 1:
            raise ValueError("bodies: need at least one body and one client")
        self._requests = [prepare_post(endpoint, body) for body in bodies]
        self._connections = [KeepAlive(endpoint) for _ in range(clients)]

    async def __aenter__(self) -> LoadPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._connections:
            await conn.close()

    async def warm(self, count: int) -> None:
        """``count`` requests at the same concurrency, not measured."""
        requests, turns = self._requests, iter(range(count))

        async def client(conn: KeepAlive) -> None:
            for i in turns:
                await conn.send(requests[i % len(requests)])

        await asyncio.gather(*(client(conn) for conn in self._connections))

    async def run(self, min_time: float) -> LoadResult:
        """Until every body was sent once and ``min_time`` seconds have passed."""
        requests, clock = self._requests, time.perf_counter
        nq = len(requests)
        result = LoadResult([None] * nq)
        issued = 0
        start = last = clock()

        async def client(conn: KeepAlive) -> None:
            nonlocal issued, last
            while issued < nq or clock() - start < min_time:
                index = issued
                issued += 1
                t = clock()
                status, payload = await conn.send(requests[index % nq])
                last = clock()
                result.latencies.append(last - t)
                if status != 200:
                    result.failures += 1
                    if len(result.errors) < 10:
                        result.errors.append(f"HTTP {status}: {payload[:300].decode(errors='replace')}")
                elif index < nq:
                    result.first[index] = payload

        await asyncio.gather(*(client(conn) for conn in self._connections))
        result.elapsed = last - start
        return result


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length, chunked, connection close) of a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise HttpError(f"bad status code in {lines[0][:80]!r}") from None
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            close = value.strip().lower() == b"close"
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
