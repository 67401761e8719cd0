"""Metadata schemas a collection may declare; ``video_nft`` follows the seed's VideoNFTMetadata."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from .errors import InvalidRecord
from .filters import parse_datetime

NFT_TYPES: Final = ("video", "audio", "image", "data")
_SNAKE: Final = re.compile(r"_([a-z0-9])")


def camel_case(key: str) -> str:
    """``mint_date_time`` → ``mintDateTime``; camelCase keys pass unchanged."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), key)


def video_nft_key(metadata: dict[str, Any]) -> str:
    """The unique key ``address:id`` of a validated video NFT record."""
    return f"{metadata['address']}:{metadata['id']}"


def validate_video_nft(metadata: dict[str, Any]) -> dict[str, Any]:
    """Return the metadata with camelCase keys, or raise InvalidRecord naming the field."""
    doc: dict[str, Any] = {}
    for key, value in metadata.items():
        camel = camel_case(key)
        if camel in doc and camel != key:
            raise InvalidRecord(f"metadata.{key}", f"duplicates metadata.{camel}")
        doc[camel] = value
    for field in ("address", "id"):
        value = doc.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and field == "id":
            doc[field] = value = str(value)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"metadata.{field}", "is required and must be a non-empty string")
    genre = doc.get("genre", [])
    if not isinstance(genre, list) or not all(isinstance(g, str) for g in genre):
        raise InvalidRecord("metadata.genre", "must be an array of strings")
    attributes = doc.get("attributes", [])
    if not isinstance(attributes, list):
        raise InvalidRecord("metadata.attributes", "must be an array of {key, value} objects")
    for i, attribute in enumerate(attributes):
        if not isinstance(attribute, dict) or not isinstance(attribute.get("key"), str) or "value" not in attribute:
            raise InvalidRecord(f"metadata.attributes[{i}]", "must be an object with a string key and a value")
    mint = doc.get("mintDateTime")
    if mint is not None and (not isinstance(mint, str) or parse_datetime(mint) is None):
        raise InvalidRecord("metadata.mintDateTime", "must be an ISO 8601 date-time string")
    nft_type = doc.get("type")
    if nft_type is not None and nft_type not in NFT_TYPES:
        raise InvalidRecord("metadata.type", f"must be one of {', '.join(NFT_TYPES)}")
    return doc


SCHEMAS: Final[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "video_nft": validate_video_nft,
}
