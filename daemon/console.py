"""The browser console at ``/ui/``: static files shipped inside the package (``ui/``), no
build step and nothing fetched from the internet; the page calls the daemon's own API with
the key typed into it, so it needs no route or scope of its own (the files are public, as
``/health`` is: they hold no data)."""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

routes = web.RouteTableDef()
UI_PATH: Final = "/ui"
_TYPES: Final = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}
# Only this origin's scripts, styles and API: the page cannot be framed or load anything else.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("s5vec.daemon") / "ui" / name).read_bytes()


@routes.get(UI_PATH)
async def ui_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(UI_PATH + "/")


@routes.get(UI_PATH + "/{name:[a-z.]*}")
async def ui_file(request: web.Request) -> web.Response:
    name = request.match_info["name"] or "index.html"
    content_type = _TYPES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=content_type, charset="utf-8", headers=_HEADERS)
