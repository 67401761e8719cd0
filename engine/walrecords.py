"""WAL records: typed, versioned, encoded and decoded in this one place.

Every record is a tagged :mod:`msgspec` struct (the tag, ``op``, names the operation; ``c``
names the collection), stored as a CBOR map. Format 2 (this release on) adds ``"fmt": 2``
to the map; format 1 (releases up to 2026-12-07) wrote the same maps without it, so old
write-ahead logs replay unchanged. A record of a newer format is refused, not guessed at.

A frame that passes its CRC can still hold a record this version cannot apply (written by
a bug, or forged). Decoding then raises WalCorrupt naming the LSN and the field, never a
``KeyError`` from deep inside an apply, and recovery stops there instead of skipping it.
Sizes that depend on the collection (the vector dimension) are checked when applied.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import cbor2
import msgspec
from s5vec.storage import WalCorrupt
from s5vec.storage.wal import Damage

FORMAT: Final = 2
"""Written by this release. 1: the same CBOR maps without ``fmt``."""
_FLOAT32: Final = 4
_FLOAT64: Final = 8


class Record(msgspec.Struct, tag_field="op", frozen=True):
    """One logged operation on collection ``c``."""

    c: str


class Create(Record, tag="create", frozen=True):
    config: dict[str, Any]


class Drop(Record, tag="drop", frozen=True):
    pass


class Meta(Record, tag="meta", frozen=True):
    """Replace record ``id``'s metadata by ``m`` (a merge patch is logged merged)."""

    id: str
    m: dict[str, Any]


class Upsert(Record, tag="upsert", frozen=True):
    """``ids`` with their float32 vectors (``v``, row-major), metadata and float64 timestamps."""

    ids: list[str]
    v: bytes
    m: list[dict[str, Any]]
    t: bytes


class Delete(Record, tag="delete", frozen=True):
    ids: list[str]


class Lost(Record, tag="lost", frozen=True):
    """An LSN whose record was unreadable and set aside by ``s5vec wal salvage``."""

    aside: str = ""
    segment: str = ""
    start: int = 0
    end: int = 0
    salvaged_at: float = 0.0


WalRecord = Create | Drop | Meta | Upsert | Delete | Lost
OPS: Final = tuple(cls.__struct_config__.tag for cls in (Create, Drop, Meta, Upsert, Delete, Lost))


def encode_record(record: WalRecord) -> bytes:
    """The WAL payload of ``record`` (format :data:`FORMAT`)."""
    fields = msgspec.structs.asdict(record)
    return cbor2.dumps({"fmt": FORMAT, "op": record.__struct_config__.tag, **fields})


def _fail(lsn: int, message: str) -> WalCorrupt:
    return WalCorrupt(f"WAL record {lsn}: {message}")


def _field_of(exc: msgspec.ValidationError) -> str:
    """The top-level field a msgspec validation error is about."""
    text = str(exc)
    if "missing required field `" in text:
        return text.split("missing required field `", 1)[1].split("`", 1)[0]
    return text.rpartition("`$.")[2].split("`")[0].split("[")[0].split(".")[0] or "?"


def decode_record(lsn: int, payload: bytes) -> WalRecord:
    """The record a WAL payload holds (either format), its shape checked for its ``op``.

    Raises WalCorrupt naming ``lsn`` and what is wrong; nothing else."""
    try:
        raw = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise _fail(lsn, f"payload is not CBOR ({exc})") from None
    if not isinstance(raw, dict):
        raise _fail(lsn, f"payload is a {type(raw).__name__}, not a map")
    fmt = raw.pop("fmt", 1)
    if fmt not in (1, FORMAT):
        raise _fail(lsn, f"format {fmt!r} is not one this release reads (1 or {FORMAT}): written by a newer s5vec?")
    if raw.get("op") not in OPS:
        raise _fail(lsn, f"unknown operation {raw.get('op')!r}")
    try:
        record: WalRecord = msgspec.convert(raw, WalRecord)
    except msgspec.ValidationError as exc:
        raise _fail(lsn, f"field {_field_of(exc)!r} is wrong ({exc})") from None
    if isinstance(record, Upsert):
        n = len(record.ids)
        if len(record.m) != n:
            raise _fail(lsn, f"field 'm' must be a list of {n} metadata maps")
        if len(record.t) != _FLOAT64 * n:
            raise _fail(lsn, f"field 't' holds {len(record.t)} bytes, not {_FLOAT64 * n}")
        if len(record.v) % _FLOAT32 or (n and len(record.v) % (_FLOAT32 * n)) or (not n and record.v):
            raise _fail(lsn, f"field 'v' holds {len(record.v)} bytes: not {n} float32 vectors")
    return record


def lost_record(lsn: int, damage: Damage, saved: Path) -> bytes:
    """The payload ``s5vec wal salvage`` writes in place of the unreadable record ``lsn``:
    replay applies nothing and logs where the damaged bytes were kept."""
    return encode_record(Lost(c="", aside=str(saved), segment=damage.segment.name, start=damage.start,
                              end=damage.end, salvaged_at=time.time()))
