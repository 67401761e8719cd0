"""The re-rank stage of search: merging tier results and relevance scoring.

Pure functions over :class:`Hit` lists, safe on any thread, sized for up to about a
thousand candidates. Scores follow ``Hit.score``: higher is better.

* :func:`merge` combines the results of several tiers (recent HNSW, historical IVF) that
  may hold the same id, e.g. while a migration is copying records between them.
* :func:`rerank` applies a :class:`ScoringSpec` (time decay, popularity boost).

Note for the caller: re-ranking can only reorder the candidates it is given, so when a
scoring spec is present the search should fetch more candidates than ``k``
(:func:`candidate_count`: ``max(4k, 100)``, capped at ``MAX_K``) and let :func:`rerank`
cut the list to ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
from msgspec.structs import replace

from .errors import InvalidRecord
from .filters import parse_datetime, resolve
from .records import MAX_K, Hit

MERGE_STRATEGIES: Final = ("take_best", "average", "weighted")
DECAY_FUNCTIONS: Final = ("exp", "gauss", "linear")
RECORD_TIMESTAMP: Final = "timestamp"
_LN2: Final = math.log(2.0)
_ABSENT: Final = object()
_MILLISECONDS_ABOVE: Final = 1e11  # same rule as parse_timestamp: larger numbers are milliseconds


class InvalidScoring(InvalidRecord, ValueError):
    """A merge argument or scoring spec is invalid; ``field`` names it (e.g. ``decay.weight``).

    Both an :class:`InvalidRecord` (the daemon answers 400) and a ``ValueError``.
    """


class DecaySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Time decay: ``final = score - |score| * (1 - factor)`` (= ``score * factor`` for
    ``score >= 0``), with ``factor = (1 - weight) + weight * decay(age)`` and
    ``age = max(0, origin - t)`` in seconds (future times are not boosted beyond 1).

    ``decay(age)`` with ``h = half_life_s`` (every function is 1 at age 0 and 0.5 at ``h``):
    ``exp``: ``0.5 ** (age / h)``; ``gauss``: ``exp(-ln 2 * (age / h) ** 2)``;
    ``linear``: ``max(0, 1 - age / (2 * h))`` (0 from ``2 * h`` on).

    ``field``: ``"timestamp"`` is the record's own timestamp (``Hit.timestamp``); anything
    else is a dotted metadata path (as in filters, including ``{key, value}`` attribute
    lists) holding an ISO 8601 date-time or Unix seconds (numbers above 1e11 are read as
    milliseconds). A metadata key literally named ``timestamp`` is therefore not reachable.
    If the path yields several dates the latest counts. A record without a usable date has
    ``decay = 0`` (factor ``1 - weight``): undated records rank as if very old.

    ``origin``: the reference time (Unix seconds or ISO 8601); ``None`` means the ``now``
    passed to :func:`rerank`.
    """

    half_life_s: Annotated[float, msgspec.Meta(gt=0)]
    function: Literal["exp", "gauss", "linear"] = "exp"
    field: Annotated[str, msgspec.Meta(min_length=1)] = RECORD_TIMESTAMP
    origin: float | str | None = None
    weight: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0


class PopularitySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Popularity boost, added after decay: ``final = decayed + boost`` with
    ``boost = weight * log1p(max(value, 0)) / log1p(scale)``.

    The boost is 0 at 0 (or a missing/non-numeric value), reaches ``weight`` at ``scale``
    and keeps growing logarithmically past it (no cap), so it is monotone in the value;
    being additive it is monotone whatever the sign of the score. ``field`` is a dotted
    metadata path holding a number (booleans and numeric strings do not count); if it
    yields several numbers the largest counts.
    """

    field: Annotated[str, msgspec.Meta(min_length=1)] = "views"
    weight: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    scale: Annotated[float, msgspec.Meta(gt=1)] = 1_000_000.0


class ScoringSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What :func:`rerank` applies: decay first, then the popularity boost; both optional."""

    decay: DecaySpec | None = None
    popularity: PopularitySpec | None = None


# ---------------------------------------------------------------------------- validation
def validate(spec: ScoringSpec) -> None:
    """Check every rule of the spec: decoding enforces types and bounds but not finiteness,
    paths or ``origin``, and a spec built in code is not checked at all.

    Raises:
        InvalidScoring: naming the first bad field, e.g. ``decay.half_life_s``.
    """
    decay, popularity = spec.decay, spec.popularity
    if decay is not None:
        if decay.function not in DECAY_FUNCTIONS:
            raise InvalidScoring("decay.function", f"must be one of {', '.join(DECAY_FUNCTIONS)}")
        _check_path("decay.field", decay.field)
        if not _finite(decay.half_life_s) or decay.half_life_s <= 0:
            raise InvalidScoring("decay.half_life_s", "must be a finite number > 0")
        _check_weight("decay.weight", decay.weight)
        if decay.origin is not None and _seconds(decay.origin) is None:
            raise InvalidScoring("decay.origin", "must be Unix seconds or an ISO 8601 date-time")
    if popularity is not None:
        _check_path("popularity.field", popularity.field)
        _check_weight("popularity.weight", popularity.weight)
        if not _finite(popularity.scale) or popularity.scale <= 1:
            raise InvalidScoring("popularity.scale", "must be a finite number > 1")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_weight(name: str, value: float) -> None:
    if not _finite(value) or not 0.0 <= value <= 1.0:
        raise InvalidScoring(name, "must be a number from 0 to 1")


def _check_path(name: str, path: str) -> None:
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise InvalidScoring(name, f"{path!r} is not a dotted field path")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidScoring("k", "must be an integer >= 0")


def candidate_count(k: int, limit: int = MAX_K) -> int:
    """How many candidates to fetch for a re-ranked top ``k``: ``max(4k, 100)``, at most
    ``limit`` but never fewer than ``k``."""
    return max(min(max(4 * k, 100), limit), k)


# --------------------------------------------------------------------------------- merge
def merge(tiers: Sequence[Sequence[Hit]], k: int, strategy: str = "take_best",
          weights: Sequence[float] | None = None) -> list[Hit]:
    """One Hit per id from several tiers' results, best first, at most ``k``.

    Each tier contributes at most one copy per id (its best). ``take_best``: the
    best-scoring copy (ties: lower distance, then the earlier tier). ``average``: the mean
    score of the copies present (a tier that lacks the id does not count). ``weighted``:
    each tier's scores times its weight (finite, >= 0; default 1.0), then the best. The
    returned Hits are new objects copied from the best (weighted) copy with ``score``
    replaced; order is score descending, then distance ascending, then id.

    Raises:
        InvalidScoring: naming ``strategy``, ``weights`` or ``k``.
    """
    if strategy not in MERGE_STRATEGIES:
        raise InvalidScoring("strategy", f"{strategy!r} is not one of {', '.join(MERGE_STRATEGIES)}")
    _check_k(k)
    factors = [1.0] * len(tiers)
    if weights is not None:
        if strategy != "weighted":
            raise InvalidScoring("weights", f"only apply to the weighted strategy, not {strategy!r}")
        if len(weights) != len(tiers):
            raise InvalidScoring("weights", f"has {len(weights)} entries for {len(tiers)} tiers")
        if not all(_finite(w) and w >= 0 for w in weights):
            raise InvalidScoring("weights", "must be finite numbers >= 0")
        factors = [float(w) for w in weights]

    # id -> [best score, its distance, its hit, score sum, copies]
    entries: dict[str, list[Any]] = {}
    for factor, tier in zip(factors, tiers):
        own: dict[str, Hit] = {}
        for hit in tier:
            held = own.get(hit.id)
            if held is None or (hit.score, -hit.distance) > (held.score, -held.distance):
                own[hit.id] = hit
        for record_id, hit in own.items():
            score = hit.score * factor
            entry = entries.get(record_id)
            if entry is None:
                entries[record_id] = [score, hit.distance, hit, score, 1]
                continue
            entry[3] += score
            entry[4] += 1
            if (score, -hit.distance) > (entry[0], -entry[1]):
                entry[0], entry[1], entry[2] = score, hit.distance, hit

    average = strategy == "average"
    ranked = sorted(
        ((e[3] / e[4] if average else e[0], e[1], record_id, e[2]) for record_id, e in entries.items()),
        key=lambda row: (-row[0], row[1], row[2]),
    )
    return [replace(hit, score=score) for score, _, _, hit in ranked[:k]]


# -------------------------------------------------------------------------------- rerank
def decay_factors(function: str, ages: np.ndarray, half_life_s: float) -> np.ndarray:
    """``decay(age)`` of :class:`DecaySpec` for ages in seconds (>= 0): 1 at 0, 0.5 at
    ``half_life_s``."""
    with np.errstate(over="ignore"):  # absurd ages overflow to inf, whose decay is 0
        ratio = np.asarray(ages, dtype=np.float64) / half_life_s
        if function == "exp":
            return np.exp2(-ratio)
        if function == "gauss":
            return np.exp(-_LN2 * ratio * ratio)
        if function == "linear":
            return np.maximum(0.0, 1.0 - 0.5 * ratio)
    raise InvalidScoring("decay.function", f"must be one of {', '.join(DECAY_FUNCTIONS)}")


def rerank(hits: Sequence[Hit], spec: ScoringSpec, now: float, k: int) -> list[Hit]:
    """Apply ``spec`` to ``hits``: new Hits whose ``score`` is the final score (formulas on
    :class:`DecaySpec` / :class:`PopularitySpec`), one per id (its best copy), best first
    (ties: lower distance, then id), at most ``k``. ``now`` is Unix seconds.

    Raises:
        InvalidScoring: naming the bad field of ``spec``, or ``k``.
    """
    validate(spec)
    _check_k(k)
    n = len(hits)
    if n == 0 or k == 0:
        return []
    final = np.fromiter((h.score for h in hits), dtype=np.float64, count=n)
    decay = spec.decay
    if decay is not None:
        origin = _seconds(decay.origin if decay.origin is not None else float(now))
        if origin is None:
            raise InvalidScoring("now", "must be finite Unix seconds")
        times = _dates(hits, decay.field)
        dated = np.isfinite(times)
        ages = np.maximum(origin - np.where(dated, times, origin), 0.0)
        curve = np.where(dated, decay_factors(decay.function, ages, decay.half_life_s), 0.0)
        factor = (1.0 - decay.weight) + decay.weight * curve
        final = final - np.abs(final) * (1.0 - factor)
    popularity = spec.popularity
    if popularity is not None:
        values = _numbers(hits, popularity.field)
        values = np.where(values > 0.0, values, 0.0)  # missing (NaN) and negatives give 0
        final = final + popularity.weight * np.log1p(values) / math.log1p(popularity.scale)

    ids = [h.id for h in hits]
    distances = np.fromiter((h.distance for h in hits), dtype=np.float64, count=n)
    order = np.lexsort((np.array(ids), distances, -final)).tolist()
    scores = final.tolist()
    seen: set[str] = set()
    ranked: list[Hit] = []
    for i in order:
        if ids[i] in seen:
            continue
        seen.add(ids[i])
        ranked.append(replace(hits[i], score=scores[i]))
        if len(ranked) == k:
            break
    return ranked


def _seconds(value: object) -> float | None:
    """A date as Unix seconds, or None if ``value`` is not one (see DecaySpec.field)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        return seconds / 1000.0 if abs(seconds) > _MILLISECONDS_ABOVE else seconds
    if isinstance(value, str):
        parsed = parse_datetime(value)
        return None if parsed is None else parsed.timestamp()
    return None


def _leaves(metadata: dict[str, Any] | None, parts: list[str]) -> list[Any]:
    """The values at a dotted path, leaf arrays flattened (filters' ``resolve`` semantics)."""
    if not metadata:
        return []
    if len(parts) == 1:  # the common top-level field, without resolve's generality
        value = metadata.get(parts[0], _ABSENT)
        if value is _ABSENT:
            return []
        found = [value]
    else:
        found = resolve(metadata, parts)
    flat: list[Any] = []
    for value in found:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    return flat


def _dates(hits: Sequence[Hit], field: str) -> np.ndarray:
    """Each hit's date in Unix seconds (NaN, or any non-finite value, when it has none)."""
    nan = math.nan
    if field == RECORD_TIMESTAMP:
        # Hit.timestamp is already Unix seconds (parse_timestamp ran at ingest).
        return np.fromiter((nan if h.timestamp is None else h.timestamp for h in hits),
                           dtype=np.float64, count=len(hits))
    parts = field.split(".")
    out: list[float] = []
    for hit in hits:
        dates = [t for v in _leaves(hit.metadata, parts) if (t := _seconds(v)) is not None]
        out.append(max(dates) if dates else nan)
    return np.array(out, dtype=np.float64)


def _numbers(hits: Sequence[Hit], field: str) -> np.ndarray:
    """Each hit's largest number at ``field`` (NaN when it has none)."""
    parts = field.split(".")
    key = parts[0] if len(parts) == 1 else None
    out: list[float] = []
    for hit in hits:
        if key is not None and hit.metadata:
            value = hit.metadata.get(key)
            if type(value) is int or type(value) is float:  # the usual plain number (bool is neither)
                out.append(float(value) if math.isfinite(value) else math.nan)
                continue
        numbers = [float(v) for v in _leaves(hit.metadata, parts) if _finite(v)]
        out.append(max(numbers) if numbers else math.nan)
    return np.array(out, dtype=np.float64)
