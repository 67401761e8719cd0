"""JSON on the wire: encoding of request bodies (numpy arrays included) and URL paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import msgspec

API: Final = "/api/v1"


def _enc_hook(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist):
        return tolist()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise NotImplementedError(f"cannot send a {type(obj).__name__} as JSON")


ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
JSON: Final = msgspec.json.Decoder()


def segment(value: str | int) -> str:
    """One path segment, percent-encoded (ids may hold ``/``, ``?``, spaces ...)."""
    return quote(str(value), safe="")


def search_body(vector: Any, k: int, filter: Mapping[str, Any] | None, options: Mapping[str, Any],
                text: str | None = None) -> dict[str, Any]:
    """A search request body; options left at None are not sent (the server's defaults apply)."""
    body: dict[str, Any] = {"k": k}
    if vector is not None:
        body["vector"] = vector
    if text is not None:
        body["text"] = text
    if filter:
        body["filter"] = filter
    sent = {("hnsw_ef" if name == "ef" else name): value for name, value in options.items() if value is not None}
    if sent:
        body["options"] = sent
    return body


def record_body(id: str | int | None, vector: Any, metadata: Mapping[str, Any] | None,
                timestamp: float | str | None, text: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if vector is not None:
        body["vector"] = vector
    if text is not None:
        body["text"] = text
    if id is not None:
        body["id"] = id
    if metadata is not None:
        body["metadata"] = metadata
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body


def decode(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return JSON.decode(payload)
    except msgspec.DecodeError:
        return payload.decode(errors="replace")[:2000]
