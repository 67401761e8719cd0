"""Reading requests and writing JSON replies, for every HTTP route: body decoding, query
parameters (``flag``, ``count_param``, ``filter_param``) and the bounded-filter check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from s5vec.engine import Database
from s5vec.index import compile_filter

from .errors import RequestInvalid
from .services import SERVICES
from .wire import DECODERS, ENCODER, decode_json


def reply(obj: Any, status: int = 200) -> web.Response:
    """``obj`` as a JSON body that ends with a newline (a shell prompt after ``curl`` starts on its own line)."""
    return web.Response(body=ENCODER.encode(obj) + b"\n", status=status, content_type="application/json")


async def decode(request: web.Request, kind: type[Any]) -> Any:
    body = await request.read()
    if not body:
        raise RequestInvalid("request body is empty; send a JSON object", "body")
    return DECODERS[kind].decode(body)


def flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise RequestInvalid(f"query parameter {name} must be true or false", name)


def count_param(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    """An integer query parameter within ``[low, high]`` (no upper bound when ``high`` is None)."""
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise RequestInvalid(f"query parameter {name} must be an integer", name) from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RequestInvalid(f"query parameter {name} must be {bounds}", name)
    return number


def filter_query(request: web.Request) -> tuple[dict[str, Any] | None, Callable[[Any], bool] | None]:
    """The ``?filter=<JSON object>`` query parameter and its compiled predicate (a bad one is
    a 400 naming ``filter``); ``(None, None)`` without one, and no predicate for ``{}``."""
    if "filter" not in request.query:
        return None, None
    try:
        spec = decode_json(request.query["filter"])
    except msgspec.DecodeError as exc:
        raise RequestInvalid(f"filter must be a JSON object ({exc})", "filter") from None
    if not isinstance(spec, dict):
        raise RequestInvalid("filter must be a JSON object", "filter")
    predicate = compile_filter(spec, request.app[SERVICES].db.config.filter_limits)
    return spec, predicate if spec else None


def filter_param(request: web.Request) -> dict[str, Any] | None:
    """The ``?filter=<JSON object>`` query parameter, compiled once to reject a bad one (400)."""
    return filter_query(request)[0]


class _FilterOnly(msgspec.Struct):
    filter: msgspec.Raw = msgspec.Raw(b"null")


_FILTER_ONLY: Final = msgspec.json.Decoder(_FilterOnly)


def check_filter_bytes(db: Database, raw: bytes) -> None:
    """400 when a request body's ``filter`` is over ``engine.filter_max_bytes``, found without
    decoding it: decoding a 20 MB filter held the event loop for seconds (issue 17)."""
    limit = db.config.filter_max_bytes
    if len(raw) <= limit:
        return
    try:
        size = len(_FILTER_ONLY.decode(raw).filter)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # the body's own decoder names what is wrong
    if size > limit:
        raise RequestInvalid(f"the filter is {size} bytes of JSON, more than engine.filter_max_bytes = {limit}",
                             "filter")
