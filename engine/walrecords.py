"""WAL record payloads: the CBOR maps the single writer logs, checked before replay.

A frame that passes its CRC can still hold a record this version cannot apply (written by
a bug, or forged). Recovery must then stop with an error naming the LSN and the field,
never with a ``KeyError`` from deep inside an apply, and never by skipping the record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import cbor2

from s5vec.storage import WalCorrupt
from s5vec.storage.wal import Damage

OPS: Final = ("create", "drop", "meta", "upsert", "delete", "lost")
"""``lost`` marks an LSN whose record was unreadable and set aside by ``s5vec wal salvage``."""
_FLOAT32: Final = 4
_FLOAT64: Final = 8


def _fail(lsn: int, message: str) -> WalCorrupt:
    return WalCorrupt(f"WAL record {lsn}: {message}")


def _str_list(lsn: int, record: dict[Any, Any], key: str) -> list[str]:
    value = record.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(lsn, f"field {key!r} must be a list of strings")
    return value


def _bytes(lsn: int, record: dict[Any, Any], key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise _fail(lsn, f"field {key!r} must be a byte string")
    return value


def decode_record(lsn: int, payload: bytes) -> dict[str, Any]:
    """The record a WAL payload holds, its shape checked for its ``op``.

    Sizes that depend on the collection (the vector dimension) are checked when applied.
    Raises WalCorrupt naming ``lsn`` and what is wrong; nothing else.
    """
    try:
        record = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise _fail(lsn, f"payload is not CBOR ({exc})") from None
    if not isinstance(record, dict):
        raise _fail(lsn, f"payload is a {type(record).__name__}, not a map")
    op, name = record.get("op"), record.get("c")
    if op not in OPS:
        raise _fail(lsn, f"unknown operation {op!r}")
    if not isinstance(name, str):
        raise _fail(lsn, "field 'c' (the collection) must be a string")
    if op == "create" and not isinstance(record.get("config"), dict):
        raise _fail(lsn, "field 'config' must be a map")
    elif op == "meta":
        if not isinstance(record.get("id"), str):
            raise _fail(lsn, "field 'id' must be a string")
        if not isinstance(record.get("m"), dict):
            raise _fail(lsn, "field 'm' must be a map")
    elif op == "delete":
        _str_list(lsn, record, "ids")
    elif op == "upsert":
        ids = _str_list(lsn, record, "ids")
        vectors, stamps = _bytes(lsn, record, "v"), _bytes(lsn, record, "t")
        metadata = record.get("m")
        if not isinstance(metadata, list) or len(metadata) != len(ids):
            raise _fail(lsn, f"field 'm' must be a list of {len(ids)} metadata maps")
        if not all(isinstance(m, dict) for m in metadata):
            raise _fail(lsn, "field 'm' must hold metadata maps")
        if len(stamps) != _FLOAT64 * len(ids):
            raise _fail(lsn, f"field 't' holds {len(stamps)} bytes, not {_FLOAT64 * len(ids)}")
        if len(vectors) % _FLOAT32 or (ids and len(vectors) % (_FLOAT32 * len(ids))) or (not ids and vectors):
            raise _fail(lsn, f"field 'v' holds {len(vectors)} bytes: not {len(ids)} float32 vectors")
    return record


def lost_record(lsn: int, damage: Damage, saved: Path) -> bytes:
    """The payload ``s5vec wal salvage`` writes in place of the unreadable record ``lsn``:
    replay applies nothing and logs where the damaged bytes were kept."""
    return cbor2.dumps({"op": "lost", "c": "", "aside": str(saved), "segment": damage.segment.name,
                        "start": damage.start, "end": damage.end, "salvaged_at": time.time()})
