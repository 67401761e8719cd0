"""Typed wire messages, decoded and validated in one place (msgspec)."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from s5vec.index import MAX_DIMENSION, MAX_K
from s5vec.index.scoring import ScoringSpec

K = Annotated[int, Meta(ge=1, le=MAX_K)]
Ef = Annotated[int, Meta(ge=1, le=5000)]
MAX_BATCH: Final = 10_000


class VectorIn(Struct, forbid_unknown_fields=True):
    """One record to upsert."""

    vector: list[float]
    id: str | int | None = None
    metadata: dict[str, Any] | None = None
    timestamp: str | float | None = None


class BatchIn(Struct, forbid_unknown_fields=True):
    """Items are decoded one by one so one bad item does not sink the batch."""

    vectors: list[msgspec.Raw]


class SearchOptions(Struct, forbid_unknown_fields=True):
    hnsw_ef: Ef | None = None
    ivf_nprobe: Annotated[int, Meta(ge=1, le=65536)] | None = None
    include_metadata: bool = True
    include_vector: bool = False
    score_threshold: float | None = None
    search_recent: bool = True
    search_historical: bool = True
    timeout_ms: Annotated[float, Meta(gt=0, le=600_000)] | None = None
    merge_strategy: Literal["take_best", "average", "weighted"] = "take_best"
    tier_weights: Annotated[list[float], Meta(min_length=2, max_length=2)] | None = None
    scoring: ScoringSpec | None = None


class SearchIn(Struct, forbid_unknown_fields=True):
    vector: list[float]
    k: K = 10
    filter: dict[str, Any] | None = None
    options: SearchOptions = msgspec.field(default_factory=SearchOptions)


class IvfIn(Struct, forbid_unknown_fields=True):
    quantizer: Literal["sq8", "pq", "flat"] = "sq8"
    nlist: Annotated[int, Meta(ge=0)] = 0
    nprobe: Annotated[int, Meta(ge=1, le=65536)] = 16
    rerank: Annotated[int, Meta(ge=1, le=100)] = 4


class HnswIn(Struct, forbid_unknown_fields=True):
    m: Annotated[int, Meta(ge=2, le=128)] = 16
    ef_construction: Annotated[int, Meta(ge=8, le=2000)] = 200
    ef_search: Ef = 64


class CollectionIn(Struct, forbid_unknown_fields=True):
    name: str
    dimension: Annotated[int, Meta(ge=1, le=MAX_DIMENSION)]
    metric: str = "cosine"
    schema: str | None = None
    hnsw: HnswIn = msgspec.field(default_factory=HnswIn)
    ivf: IvfIn = msgspec.field(default_factory=IvfIn)
    recent_threshold_s: Annotated[float, Meta(gt=0)] = 7 * 86_400.0
    window_s: Annotated[float, Meta(ge=60)] = 86_400.0
    segment_records: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    payload_indexes: dict[str, Literal["keyword", "number", "datetime", "bool"]] = msgspec.field(default_factory=dict)


class TuneIn(Struct, forbid_unknown_fields=True):
    target_recall: Annotated[float, Meta(gt=0, le=1)] = 0.95
    sample: Annotated[int, Meta(ge=10, le=5000)] = 200


class MetadataIn(Struct, forbid_unknown_fields=True):
    metadata: dict[str, Any]


class DeleteIn(Struct, forbid_unknown_fields=True):
    """Exactly one of ``ids`` and ``filter``."""

    ids: list[str | int] | None = None
    filter: dict[str, Any] | None = None


class SearchResult(Struct, omit_defaults=True):
    id: str
    distance: float
    score: float
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class SearchOut(Struct):
    results: list[SearchResult]
    count: int
    search_time_ms: float
    partial: bool = False
    cached: bool = False


class ItemErrorOut(Struct):
    index: int
    id: str | None
    error: dict[str, str]


class BatchOut(Struct):
    successful: int
    failed: int
    errors: list[ItemErrorOut]


class RecordOut(Struct, omit_defaults=True):
    id: str
    metadata: dict[str, Any]
    timestamp: float
    vector: list[float] | None = None


class ErrorBody(Struct):
    code: str
    message: str
    field: str | None = None


class ErrorOut(Struct):
    error: ErrorBody


DECODERS: Final = {
    VectorIn: msgspec.json.Decoder(VectorIn), BatchIn: msgspec.json.Decoder(BatchIn),
    SearchIn: msgspec.json.Decoder(SearchIn), CollectionIn: msgspec.json.Decoder(CollectionIn),
    DeleteIn: msgspec.json.Decoder(DeleteIn), MetadataIn: msgspec.json.Decoder(MetadataIn),
    TuneIn: msgspec.json.Decoder(TuneIn),
}
ENCODER: Final = msgspec.json.Encoder()
