"""The HTTP server under the application: aiohttp's runner with one change to its connection
handler, so that requests its HTTP parser rejects (a header with a stray byte, a request
line or header over the limit) get the daemon's JSON error shape and a one-line log
without header values, instead of a ``text/plain`` echo of the bad line and an ERROR
traceback holding it (an ``Authorization`` header included). Those requests never reach
the middlewares: aiohttp answers them from ``RequestHandler.handle_error``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .errors import MAX_HEADER_BYTES, MAX_REQUEST_LINE_BYTES, protocol_error


class _RequestHandler(RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's own: nothing can follow a sent status line
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = protocol_error(request, status, exc)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class DaemonRunner(web.AppRunner):
    """A ``web.AppRunner`` whose connections answer parser errors in the JSON error shape.
    Request line up to ``MAX_REQUEST_LINE_BYTES``, each header up to ``MAX_HEADER_BYTES``."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE_BYTES)
        kwargs.setdefault("max_field_size", MAX_HEADER_BYTES)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the Server is built inside Application._make_handler with the app's own request
        # factory and handler arguments; only the connection handler it creates differs
        server.__class__ = _Server
        return server
