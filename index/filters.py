"""Mongo-style metadata filters compiled to predicates over a record's metadata.

Supported: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not``, array
membership (``{"genre": "drama"}`` matches ``["drama", "crime"]``), dotted paths
(``a.b``), ``{key, value}`` attribute lists (``attributes.runtime``) and ISO 8601
date comparison when both sides are date strings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidFilter, SearchTimeout

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING: Final = object()
_COMPARE: Final = {"$gt", "$gte", "$lt", "$lte"}
_FIELD_OPS: Final = _COMPARE | {"$eq", "$ne", "$in", "$nin", "$exists", "$not"}


def parse_datetime(value: str) -> dt.datetime | None:
    """ISO 8601 string → aware datetime (UTC if no zone), or None if it is not one."""
    if len(value) < 10 or not value[:4].isdigit() or value[4] != "-":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def resolve(doc: Any, parts: list[str]) -> list[Any]:
    """Every value reachable at the dotted path ``parts`` (arrays fan out)."""
    values = [doc]
    for part in parts:
        found: list[Any] = []
        for value in values:
            if isinstance(value, Mapping):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Mapping):
                        if part in item:
                            found.append(item[part])
                        elif item.get("key") == part and "value" in item:
                            found.append(item["value"])
        values = found
    return values


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(value)
        flat.append(value)
    return flat


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _key(value: Any) -> tuple[str, Any] | None:
    """A hashable key equal for exactly the values :func:`_equal` calls equal, or None
    (containers, NaN): booleans only equal booleans, numbers compare across int and float."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):  # an int is never NaN (and may be too large for a float)
        return None if isinstance(value, float) and math.isnan(value) else ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z", None)
    return None


def _membership(arg: list[Any]) -> Callable[[Any], bool]:
    """``value in arg`` under :func:`_equal` in O(1) for scalars: a 50,000-value ``$in``
    compared every value of every record in turn (seconds per search)."""
    keys: set[tuple[str, Any]] = set()
    others: list[Any] = []
    for a in arg:
        key = _key(a)
        if key is None:
            others.append(a)
        else:
            keys.add(key)

    def contains(value: Any) -> bool:
        key = _key(value)
        if key is not None and key in keys:
            return True
        return any(_equal(value, a) for a in others) if others else False

    return contains


def _ordered(a: Any, b: Any, op: str) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        pass
    elif isinstance(a, str) and isinstance(b, str):
        da, db = parse_datetime(a), parse_datetime(b)
        if da is not None and db is not None:
            a, b = da, db
    else:
        return False
    if op == "$gt":
        return bool(a > b)
    if op == "$gte":
        return bool(a >= b)
    if op == "$lt":
        return bool(a < b)
    return bool(a <= b)


def _field_predicate(path: str, condition: Any) -> Predicate:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise InvalidFilter(f"invalid field path {path!r}")
    if isinstance(condition, Mapping) and condition and all(str(k).startswith("$") for k in condition):
        checks = [_operator(op, arg, path, 1) for op, arg in condition.items()]
    elif isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition):
        raise InvalidFilter(f"field {path!r} mixes operators and plain keys")
    else:
        checks = [_operator("$eq", condition, path, 1)]

    def predicate(doc: Mapping[str, Any]) -> bool:
        values = resolve(doc, parts)
        return all(check(values) for check in checks)

    return predicate


def _operator(op: str, arg: Any, path: str, depth: int) -> Callable[[list[Any]], bool]:
    if op not in _FIELD_OPS:
        raise InvalidFilter(f"unknown operator {op!r} on field {path!r}")
    if op == "$eq":
        return lambda values: any(_equal(v, arg) for v in _flatten(values))
    if op == "$ne":
        return lambda values: not any(_equal(v, arg) for v in _flatten(values))
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise InvalidFilter(f"{op} on field {path!r} needs an array")
        contains = _membership(arg)
        if op == "$in":
            return lambda values: any(contains(v) for v in _flatten(values))
        return lambda values: not any(contains(v) for v in _flatten(values))
    if op == "$exists":
        if not isinstance(arg, bool):
            raise InvalidFilter(f"$exists on field {path!r} needs true or false")
        return lambda values: bool(values) is arg
    if op == "$not":
        if not isinstance(arg, Mapping):
            raise InvalidFilter(f"$not on field {path!r} needs an operator object")
        if not arg or not all(str(k).startswith("$") for k in arg):
            raise InvalidFilter(f"$not on field {path!r} needs an operator object")
        if depth >= MAX_FILTER_DEPTH:  # compiling and evaluating recurse once per level here too
            raise InvalidFilter(f"$not on field {path!r} nests more than {MAX_FILTER_DEPTH} levels deep")
        inner = [_operator(o, a, path, depth + 1) for o, a in arg.items()]
        return lambda values: not all(check(values) for check in inner)
    if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
        raise InvalidFilter(f"{op} on field {path!r} needs a number or a string")
    return lambda values: any(_ordered(v, arg, op) for v in _flatten(values))


MAX_FILTER_DEPTH: Final = 32
"""Nesting of $and/$or/$not: compiling and evaluating recurse once per level."""


@dataclass(frozen=True, slots=True)
class FilterLimits:
    """How large a filter may be; each bound holds before anything is compiled. Named after
    the daemon's ``[engine]`` settings that fill them, which the errors quote."""

    max_nodes: int = 1_000        # field conditions, operators and $and/$or branches
    max_in_values: int = 10_000   # values in all $in/$nin lists of one filter together


DEFAULT_FILTER_LIMITS: Final = FilterLimits()


def check_filter_size(spec: Any, limits: FilterLimits) -> None:
    """Raise InvalidFilter naming the limit when ``spec`` is over ``limits``; the walk stops
    there, so a filter bomb costs at most ``max_nodes`` steps (no recursion)."""
    nodes = values = 0
    stack = [spec]
    while stack:
        node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            nodes += 1
            if key in ("$and", "$or") and isinstance(value, list):
                nodes += len(value)
                stack.extend(value)
            elif key in ("$in", "$nin") and isinstance(value, list):
                values += len(value)
                if values > limits.max_in_values:
                    raise InvalidFilter(f"the $in/$nin lists of a filter hold more than {limits.max_in_values} "
                                        f"values together (engine.filter_max_in_values = {limits.max_in_values})")
            elif isinstance(value, Mapping):
                stack.append(value)
            if nodes > limits.max_nodes:
                raise InvalidFilter(f"a filter has more than {limits.max_nodes} field conditions, operators and "
                                    f"$and/$or branches (engine.filter_max_nodes = {limits.max_nodes})")


def compile_filter(spec: Any, limits: FilterLimits | None = DEFAULT_FILTER_LIMITS) -> Predicate:
    """Compile a filter document; raises InvalidFilter naming what is wrong or the limit it
    is over. ``limits=None`` only for a filter already checked against the configured ones."""
    if limits is not None:
        check_filter_size(spec, limits)
    return _compile(spec, 1)


def _compile(spec: Any, depth: int) -> Predicate:
    if not isinstance(spec, Mapping):
        raise InvalidFilter("a filter must be a JSON object")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidFilter(f"a filter nests $and/$or/$not more than {MAX_FILTER_DEPTH} levels deep")
    clauses: list[Predicate] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{key} needs a non-empty array of filters")
            subs = [_compile(v, depth + 1) for v in value]
            if key == "$and":
                clauses.append(lambda d, subs=subs: all(s(d) for s in subs))
            else:
                clauses.append(lambda d, subs=subs: any(s(d) for s in subs))
        elif key == "$not":
            sub = _compile(value, depth + 1)
            clauses.append(lambda d, sub=sub: not sub(d))
        elif str(key).startswith("$"):
            raise InvalidFilter(f"unknown top-level operator {key!r}")
        else:
            clauses.append(_field_predicate(str(key), value))
    if len(clauses) == 1:
        return clauses[0]
    return lambda d: all(c(d) for c in clauses)


# ---------------------------------------------------------------- time limit
_LIMIT = threading.local()  # this thread's search deadline (time.monotonic), if any
CHECK_EVERY: Final = 32  # records evaluated between two looks at the clock (a 1,000-node filter: ~3 ms each)


@contextlib.contextmanager
def time_limit(deadline: float | None) -> Iterator[None]:
    """Within the block, :func:`check_time` raises SearchTimeout past ``deadline``
    (time.monotonic; None: no limit). Per thread: a worker sets it around one search."""
    previous = getattr(_LIMIT, "deadline", None)
    _LIMIT.deadline = deadline
    try:
        yield
    finally:
        _LIMIT.deadline = previous


def current_deadline() -> float | None:
    """The deadline :func:`time_limit` set on this thread (to hand to another thread)."""
    return getattr(_LIMIT, "deadline", None)


def check_time() -> None:
    """Raise SearchTimeout when this thread's search is past its deadline; long loops
    (a filter evaluated record by record) call it every CHECK_EVERY records."""
    deadline = getattr(_LIMIT, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise SearchTimeout("the search ran past its time limit")
