"""Collection definitions, records as callers send them, and their validation."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from .errors import CollectionExists, DimensionMismatch, EmbeddingError, InvalidRecord
from .filters import parse_datetime
from .ivf import QUANTIZERS
from .schema import SCHEMAS, video_nft_key

METRICS: Final = ("cosine", "l2", "ip")
NAME_RE: Final = re.compile(r"[a-z0-9_-]{1,64}")
MAX_DIMENSION: Final = 4096
MAX_ID_BYTES: Final = 256
MAX_METADATA_BYTES: Final = 64 * 1024
MAX_METADATA_DEPTH: Final = 32
"""Nesting levels of arrays and objects in metadata: the WAL and blob decoder (cbor2) stops
at 400, so a deeper record would be acknowledged and then make the data dir unreadable."""
MAX_K: Final = 1000
_JSON = msgspec.json.Encoder()
_F32_MAX: Final = float(np.finfo(np.float32).max)
MAX_NORM: Final = float(2 ** 62)
"""Longest vector an l2 or ip collection takes (cosine ones are scaled to unit length): the
graph and IVF compute distances in float32 as sums of squares and products, each at most
(2 * MAX_NORM)**2 = 2**126 < float32 max (~2**128), so no distance can overflow to inf."""
_OVERFLOW: Final = (f"is longer than {MAX_NORM:.4g} (its Euclidean norm): distances to it would overflow "
                    "float32; scale it down")


PAYLOAD_TYPES: Final = ("keyword", "number", "datetime", "bool")
SCHEMA_PAYLOAD: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "video_nft": (("address", "keyword"), ("genre", "keyword"), ("type", "keyword"),
                  ("mintDateTime", "datetime"), ("attributes.runtime", "number"), ("views", "number")),
}
DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """A collection's immutable definition."""

    name: str
    dimension: int
    metric: str = "cosine"
    schema: str | None = None
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    recent_threshold_s: float = 7 * DAY
    window_s: float = DAY
    ivf_quantizer: str = "pq4"
    ivf_nlist: int = 0
    ivf_nprobe: int = 16
    ivf_rerank: int = 4
    payload: tuple[tuple[str, str], ...] = ()
    segment_records: int = 1_000_000
    embedding_model: str | None = None  # sentence-transformers model for search by text (index/embed.py)
    target_recall: float = 0.95  # recall@10 that calibration (Collection.calibrate) picks settings for

    def validate(self) -> None:
        """Raise InvalidRecord naming the first bad field."""
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise InvalidRecord("name", "must match [a-z0-9_-]{1,64}")
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or not 1 <= self.dimension <= MAX_DIMENSION:
            raise InvalidRecord("dimension", f"must be an integer from 1 to {MAX_DIMENSION}")
        if self.metric not in METRICS:
            raise InvalidRecord("metric", f"must be one of {', '.join(METRICS)}")
        if self.schema is not None and self.schema not in SCHEMAS:
            raise InvalidRecord("schema", f"unknown schema; known: {', '.join(SCHEMAS)}")
        if not 2 <= self.hnsw_m <= 128:
            raise InvalidRecord("hnsw_m", "must be from 2 to 128")
        if not 8 <= self.ef_construction <= 2000:
            raise InvalidRecord("ef_construction", "must be from 8 to 2000")
        if not 1 <= self.ef_search <= 5000:
            raise InvalidRecord("ef_search", "must be from 1 to 5000")
        if not 0 < self.recent_threshold_s:
            raise InvalidRecord("recent_threshold_s", "must be positive")
        if not 60 <= self.window_s:
            raise InvalidRecord("window_s", "must be at least 60 seconds")
        if self.ivf_quantizer not in QUANTIZERS:
            raise InvalidRecord("ivf_quantizer", f"must be one of {', '.join(QUANTIZERS)}")
        if self.ivf_nlist < 0 or not 1 <= self.ivf_nprobe <= 65536 or not 1 <= self.ivf_rerank <= 100:
            raise InvalidRecord("ivf", "nlist >= 0 (0 = auto), nprobe 1..65536, rerank 1..100")
        if not 1 <= self.segment_records <= 10_000_000:
            raise InvalidRecord("segment_records", "must be from 1 to 10,000,000")
        if self.embedding_model is not None and (
                not isinstance(self.embedding_model, str) or not 1 <= len(self.embedding_model) <= 1024):
            raise InvalidRecord("embedding_model", "must be a model directory or an installed model package name")
        if (isinstance(self.target_recall, bool) or not isinstance(self.target_recall, (int, float))
                or not 0 < self.target_recall <= 1):
            raise InvalidRecord("target_recall", "must be a number above 0 and at most 1")
        for path, kind in self.payload:
            if not isinstance(path, str) or not path or kind not in PAYLOAD_TYPES:
                raise InvalidRecord("payload", f"{path!r}: type must be one of {', '.join(PAYLOAD_TYPES)}")

    @property
    def payload_fields(self) -> dict[str, str]:
        """Declared payload indexes plus the schema's defaults (declared wins)."""
        fields = dict(SCHEMA_PAYLOAD.get(self.schema or "", ()))
        fields.update(dict(self.payload))
        return fields

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]
        out["payload"] = [list(p) for p in self.payload]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CollectionConfig:
        values = {k: v for k, v in raw.items() if k in cls.__slots__}  # type: ignore[attr-defined]
        values["payload"] = tuple(tuple(p) for p in values.get("payload", ()))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class RawItem:
    """An upsert as the caller sent it, before validation."""

    id: str | int | None
    vector: Sequence[float] | np.ndarray | None
    metadata: dict[str, Any] | None = None
    timestamp: str | float | int | None = None
    text: str | None = None  # instead of ``vector``: embedded by the collection's model (Database.upsert)


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one item of a batch was rejected."""

    index: int
    id: str | None
    code: str
    message: str


@dataclass(slots=True)
class Batch:
    """Validated upserts, ready for the WAL and for :meth:`Collection.apply_upsert`."""

    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class Hit(msgspec.Struct, gc=False):
    """One search result or fetched record. A msgspec Struct rather than a dataclass: it is
    built ten times per search on the hot path, and constructs in a third of the time.
    Untracked by the garbage collector (``gc=False``): a hit never refers back to itself.
    Copy with ``msgspec.structs.replace``."""

    id: str
    distance: float
    score: float
    metadata: dict[str, Any] | None = None
    vector: np.ndarray | None = None
    timestamp: float | None = None


def parse_timestamp(value: str | float | int | None, now: float) -> float:
    """Caller timestamp (ISO 8601 or Unix seconds; > 1e11 means milliseconds) → seconds."""
    if value is None:
        return now
    if isinstance(value, bool):
        raise InvalidRecord("timestamp", "must be an ISO 8601 string or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        if not math.isfinite(seconds):
            raise InvalidRecord("timestamp", "must be finite")
        return seconds
    parsed = parse_datetime(value)
    if parsed is None:
        raise InvalidRecord("timestamp", f"{value[:40]!r} is not an ISO 8601 date-time")
    return parsed.timestamp()


def normalize_id(value: str | int | None) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidRecord("id", "is required (string or integer)")
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str) or not text:
        raise InvalidRecord("id", "must be a non-empty string or an integer")
    if len(text.encode()) > MAX_ID_BYTES:
        raise InvalidRecord("id", f"is longer than {MAX_ID_BYTES} bytes")
    return text


def prepare_vectors(config: CollectionConfig, rows: np.ndarray) -> np.ndarray:
    """Check shape and values of float32 rows; normalise for cosine. Raises on bad input."""
    if rows.ndim != 2 or rows.shape[1] != config.dimension:
        got = rows.shape[-1] if rows.ndim else 0
        raise DimensionMismatch(f"vector has {got} dimensions, collection {config.name!r} has {config.dimension}")
    if not np.isfinite(rows).all():
        raise InvalidRecord("vector", "contains NaN or infinite values (or values beyond float32 range)")
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    if config.metric == "cosine":
        if (norms == 0).any():
            raise InvalidRecord("vector", "has zero length; cosine similarity is undefined")
        rows = rows / norms[:, None]
    elif (norms > MAX_NORM).any():
        raise InvalidRecord("vector", _OVERFLOW)
    return np.ascontiguousarray(rows, dtype=np.float32)


def prepare_query(config: CollectionConfig, values: Sequence[float]) -> np.ndarray:
    """One query as a validated float32 row (unit length for cosine), with the same rules
    as :func:`prepare_batch` but a single pass for the search hot path."""
    if not len(values):
        raise InvalidRecord("vector", "is empty")
    row = np.fromiter(values, dtype=np.float64, count=len(values))
    if len(row) != config.dimension:
        raise DimensionMismatch(f"query has {len(row)} dimensions, collection {config.name!r} has {config.dimension}")
    return _checked_row(config, row).astype(np.float32)


def _checked_row(config: CollectionConfig, row: np.ndarray) -> np.ndarray:
    """A float64 row checked for finite float32-range values, scaled in place to unit
    length for cosine. Raises InvalidRecord naming ``vector``."""
    if not float(np.abs(row).max()) <= _F32_MAX:  # also catches NaN
        raise InvalidRecord("vector", "contains NaN or infinite values (or values beyond float32 range)")
    squares = float(np.dot(row, row))
    if config.metric == "cosine":
        if squares == 0.0:
            raise InvalidRecord("vector", "has zero length; cosine similarity is undefined")
        row *= 1.0 / math.sqrt(squares)
    elif squares > MAX_NORM * MAX_NORM:
        raise InvalidRecord("vector", _OVERFLOW)
    return row


def check_metadata_depth(metadata: Any) -> None:
    """Raises InvalidRecord when arrays and objects nest more than MAX_METADATA_DEPTH deep
    (iterative: the input may be deeper than the interpreter's recursion limit)."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_METADATA_DEPTH:
                    raise InvalidRecord("metadata", f"nests arrays and objects more than {MAX_METADATA_DEPTH} "
                                                    "levels deep")
                stack.append((child, depth + 1))


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``target`` with JSON Merge Patch ``patch`` applied (RFC 7396): a ``None`` value deletes
    its key, an object merges into the object under its key (recursively), anything else
    replaces it. Neither argument is modified. Recursion follows ``patch``'s nesting: check
    its depth first (:func:`check_metadata_depth`)."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            merged[key] = value
    return merged


def _prepare_one(config: CollectionConfig, item: RawItem, now: float) -> tuple[str, np.ndarray, dict[str, Any], float]:
    metadata = item.metadata if item.metadata is not None else {}
    if not isinstance(metadata, dict):
        raise InvalidRecord("metadata", "must be a JSON object")
    if config.schema is not None:
        metadata = SCHEMAS[config.schema](metadata)
    if config.schema == "video_nft" and item.id is None:
        record_id = video_nft_key(metadata)
    else:
        record_id = normalize_id(item.id)
        if config.schema == "video_nft" and record_id != video_nft_key(metadata):
            raise InvalidRecord("id", f"must be '<address>:<id>' ({video_nft_key(metadata)!r}) or omitted")
    check_metadata_depth(metadata)
    if len(_JSON.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRecord("metadata", f"is larger than {MAX_METADATA_BYTES} bytes encoded")
    vector = item.vector
    if vector is None or item.text is not None:
        raise _no_vector(config, item)
    if isinstance(vector, np.ndarray):
        if vector.ndim != 1:
            raise InvalidRecord("vector", "must be a flat array of numbers")
        row = vector.astype(np.float64)
    else:
        if len(vector) == 0:
            raise InvalidRecord("vector", "is empty")
        try:
            row = np.fromiter(vector, dtype=np.float64, count=len(vector))
        except (TypeError, ValueError):
            raise InvalidRecord("vector", "must be an array of numbers") from None
    if len(row) != config.dimension:
        raise DimensionMismatch(f"vector has {len(row)} dimensions, collection {config.name!r} has {config.dimension}")
    return record_id, row, metadata, parse_timestamp(item.timestamp, now)


def _no_vector(config: CollectionConfig, item: RawItem) -> InvalidRecord:
    """Why an item that reached validation without a vector, or with both, is refused (the
    engine replaces ``text`` by its embedding before validation when it can)."""
    if item.vector is None and item.text is None:
        return InvalidRecord("vector", "is required" + (" (or 'text')" if config.embedding_model else ""))
    if item.vector is not None:
        return InvalidRecord("text", "send either 'vector' or 'text', not both")
    if config.embedding_model is None:
        return EmbeddingError("text", f"collection {config.name!r} has no embedding_model; send 'vector', "
                                      "or create the collection with an embedding_model")
    return EmbeddingError("text", "was not embedded")


def prepare_batch(config: CollectionConfig, items: Sequence[RawItem]) -> tuple[Batch, list[ItemError]]:
    """Validate ``items``; the good ones form the batch, the bad ones come back as errors.

    Pure function, safe on any thread. A later item with the same id wins. Vector
    checks (finite, float32 range, non-zero for cosine) run once over the whole batch.
    """
    now = time.time()
    if len(items) == 1:  # single-record writes (REST, WebSocket) skip the batch machinery
        return _prepare_single(config, items[0], now)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    metas: list[dict[str, Any]] = []
    stamps: list[float] = []
    positions: list[int] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            record_id, row, meta, stamp = _prepare_one(config, item, now)
        except EmbeddingError as exc:
            errors.append(ItemError(index, _safe_id(item.id), "embedding_error", str(exc)))
            continue
        except InvalidRecord as exc:
            errors.append(ItemError(index, _safe_id(item.id), "invalid_request", str(exc)))
            continue
        except DimensionMismatch as exc:
            errors.append(ItemError(index, _safe_id(item.id), "dimension_mismatch", str(exc)))
            continue
        ids.append(record_id)
        rows.append(row)
        metas.append(meta)
        stamps.append(stamp)
        positions.append(index)
    if not rows:
        return Batch([], np.zeros((0, config.dimension), np.float32), [], np.zeros(0)), errors
    matrix = np.stack(rows)
    keep = np.abs(matrix).max(axis=1) <= _F32_MAX  # False for NaN too
    reason = "contains NaN or infinite values (or values beyond float32 range)"
    squares = np.einsum("ij,ij->i", np.where(keep[:, None], matrix, 0.0), np.where(keep[:, None], matrix, 0.0))
    if config.metric == "cosine":
        zero = keep & (squares == 0.0)
        if zero.any():
            keep &= ~zero
        matrix = matrix / np.sqrt(np.where(squares > 0, squares, 1.0))[:, None]
    else:
        keep &= squares <= MAX_NORM * MAX_NORM
    if not keep.all():
        for n in np.flatnonzero(~keep).tolist():
            message = reason if not np.isfinite(rows[n]).all() or np.abs(rows[n]).max() > _F32_MAX \
                else _OVERFLOW if config.metric != "cosine" else "has zero length; cosine similarity is undefined"
            errors.append(ItemError(positions[n], ids[n], "invalid_request", f"vector: {message}"))
        good = np.flatnonzero(keep).tolist()
        ids, metas, stamps = [ids[n] for n in good], [metas[n] for n in good], [stamps[n] for n in good]
        matrix = matrix[keep]
        errors.sort(key=lambda e: e.index)
    vectors = np.ascontiguousarray(matrix, dtype=np.float32)
    return Batch(ids, vectors, metas, np.asarray(stamps, dtype=np.float64)), errors


def _prepare_single(config: CollectionConfig, item: RawItem, now: float) -> tuple[Batch, list[ItemError]]:
    """:func:`prepare_batch` of one item: the same checks and errors in one pass over the row."""
    try:
        record_id, row, meta, stamp = _prepare_one(config, item, now)
        row = _checked_row(config, row)
    except EmbeddingError as exc:
        error = ItemError(0, _safe_id(item.id), "embedding_error", str(exc))
    except InvalidRecord as exc:
        error = ItemError(0, _safe_id(item.id), "invalid_request", str(exc))
    except DimensionMismatch as exc:
        error = ItemError(0, _safe_id(item.id), "dimension_mismatch", str(exc))
    else:
        vectors = row.astype(np.float32).reshape(1, config.dimension)
        return Batch([record_id], vectors, [meta], np.array([stamp], dtype=np.float64)), []
    return Batch([], np.zeros((0, config.dimension), np.float32), [], np.zeros(0)), [error]


def _safe_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value[:MAX_ID_BYTES] if isinstance(value, str) else None



# CollectionConfig's fields as the create request spells them
_API_NAMES: Final = {"hnsw_m": "hnsw.m", "ef_construction": "hnsw.ef_construction", "ef_search": "hnsw.ef_search",
                     "ivf_quantizer": "ivf.quantizer", "ivf_nlist": "ivf.nlist", "ivf_nprobe": "ivf.nprobe",
                     "ivf_rerank": "ivf.rerank", "payload": "payload_indexes"}


def definition_conflict(existing: CollectionConfig, wanted: CollectionConfig) -> CollectionExists:
    """The CollectionExists for a create of ``wanted`` where ``existing`` is: it names every
    setting that differs, with the existing value, and the first one as the field."""
    differ = [f.name for f in dataclasses.fields(CollectionConfig)
              if getattr(existing, f.name) != getattr(wanted, f.name)]

    def shown(value: object) -> str:
        return json.dumps(dict(value) if isinstance(value, tuple) else value)

    details = "; ".join(f"{_API_NAMES.get(n, n)} is {shown(getattr(existing, n))}, not {shown(getattr(wanted, n))}"
                        for n in differ)
    return CollectionExists(f"collection {existing.name!r} exists with a different definition: {details} "
                            f"(drop it first, or create it as it is)",
                            _API_NAMES.get(differ[0], differ[0]) if differ else None)


def check_same_definition(existing: CollectionConfig, wanted: CollectionConfig) -> None:
    """Raise CollectionExists if ``wanted`` differs from ``existing``."""
    if existing != wanted:
        raise definition_conflict(existing, wanted)
