"""The load generators' keep-alive client against a real aiohttp server: lengths, chunked
bodies, error statuses, servers that close the connection, and malformed answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from s5vec_tools.rawhttp import HttpError, KeepAlive, LoadPool, prepare_post


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body[::-1], content_type=request.content_type)


async def chunked(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(0, len(body), 3):
        await response.write(body[i:i + 3])
    await response.write_eof()
    return response


async def closing(request: web.Request) -> web.Response:
    return web.Response(body=b"bye", headers={"Connection": "close"})


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="no such thing")


async def odd(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, status=200 if int(body) % 2 else 503)


@pytest.fixture
async def server(aiohttp_server: Any) -> Any:
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/closing", closing)
    app.router.add_post("/missing", missing)
    app.router.add_post("/odd", odd)
    return await aiohttp_server(app)


async def test_requests_on_one_connection_get_their_own_bodies_back(server: Any) -> None:
    conn = KeepAlive(str(server.make_url("/echo")))
    try:
        for body in (b'{"a": 1}', b"x" * 100_000, b""):
            status, payload = await conn.send(prepare_post(str(server.make_url("/echo")), body))
            assert status == 200 and payload == body[::-1]
        writer = conn._writer
        status, payload = await conn.send(prepare_post(str(server.make_url("/chunked")), b"abcdefgh"))
        assert status == 200 and payload == b"abcdefgh"
        assert conn._writer is writer  # still the same keep-alive connection
    finally:
        await conn.close()


async def test_error_statuses_and_closed_connections(server: Any) -> None:
    conn = KeepAlive(str(server.make_url("/")))
    try:
        status, payload = await conn.send(prepare_post(str(server.make_url("/missing")), b"{}"))
        assert status == 404 and b"no such thing" in payload
        status, payload = await conn.send(prepare_post(str(server.make_url("/closing")), b"{}"))
        assert status == 200 and payload == b"bye" and conn._writer is None
        status, payload = await conn.send(prepare_post(str(server.make_url("/echo")), b"again"))
        assert (status, payload) == (200, b"niaga")  # reconnected
    finally:
        await conn.close()


async def test_a_non_http_answer_is_an_error_naming_it() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    conn = KeepAlive(f"http://127.0.0.1:{port}/x")
    try:
        with pytest.raises(HttpError, match="not an HTTP/1.x status line"):
            await conn.send(prepare_post(f"http://127.0.0.1:{port}/x", b"{}"))
    finally:
        await conn.close()
        srv.close()
        await srv.wait_closed()


def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="only http://host:port"):
        KeepAlive("https://example.org/")
    request = prepare_post("http://127.0.0.1:9/a/b?c=1", b"{}")
    assert request.startswith(b"POST /a/b?c=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert request.endswith(b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}")


async def test_a_load_pool_sends_every_body_and_keeps_each_first_answer(server: Any) -> None:
    bodies = [str(i).encode() for i in range(25)]
    async with LoadPool(str(server.make_url("/odd")), bodies, clients=4) as pool:
        await pool.warm(10)
        run = await pool.run(min_time=0.2)
    assert len(run.latencies) >= 25 and run.elapsed >= 0.2
    assert run.first == [body if int(body) % 2 else None for body in bodies]  # 503s leave no answer
    assert run.failures >= 13 and run.errors[0].startswith("HTTP 503") and len(run.errors) <= 10
    with pytest.raises(ValueError, match="at least one body"):
        LoadPool(str(server.make_url("/odd")), [], clients=1)
