"""Pure compute on numpy: collections with a recent HNSW tier and historical IVF segments,
payload indexes, filters, scoring, schemas."""

from .collection import EXACT_FILTER_LIMIT, Collection, CollectionSnapshot, MigrationPlan
from .errors import (
    CollectionExists, CollectionNotFound, DimensionMismatch, IndexError_, InvalidFilter,
    InvalidRecord, RecordNotFound, SearchTimeout,
)
from .filters import (
    DEFAULT_FILTER_LIMITS, FilterLimits, Predicate, check_filter_size, check_time, compile_filter, parse_datetime,
    time_limit,
)
from .ivf import Codebook, IvfParams
from .records import (
    MAX_DIMENSION, MAX_ID_BYTES, MAX_K, MAX_METADATA_BYTES, METRICS, PAYLOAD_TYPES, QUANTIZERS,
    Batch, CollectionConfig, Hit, ItemError, RawItem, check_same_definition, normalize_id,
    parse_timestamp, prepare_batch, prepare_query, prepare_vectors,
)
from .schema import SCHEMAS, validate_video_nft
from .search import SearchResult, SearchSpec
from .segment import SealedSegment

__all__ = [
    "DEFAULT_FILTER_LIMITS", "EXACT_FILTER_LIMIT", "FilterLimits", "SearchTimeout", "check_filter_size", "check_time",
    "time_limit", "MAX_DIMENSION", "MAX_ID_BYTES", "MAX_K", "MAX_METADATA_BYTES", "METRICS",
    "PAYLOAD_TYPES", "QUANTIZERS", "SCHEMAS", "Batch", "Collection", "CollectionConfig",
    "Codebook", "CollectionExists", "CollectionNotFound", "CollectionSnapshot", "DimensionMismatch", "Hit",
    "IndexError_", "InvalidFilter", "IvfParams", "InvalidRecord", "ItemError", "MigrationPlan", "Predicate", "RawItem",
    "RecordNotFound", "SealedSegment", "SearchResult", "SearchSpec", "check_same_definition", "compile_filter", "normalize_id",
    "parse_datetime", "parse_timestamp", "prepare_batch", "prepare_query", "prepare_vectors", "validate_video_nft",
]
