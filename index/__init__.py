"""Pure compute on numpy: collections with an HNSW tier, filters, schemas."""

from .collection import (
    EXACT_FILTER_LIMIT, MAX_DIMENSION, MAX_ID_BYTES, MAX_K, MAX_METADATA_BYTES, METRICS,
    Batch, Collection, CollectionConfig, CollectionSnapshot, Hit, ItemError, RawItem,
    check_same_definition, normalize_id, parse_timestamp, prepare_batch, prepare_vectors,
)
from .errors import (
    CollectionExists, CollectionNotFound, DimensionMismatch, IndexError_, InvalidFilter,
    InvalidRecord, RecordNotFound,
)
from .filters import Predicate, compile_filter, parse_datetime
from .schema import SCHEMAS, validate_video_nft

__all__ = [
    "EXACT_FILTER_LIMIT", "MAX_DIMENSION", "MAX_ID_BYTES", "MAX_K", "MAX_METADATA_BYTES", "METRICS",
    "SCHEMAS", "Batch", "Collection", "CollectionConfig", "CollectionExists", "CollectionNotFound",
    "CollectionSnapshot", "DimensionMismatch", "Hit", "IndexError_", "InvalidFilter", "InvalidRecord",
    "ItemError", "Predicate", "RawItem", "RecordNotFound", "check_same_definition", "compile_filter",
    "normalize_id", "parse_datetime", "parse_timestamp", "prepare_batch", "prepare_vectors",
    "validate_video_nft",
]
