"""Payload indexes: columns over declared metadata fields that turn a filter into a mask.

A mask always agrees with ``compile_filter`` record for record.  Where the columns
cannot decide a filter exactly — an undeclared field, a field holding values its column
cannot represent ("impure"), an operand the column cannot compare exactly — ``mask``
returns None and the caller falls back to the per-record predicate.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .errors import InvalidRecord
from .filters import compile_filter, parse_datetime, resolve

FIELD_TYPES: Final = ("keyword", "number", "datetime", "bool")

Mask = npt.NDArray[np.bool_]
Labels = npt.NDArray[np.int64]

_FORMAT: Final = 1
_MIN_CAPACITY: Final = 16
# Stale posting entries (from re-set or cleared records) are dropped once they outnumber
# the live ones, so posting lists stay within twice their live size.
_COMPACT_MIN: Final = 1024
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND: Final = dt.timedelta(microseconds=1)
_ORDER: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le,
}


class _Unsupported(Exception):
    """The columns cannot decide this part of a filter exactly."""


def _grown(array: np.ndarray, capacity: int, fill: Any) -> np.ndarray:
    bigger = np.full(capacity, fill, dtype=array.dtype)
    bigger[:len(array)] = array
    return bigger


def _exact_float(value: int | float) -> float:
    """``value`` as a float64 that compares exactly like the Python number."""
    if isinstance(value, float):
        return value
    try:
        as_float = float(value)
    except OverflowError:
        raise _Unsupported from None
    if as_float != value:  # int beyond 2**53 that float64 cannot hold
        raise _Unsupported
    return as_float


def _instant(value: dt.datetime) -> int:
    """Microseconds since the Unix epoch: exact, so it orders exactly like aware datetimes."""
    return (value - _EPOCH) // _MICROSECOND


def _array_part(array: np.ndarray) -> dict[str, Any]:
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"dtype": little.dtype.str, "shape": list(little.shape), "data": little.tobytes()}


def _array_from(part: Any, dtype: Any, length: int | None = None) -> np.ndarray:
    want = np.dtype(dtype)
    if not isinstance(part, Mapping) or not isinstance(part.get("dtype"), str) \
            or np.dtype(part["dtype"]) != want.newbyteorder("<"):
        raise ValueError(f"payload index array must have dtype {want.str}")
    shape = part.get("shape")
    data = part.get("data")
    if not isinstance(shape, list) or len(shape) != 1 or not isinstance(data, bytes):
        raise ValueError("payload index array must be one-dimensional raw bytes")
    if len(data) != shape[0] * want.itemsize or (length is not None and shape[0] != length):
        raise ValueError("payload index array has the wrong length")
    return np.frombuffer(data, dtype=want.newbyteorder("<")).astype(want)


class _Posting:
    """Labels holding one keyword value; entries whose generation is stale are dead."""

    __slots__ = ("gens", "labels", "size")

    def __init__(self, labels: Labels, gens: npt.NDArray[np.uint32]) -> None:
        self.labels = labels
        self.gens = gens
        self.size = len(labels)

    def extend(self, labels: Labels, gens: npt.NDArray[np.uint32]) -> None:
        need = self.size + len(labels)
        if need > len(self.labels):
            capacity = max(need, 2 * len(self.labels), 8)
            self.labels = _grown(self.labels, capacity, 0)
            self.gens = _grown(self.gens, capacity, 0)
        self.labels[self.size:need] = labels
        self.gens[self.size:need] = gens
        self.size = need

    def live(self, gen: npt.NDArray[np.uint32]) -> Labels:
        labels = self.labels[:self.size]
        return labels[gen[labels] == self.gens[:self.size]]


class _Column:
    """One declared field: which records have it at all, which hold null, which are impure."""

    kind = ""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts = path.split(".")
        self.exists = np.zeros(0, dtype=np.bool_)
        self.null = np.zeros(0, dtype=np.bool_)
        self.impure: set[int] = set()

    def grow(self, capacity: int) -> None:
        self.exists = _grown(self.exists, capacity, False)
        self.null = _grown(self.null, capacity, False)

    def forget(self, labels: Labels) -> None:
        self.exists[labels] = False
        self.null[labels] = False
        if self.impure:
            self.impure.difference_update(labels.tolist())

    def assign(self, labels: Labels, docs: Sequence[Mapping[str, Any]], gen: npt.NDArray[np.uint32]) -> None:
        top = self.parts[0] if len(self.parts) == 1 else None
        present: list[int] = []
        for label, doc in zip(labels.tolist(), docs):
            if top is not None and type(doc) is dict:  # resolve()'s answer, minus its overhead
                values = [doc[top]] if top in doc else []
            else:
                values = resolve(doc, self.parts)
            if values:
                present.append(label)
                if not self.store(label, values):
                    self.impure.add(label)
        self.exists[present] = True

    def store(self, label: int, values: list[Any]) -> bool:
        """Record a non-empty resolved value list; False if the column cannot hold it."""
        raise NotImplementedError

    def single(self, label: int, values: list[Any]) -> tuple[bool, Any]:
        """(True, value) for exactly one resolved non-list value; null is recorded here."""
        if len(values) != 1 or (type(values[0]) not in _SCALARS and isinstance(values[0], (list, Mapping))):
            return False, None
        if values[0] is None:
            self.null[label] = True
        return True, values[0]

    def equal(self, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        """Records with a (flattened) value ``_equal`` to ``arg``."""
        raise NotImplementedError

    def equal_any(self, args: list[Any], n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        """Records with a (flattened) value equal to any of ``args`` (``$in``)."""
        found = np.zeros(n, dtype=np.bool_)
        for arg in args:
            found = found | self.equal(arg, n, gen)
        return found

    def ordered(self, op: str, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        """Records with a (flattened) value ``_ordered`` against ``arg``."""
        raise NotImplementedError

    def to_parts(self, high: int, gen: npt.NDArray[np.uint32]) -> dict[str, Any]:
        return {"type": self.kind, "exists": _array_part(self.exists[:high]),
                "null": _array_part(self.null[:high]), "impure": sorted(self.impure)}

    def load(self, parts: Mapping[str, Any], high: int) -> None:
        self.exists = _array_from(parts["exists"], np.bool_, high)
        self.null = _array_from(parts["null"], np.bool_, high)
        impure = parts["impure"]
        if not isinstance(impure, list) or not all(isinstance(i, int) and 0 <= i < high for i in impure):
            raise ValueError(f"payload index {self.path!r}: impure labels out of range")
        self.impure = set(impure)

    def memory_bytes(self) -> int:
        return int(self.exists.nbytes + self.null.nbytes) + 64 * len(self.impure)

    def take(self, labels: Labels, remap: Labels, gen: npt.NDArray[np.uint32]) -> _Column:
        """A column over the records at ``labels`` only, re-addressed 0..len-1 (``remap``
        maps an old label to its new position, -1 elsewhere); new generations are all 0."""
        out = type(self)(self.path)
        out.exists, out.null = self.exists[labels], self.null[labels]
        if self.impure:
            moved = remap[np.fromiter(self.impure, np.int64, len(self.impure))]
            out.impure = set(moved[moved >= 0].tolist())
        self._take_values(out, labels, remap, gen)
        return out

    def _take_values(self, out: Any, labels: Labels, remap: Labels, gen: npt.NDArray[np.uint32]) -> None:
        raise NotImplementedError


class _KeywordColumn(_Column):
    """Strings, or arrays of strings (array membership): an inverted index value → labels."""

    kind = "keyword"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.postings: dict[str, _Posting] = {}
        self.counts = np.zeros(0, dtype=np.int32)  # live posting entries per label
        self.pending: dict[str, list[int]] = {}  # value → labels, filled by store() during assign()
        self.entries = 0
        self.stale = 0

    def grow(self, capacity: int) -> None:
        super().grow(capacity)
        self.counts = _grown(self.counts, capacity, 0)

    def forget(self, labels: Labels) -> None:
        super().forget(labels)
        self.stale += int(self.counts[labels].sum())
        self.counts[labels] = 0

    def assign(self, labels: Labels, docs: Sequence[Mapping[str, Any]], gen: npt.NDArray[np.uint32]) -> None:
        self.pending = {}
        super().assign(labels, docs, gen)
        pending, self.pending = self.pending, {}
        for value, holders in pending.items():
            held = np.array(holders, dtype=np.int64)
            posting = self.postings.get(value)
            if posting is None:
                self.postings[value] = _Posting(held, gen[held])
            else:
                posting.extend(held, gen[held])
            self.entries += len(held)
        if self.stale > max(_COMPACT_MIN, self.entries - self.stale):
            self.compact(gen)

    def store(self, label: int, values: list[Any]) -> bool:
        strings: set[str] = set()
        null = False
        for value in values:
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, str):
                    strings.add(item)
                elif item is None:
                    null = True
                else:  # numbers, bools, objects, nested arrays
                    return False
        self.null[label] = null
        self.counts[label] = len(strings)
        for value in strings:
            self.pending.setdefault(value, []).append(label)
        return True

    def compact(self, gen: npt.NDArray[np.uint32]) -> None:
        for value in list(self.postings):
            live = self.postings[value].live(gen)
            if len(live):
                self.postings[value] = _Posting(live.copy(), gen[live])
            else:
                del self.postings[value]
        self.entries = sum(posting.size for posting in self.postings.values())
        self.stale = 0

    def _take_values(self, out: Any, labels: Labels, remap: Labels, gen: npt.NDArray[np.uint32]) -> None:
        out.counts = self.counts[labels]
        for value, posting in self.postings.items():
            moved = remap[posting.live(gen)]
            moved = np.sort(moved[moved >= 0])
            if len(moved):
                out.postings[value] = _Posting(moved, np.zeros(len(moved), np.uint32))
        out.entries = sum(posting.size for posting in out.postings.values())

    def holders(self, values: Iterable[str], n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        for value in values:
            posting = self.postings.get(value)
            if posting is not None:
                live = posting.live(gen)
                mask[live[live < n] if n < len(gen) else live] = True
        return mask

    def equal(self, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        if isinstance(arg, str):
            return self.holders((arg,), n, gen)
        if arg is None:
            return self.null[:n]
        if isinstance(arg, list):  # a stored array equals an array operand as a whole
            raise _Unsupported
        if isinstance(arg, (int, float, Mapping)):  # never equal to strings, null or arrays
            return np.zeros(n, dtype=np.bool_)
        raise _Unsupported

    def equal_any(self, args: list[Any], n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        found = self.holders([arg for arg in args if isinstance(arg, str)], n, gen)
        for arg in args:
            if not isinstance(arg, str):
                found = found | self.equal(arg, n, gen)
        return found

    def ordered(self, op: str, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        if not isinstance(arg, str):  # numbers never order against strings or null
            return np.zeros(n, dtype=np.bool_)
        # Per distinct value through compile_filter itself: string or ISO-instant order,
        # whichever it picks for this pair.
        check = compile_filter({"v": {op: arg}})
        return self.holders([value for value in self.postings if check({"v": value})], n, gen)

    def to_parts(self, high: int, gen: npt.NDArray[np.uint32]) -> dict[str, Any]:
        values: list[str] = []
        chunks: list[Labels] = []
        for value, posting in self.postings.items():
            live = np.sort(posting.live(gen))
            if len(live):
                values.append(value)
                chunks.append(live)
        offsets = np.cumsum([0] + [len(chunk) for chunk in chunks], dtype=np.int64)
        labels = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return super().to_parts(high, gen) | {
            "values": values, "offsets": _array_part(offsets), "labels": _array_part(labels),
        }

    def load(self, parts: Mapping[str, Any], high: int) -> None:
        super().load(parts, high)
        values = parts["values"]
        offsets = _array_from(parts["offsets"], np.int64)
        labels = _array_from(parts["labels"], np.int64)
        if (not isinstance(values, list) or not all(isinstance(v, str) for v in values)
                or len(set(values)) != len(values)
                or len(offsets) != len(values) + 1 or offsets[0] != 0 or offsets[-1] != len(labels)
                or np.any(np.diff(offsets) <= 0) or np.any((labels < 0) | (labels >= high))):
            raise ValueError(f"payload index {self.path!r}: postings do not match")
        self.postings = {
            value: _Posting(labels[start:end].copy(), np.zeros(end - start, dtype=np.uint32))
            for value, start, end in zip(values, offsets[:-1].tolist(), offsets[1:].tolist())
        }
        self.counts = np.bincount(labels, minlength=high).astype(np.int32)
        self.entries = len(labels)
        self.stale = 0

    def memory_bytes(self) -> int:
        postings = sum(int(p.labels.nbytes + p.gens.nbytes) + sys.getsizeof(v) + 120
                       for v, p in self.postings.items())
        return super().memory_bytes() + int(self.counts.nbytes) + postings


class _ValuesColumn(_Column):
    """A column holding one value per record in ``values`` (of dtype ``dtype``)."""

    dtype: Any = np.float64
    values: np.ndarray

    def _take_values(self, out: Any, labels: Labels, remap: Labels, gen: npt.NDArray[np.uint32]) -> None:
        out.values = self.values[labels]

    def to_parts(self, high: int, gen: npt.NDArray[np.uint32]) -> dict[str, Any]:
        return super().to_parts(high, gen) | {"values": _array_part(self.values[:high])}

    def load(self, parts: Mapping[str, Any], high: int) -> None:
        super().load(parts, high)
        self.values = _array_from(parts["values"], self.dtype, high)

    def memory_bytes(self) -> int:
        return super().memory_bytes() + int(self.values.nbytes)


class _NumberColumn(_ValuesColumn):
    """One int or float per record (never bool) as float64; NaN where absent or null."""

    kind = "number"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.values = np.zeros(0, dtype=np.float64)

    def grow(self, capacity: int) -> None:
        super().grow(capacity)
        self.values = _grown(self.values, capacity, np.nan)

    def forget(self, labels: Labels) -> None:
        super().forget(labels)
        self.values[labels] = np.nan

    def store(self, label: int, values: list[Any]) -> bool:
        ok, value = self.single(label, values)
        if not ok or value is None:
            return ok
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            self.values[label] = _exact_float(value)
        except _Unsupported:
            return False
        return True

    def equal(self, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        if arg is None:
            return self.null[:n]
        if isinstance(arg, bool):
            return np.zeros(n, dtype=np.bool_)
        if isinstance(arg, (int, float)):
            return self.values[:n] == _exact_float(arg)
        if isinstance(arg, (str, list, Mapping)):
            return np.zeros(n, dtype=np.bool_)
        raise _Unsupported

    def ordered(self, op: str, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        if isinstance(arg, (int, float)) and not isinstance(arg, bool):
            result: Mask = _ORDER[op](self.values[:n], _exact_float(arg))  # NaN compares False
            return result
        return np.zeros(n, dtype=np.bool_)



class _DatetimeColumn(_Column):
    """One ISO 8601 string per record: its instant in exact microseconds, and the string
    itself (shared with the record's metadata) because equality is string equality."""

    kind = "datetime"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.has = np.zeros(0, dtype=np.bool_)
        self.instants = np.zeros(0, dtype=np.int64)
        self.raw = np.zeros(0, dtype=object)

    def grow(self, capacity: int) -> None:
        super().grow(capacity)
        self.has = _grown(self.has, capacity, False)
        self.instants = _grown(self.instants, capacity, 0)
        self.raw = _grown(self.raw, capacity, None)

    def forget(self, labels: Labels) -> None:
        super().forget(labels)
        self.has[labels] = False
        self.raw[labels] = None

    def store(self, label: int, values: list[Any]) -> bool:
        ok, value = self.single(label, values)
        if not ok or value is None:
            return ok
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            return False
        self.has[label] = True
        self.instants[label] = _instant(parsed)
        self.raw[label] = value
        return True

    def equal(self, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        if arg is None:
            return self.null[:n]
        if isinstance(arg, str):
            parsed = parse_datetime(arg)
            if parsed is None:  # every stored string parses, so none can equal this one
                return mask
            same = np.flatnonzero(self.has[:n] & (self.instants[:n] == _instant(parsed)))
            mask[same[(self.raw[same] == arg).astype(np.bool_)]] = True
            return mask
        if isinstance(arg, (int, float, list, Mapping)):
            return mask
        raise _Unsupported

    def ordered(self, op: str, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        if not isinstance(arg, str):
            return mask
        parsed = parse_datetime(arg)
        if parsed is not None:
            result: Mask = self.has[:n] & _ORDER[op](self.instants[:n], _instant(parsed))
            return result
        # compile_filter compares as plain strings when the operand is no date-time.
        held = np.flatnonzero(self.has[:n])
        mask[held[_ORDER[op](self.raw[held], arg).astype(np.bool_)]] = True
        return mask

    def _take_values(self, out: Any, labels: Labels, remap: Labels, gen: npt.NDArray[np.uint32]) -> None:
        out.has, out.instants, out.raw = self.has[labels], self.instants[labels], self.raw[labels]

    def to_parts(self, high: int, gen: npt.NDArray[np.uint32]) -> dict[str, Any]:
        held = np.flatnonzero(self.has[:high])
        return super().to_parts(high, gen) | {
            "has": _array_part(self.has[:high]), "instants": _array_part(self.instants[:high]),
            "raw": self.raw[held].tolist(),
        }

    def load(self, parts: Mapping[str, Any], high: int) -> None:
        super().load(parts, high)
        self.has = _array_from(parts["has"], np.bool_, high)
        self.instants = _array_from(parts["instants"], np.int64, high)
        raw = parts["raw"]
        held = np.flatnonzero(self.has)
        if not isinstance(raw, list) or len(raw) != len(held) or not all(isinstance(r, str) for r in raw):
            raise ValueError(f"payload index {self.path!r}: raw date-times do not match")
        self.raw = np.full(high, None, dtype=object)
        self.raw[held] = raw

    def memory_bytes(self) -> int:
        return super().memory_bytes() + int(self.has.nbytes + self.instants.nbytes + self.raw.nbytes)


class _BoolColumn(_ValuesColumn):
    """One bool per record as int8: -1 absent or null, 0 false, 1 true."""

    dtype = np.int8

    kind = "bool"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.values = np.zeros(0, dtype=np.int8)

    def grow(self, capacity: int) -> None:
        super().grow(capacity)
        self.values = _grown(self.values, capacity, -1)

    def forget(self, labels: Labels) -> None:
        super().forget(labels)
        self.values[labels] = -1

    def store(self, label: int, values: list[Any]) -> bool:
        ok, value = self.single(label, values)
        if not ok or value is None:
            return ok
        if not isinstance(value, bool):
            return False
        self.values[label] = int(value)
        return True

    def equal(self, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        if arg is None:
            return self.null[:n]
        if isinstance(arg, bool):  # a bool equals only the same bool, never 0 or 1
            result: Mask = self.values[:n] == int(arg)
            return result
        if isinstance(arg, (int, float, str, list, Mapping)):
            return np.zeros(n, dtype=np.bool_)
        raise _Unsupported

    def ordered(self, op: str, arg: Any, n: int, gen: npt.NDArray[np.uint32]) -> Mask:
        return np.zeros(n, dtype=np.bool_)  # bools and nulls never order



# ------------------------------------------------------------ segment pruning
_BOUNDING: Final = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte"})
_ORDERED_KINDS: Final = frozenset({"number", "datetime"})


@dataclass(frozen=True, slots=True)
class Interval:
    """The values one declared field must hold for a record to match a filter: numbers
    ("number", compared as Python numbers, so exactly) or instants in microseconds
    ("datetime", as the payload index stores them). None: unbounded on that side."""

    kind: str
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    hi_open: bool = False

    def narrowed(self, op: str, value: float) -> Interval:
        """This interval intersected with the values satisfying ``op value``."""
        lo, lo_open, hi, hi_open = self.lo, self.lo_open, self.hi, self.hi_open
        if op in ("$eq", "$gt", "$gte"):
            opened = op == "$gt"
            if lo is None or value > lo:
                lo, lo_open = value, opened
            elif value == lo:
                lo_open = lo_open or opened
        if op in ("$eq", "$lt", "$lte"):
            opened = op == "$lt"
            if hi is None or value < hi:
                hi, hi_open = value, opened
            elif value == hi:
                hi_open = hi_open or opened
        return Interval(self.kind, lo, lo_open, hi, hi_open)

    def meets(self, low: float, high: float) -> bool:
        """Whether some value in the closed range [low, high] lies inside this interval."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and (lo > hi or (lo == hi and (self.lo_open or self.hi_open))):
            return False  # nothing satisfies both sides
        if lo is not None and (high < lo or (high == lo and self.lo_open)):
            return False
        return not (hi is not None and (low > hi or (low == hi and self.hi_open)))


def _operand(kind: str, arg: Any) -> float | None:
    """``arg`` as a value comparable with the column's ``kind``, where a match needs the
    record's value to order against it exactly so; None when no interval follows from it
    (another type, NaN, a string that is no date-time: such operands prune nothing)."""
    if kind == "number":
        if isinstance(arg, bool) or not isinstance(arg, (int, float)) or (isinstance(arg, float) and math.isnan(arg)):
            return None
        return arg
    if isinstance(arg, str):  # datetime: stored strings all parse, and then order as instants
        parsed = parse_datetime(arg)
        return None if parsed is None else _instant(parsed)
    return None


def filter_intervals(spec: Any, fields: Mapping[str, str]) -> dict[str, Interval]:
    """Per declared number/datetime field of ``fields`` (path -> type), the interval a
    single-valued record's field must lie in to match ``spec``: only from the filter's
    top-level conjunction (its fields and ``$and`` lists, nested), from ``$eq`` (or a
    plain value), ``$gt``, ``$gte``, ``$lt`` and ``$lte``. Anything under ``$or``, ``$not``,
    ``$nin``, ... is left out, so each interval is certain, never a guess. A record whose
    field holds an array may match outside it (array membership): :meth:`PayloadIndex.may_match`
    prunes only on columns without such values. Raises InvalidFilter when ``compile_filter``
    does (pruning must not hide a bad filter)."""
    compile_filter(spec, None)
    out: dict[str, Interval] = {}
    stack = [spec]
    while stack:  # no recursion: the filter was size-checked where it came in
        node = stack.pop()
        for key, value in node.items():
            if key == "$and":
                stack.extend(value)
                continue
            kind = fields.get(str(key))
            if kind not in _ORDERED_KINDS:  # $or, $not, keyword and bool fields, undeclared ones
                continue
            if isinstance(value, Mapping) and value and all(str(k).startswith("$") for k in value):
                checks = list(value.items())
            else:
                checks = [("$eq", value)]
            for op, arg in checks:
                if op in _BOUNDING:
                    bound = _operand(kind, arg)
                    if bound is not None:
                        out[str(key)] = out.get(str(key), Interval(kind)).narrowed(op, bound)
    return out


_COLUMNS: Final[dict[str, type[_Column]]] = {
    "keyword": _KeywordColumn, "number": _NumberColumn, "datetime": _DatetimeColumn, "bool": _BoolColumn,
}


class PayloadIndex:
    """Columnar indexes over declared metadata fields (dotted paths allowed, e.g. "attributes.runtime").

    Records live at dense integer labels.  Writers (``set``, ``clear``) need exclusive
    access; ``mask`` only reads, so masks may run concurrently under a readers–writer lock.
    """

    def __init__(self, fields: Mapping[str, str], capacity: int = 0) -> None:
        """Declare ``path → type`` (a type from FIELD_TYPES); raises InvalidRecord naming a bad field."""
        if not isinstance(fields, Mapping):
            raise InvalidRecord("payload_indexes", "must map field paths to types")
        self._columns: dict[str, _Column] = {}
        for path, kind in fields.items():
            if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
                raise InvalidRecord("payload_indexes", f"invalid field path {path!r}")
            if kind not in FIELD_TYPES:
                raise InvalidRecord(f"payload_indexes.{path}",
                                    f"unknown type {kind!r}; known: {', '.join(FIELD_TYPES)}")
            self._columns[path] = _COLUMNS[kind](path)
        self._live = np.zeros(0, dtype=np.bool_)
        self._gen = np.zeros(0, dtype=np.uint32)  # bumped whenever a label is re-set or cleared
        self._high = 0  # one past the highest label ever set
        # path -> (min, max) or None, for bounds(); set() drops it (clear() only shrinks the range)
        self._bounds: dict[str, tuple[float, float] | None] = {}
        self._grow(max(0, int(capacity)))

    @property
    def fields(self) -> dict[str, str]:
        """The declared ``path → type`` map (a copy)."""
        return {path: column.kind for path, column in self._columns.items()}

    def _grow(self, needed: int) -> None:
        if needed <= len(self._live):
            return
        capacity = max(needed, 2 * len(self._live), _MIN_CAPACITY)
        self._live = _grown(self._live, capacity, False)
        self._gen = _grown(self._gen, capacity, 0)
        for column in self._columns.values():
            column.grow(capacity)

    @staticmethod
    def _labels(labels: Sequence[int] | np.ndarray) -> Labels:
        array = np.asarray(labels)
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or array.min() < 0:
            raise ValueError("labels must be a flat sequence of integers >= 0")
        return array.astype(np.int64)

    def _forget(self, labels: Labels) -> None:
        for column in self._columns.values():
            column.forget(labels)
        self._gen[labels] += 1
        self._live[labels] = False

    def set(self, labels: Sequence[int] | np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        """(Re)index each record's metadata at its label; for a repeated label the last one wins.

        Raises ValueError if labels are negative or do not pair up with the metadata.
        """
        array = self._labels(labels)
        if len(array) != len(metadata):
            raise ValueError(f"{len(array)} labels for {len(metadata)} metadata records")
        if not len(array):
            return
        last = {label: i for i, label in enumerate(array.tolist())}
        unique = np.fromiter(last, dtype=np.int64, count=len(last))
        docs = [metadata[i] for i in last.values()]
        self._bounds = {}
        self._grow(int(unique.max()) + 1)
        self._forget(unique)
        self._live[unique] = True
        for column in self._columns.values():
            column.assign(unique, docs, self._gen)
        self._high = max(self._high, int(unique.max()) + 1)

    def take(self, labels: Sequence[int] | np.ndarray) -> PayloadIndex:
        """A new index over the records at ``labels`` (distinct), addressed 0..len-1 in that
        order: what a migration needs for a segment, without re-reading any document."""
        array = self._labels(labels)
        if len(array) and int(array.max()) >= len(self._live):
            raise ValueError("labels beyond the index's capacity")
        n = len(array)
        out = PayloadIndex(self.fields, 0)
        remap = np.full(len(self._live), -1, np.int64)
        remap[array] = np.arange(n)
        out._live = self._live[array]
        out._gen = np.zeros(n, np.uint32)
        out._high = n
        # Cleared labels are already blank in every column (and stale in the postings).
        out._columns = {path: column.take(array, remap, self._gen) for path, column in self._columns.items()}
        return out

    def clear(self, labels: Sequence[int] | np.ndarray) -> None:
        """Forget records (deleted); labels never set are ignored."""
        array = self._labels(labels)
        array = np.unique(array[array < self._high])
        if len(array):
            self._forget(array)
            for column in self._columns.values():
                if isinstance(column, _KeywordColumn) and column.stale > max(
                        _COMPACT_MIN, column.entries - column.stale):
                    column.compact(self._gen)

    def bounds(self, path: str) -> tuple[float, float] | None:
        """(min, max) of the values the declared number or datetime field ``path`` holds
        (datetimes as instants, microseconds since the epoch); None when no record holds one.
        Values the column cannot represent (arrays, other types: "impure") are not counted.
        Computed once and kept until the next ``set``; deletes only narrow the true range,
        so a kept range stays a valid bound. Raises KeyError for a field not declared as
        number or datetime. Safe beside concurrent readers (they compute the same value)."""
        try:
            return self._bounds[path]
        except KeyError:
            pass
        column = self._columns.get(path)
        found: tuple[float, float] | None = None
        if isinstance(column, _NumberColumn):
            values = column.values[:self._high]
            values = values[~np.isnan(values)]  # absent, null, deleted (and a stored NaN, which never matches)
            if len(values):
                found = (values.min().item(), values.max().item())
        elif isinstance(column, _DatetimeColumn):
            instants = column.instants[:self._high][column.has[:self._high]]
            if len(instants):
                found = (int(instants.min()), int(instants.max()))
        else:
            raise KeyError(f"{path!r} is not a declared number or datetime field")
        self._bounds[path] = found
        return found

    def may_match(self, intervals: Mapping[str, Interval]) -> bool:
        """False only when no record here can match a filter restricting fields to
        ``intervals`` (:func:`filter_intervals`): some field's interval misses the range of
        the values this index holds. Fields not declared with the interval's type, or holding
        values the column cannot represent (where array membership could match), never prune."""
        for path, interval in intervals.items():
            column = self._columns.get(path)
            if column is None or column.kind != interval.kind or column.impure:
                continue
            found = self.bounds(path)
            if found is None or not interval.meets(*found):
                return False
        return True

    def mask(self, spec: Mapping[str, Any], size: int) -> Mask | None:
        """Bool array of length ``size``: True where the record at that label matches ``spec``
        exactly as ``compile_filter(spec)`` would; False for labels not set.

        Returns None when the columns cannot decide the filter exactly (an undeclared or impure
        field, or an operand they cannot compare exactly); raises InvalidFilter when
        ``compile_filter`` does.
        """
        compile_filter(spec, None)  # malformed: InvalidFilter (the size limits apply where it came in)
        if size < 0:
            raise ValueError("size must be >= 0")
        n = min(size, self._high)
        try:
            matched = self._spec(spec, n)
        except _Unsupported:
            return None
        result = np.zeros(size, dtype=np.bool_)
        result[:n] = matched
        return result

    def _spec(self, spec: Mapping[str, Any], n: int) -> Mask:
        live = self._live[:n]
        result = live
        for key, value in spec.items():
            if key == "$and":
                part = live
                for sub in value:
                    part = part & self._spec(sub, n)
            elif key == "$or":
                part = np.zeros(n, dtype=np.bool_)
                for sub in value:
                    part = part | self._spec(sub, n)
            elif key == "$not":
                part = live & ~self._spec(value, n)
            else:
                part = self._field(str(key), value, n)
            result = result & part
        return result

    def _field(self, path: str, condition: Any, n: int) -> Mask:
        column = self._columns.get(path)
        if column is None or column.impure:
            raise _Unsupported
        if isinstance(condition, Mapping) and condition and all(str(k).startswith("$") for k in condition):
            checks = list(condition.items())
        else:
            checks = [("$eq", condition)]
        return self._all(column, checks, n)

    def _all(self, column: _Column, checks: list[tuple[str, Any]], n: int) -> Mask:
        result = self._live[:n]
        for op, arg in checks:
            result = result & self._check(column, op, arg, n)
        return result

    def _check(self, column: _Column, op: str, arg: Any, n: int) -> Mask:
        live, gen = self._live[:n], self._gen
        if op == "$eq":
            return column.equal(arg, n, gen)
        if op == "$ne":
            return live & ~column.equal(arg, n, gen)
        if op in ("$in", "$nin"):
            found = column.equal_any(arg, n, gen)
            return found if op == "$in" else live & ~found
        if op == "$exists":
            return column.exists[:n] if arg else live & ~column.exists[:n]
        if op == "$not":
            return live & ~self._all(column, list(arg.items()), n)
        return column.ordered(op, arg, n, gen)

    def to_parts(self) -> dict[str, Any]:
        """Plain data for CBOR (no pickle): numpy arrays as little-endian raw bytes with dtype and shape."""
        high = self._high
        return {
            "format": _FORMAT, "high": high, "live": _array_part(self._live[:high]),
            "columns": {path: column.to_parts(high, self._gen) for path, column in self._columns.items()},
        }

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> PayloadIndex:
        """Rebuild an index from ``to_parts`` output; raises ValueError on inconsistent parts."""
        try:
            return cls._from_parts(parts)
        except (KeyError, TypeError, AttributeError, InvalidRecord) as exc:
            raise ValueError(f"payload index parts are malformed: {exc}") from exc

    @classmethod
    def _from_parts(cls, parts: dict[str, Any]) -> PayloadIndex:
        if not isinstance(parts, Mapping) or parts.get("format") != _FORMAT:
            raise ValueError("not a payload index (unknown format)")
        columns = parts["columns"]
        high = parts["high"]
        if not isinstance(columns, Mapping) or not isinstance(high, int) or high < 0:
            raise ValueError("payload index parts are malformed")
        if not all(isinstance(c, Mapping) for c in columns.values()):
            raise ValueError("payload index columns are malformed")
        index = cls({path: column_parts["type"] for path, column_parts in columns.items()})
        index._live = _array_from(parts["live"], np.bool_, high)
        index._gen = np.zeros(high, dtype=np.uint32)
        index._high = high
        for path, column in index._columns.items():
            column.load(columns[path], high)
        return index

    def memory_bytes(self) -> int:
        """Approximate bytes held: numpy buffers and posting keys (date-time strings shared
        with the records' metadata count as one pointer each)."""
        return int(self._live.nbytes + self._gen.nbytes) + sum(
            column.memory_bytes() for column in self._columns.values())
