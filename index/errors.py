"""Errors raised by the index layer; the daemon maps them to HTTP statuses."""

from __future__ import annotations


class IndexError_(Exception):  # noqa: N801 - avoid shadowing the builtin IndexError
    """Root of every index-layer failure."""


class InvalidRecord(IndexError_):
    """A record or request breaks a rule; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidFilter(InvalidRecord):
    """A metadata filter is malformed."""

    def __init__(self, message: str) -> None:
        super().__init__("filter", message)


class EmbeddingError(InvalidRecord):
    """Text cannot be embedded: the collection has no ``embedding_model``, the model does not
    load (or the ``embed`` extra is missing), or its output does not fit the collection (422)."""


class DimensionMismatch(IndexError_):
    """A vector's length differs from its collection's dimension."""


class CollectionNotFound(IndexError_):
    """No collection has the requested name."""


class CollectionExists(IndexError_):
    """A collection with that name exists with a different definition; ``field`` names the
    first setting that differs (as the API spells it), when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RecordNotFound(IndexError_):
    """No live record has the requested id."""


class SearchTimeout(IndexError_):
    """A search ran past its time limit and was abandoned (nothing it read is changed)."""
