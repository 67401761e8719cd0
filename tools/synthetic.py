"""Synthetic video-NFT metadata for the two-tier benchmark, held as columns.

Every field is drawn from a seeded generator, so equal ``(n, seed, anchor)`` give equal
records.  Columns make exact filter masks cheap (ground truth and selectivity without a
per-record predicate); :meth:`Catalogue.documents` turns rows into the metadata the
index ingests.  :func:`filter_cases` picks thresholds from the columns so that a filter's
measured selectivity lands near a target (50 %, 10 %, 1 %, 0.1 %).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

DAY: Final = 86_400
GENRES: Final = ("drama", "comedy", "documentary", "music", "animation", "action", "education",
                 "sports", "news", "horror", "sci-fi", "romance")
GENRE_ZIPF_S: Final = 1.1
GENRE_COUNT_P: Final = (0.6, 0.3, 0.1)  # one, two or three genres per record
TYPES: Final = ("video", "image", "audio", "data")
TYPE_P: Final = (0.62, 0.2, 0.13, 0.05)
ADDRESSES: Final = 1000
ADDRESS_ZIPF_S: Final = 0.8
HISTORY_DAYS: Final = 730
HISTORICAL_MARGIN_S: Final = 8 * DAY
"""Historical records are minted before ``anchor - 8 days``: older than the 7-day recent
threshold even if the run starts up to a day after the anchor."""
RECENT_SPAN_S: Final = 3 * DAY
RUNTIME_MIN, RUNTIME_MAX = 1, 240
VIEWS_LOG_MEAN: Final = 5.5
VIEWS_LOG_SIGMA: Final = 1.8
TARGETS: Final = (0.5, 0.1, 0.01, 0.001)
FILTER_KINDS: Final = ("views", "keyword", "runtime", "date")


def day_anchor(now: float) -> int:
    """Start of the UTC day containing ``now`` (Unix seconds): recent records end there."""
    return int(now // DAY) * DAY


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Metadata of ``n`` records as columns; row ``i`` is record id ``str(i)``."""

    seed: int
    anchor: int
    genres: np.ndarray      # (n, len(GENRES)) bool
    types: np.ndarray       # (n,) uint8 index into TYPES
    minted: np.ndarray      # (n,) int64 Unix seconds (the record timestamp)
    runtime: np.ndarray     # (n,) int16 minutes, RUNTIME_MIN..RUNTIME_MAX
    views: np.ndarray       # (n,) int64
    address: np.ndarray     # (n,) int16 index into addresses
    addresses: tuple[str, ...]

    def __len__(self) -> int:
        return int(len(self.minted))

    def iso(self, rows: slice | np.ndarray) -> list[str]:
        """mintDateTime strings (UTC, second precision, trailing Z) of ``rows``."""
        stamps = self.minted[rows].astype("datetime64[s]")
        return [s + "Z" for s in np.datetime_as_string(stamps, unit="s").tolist()]

    def documents(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Metadata documents of rows ``start..stop-1`` as the index ingests them."""
        rows = slice(start, stop)
        genre_names = [[GENRES[g] for g in np.flatnonzero(row).tolist()] for row in self.genres[rows]]
        return [
            {"genre": genre, "type": TYPES[t], "mintDateTime": mint,
             "attributes": [{"key": "runtime", "value": runtime}], "views": views,
             "address": self.addresses[a]}
            for genre, t, mint, runtime, views, a in zip(
                genre_names, self.types[rows].tolist(), self.iso(rows), self.runtime[rows].tolist(),
                self.views[rows].tolist(), self.address[rows].tolist())
        ]


def _zipf(count: int, s: float) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** s
    return weights / float(weights.sum())


def make_catalogue(n: int, historical_fraction: float, anchor: int, seed: int = 7) -> Catalogue:
    """``n`` records: ``round(n * historical_fraction)`` minted uniformly over the two years
    before ``anchor - 8 days``, the rest within the 3 days before ``anchor``; which rows are
    recent is a seeded random choice, independent of every other column."""
    if not 0.0 <= historical_fraction <= 1.0:
        raise ValueError("historical_fraction: must be within 0..1")
    rng = np.random.default_rng(seed)
    # Genres: 1-3 distinct per record, Zipf-weighted without replacement (Gumbel top-k).
    count = rng.choice(len(GENRE_COUNT_P), size=n, p=GENRE_COUNT_P) + 1
    keys = np.log(_zipf(len(GENRES), GENRE_ZIPF_S))[None, :] + rng.gumbel(size=(n, len(GENRES)))
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
    genres = ranks < count[:, None]
    types = rng.choice(len(TYPES), size=n, p=TYPE_P).astype(np.uint8)
    n_hist = int(round(n * historical_fraction))
    recent = np.zeros(n, bool)
    recent[rng.permutation(n)[: n - n_hist]] = True
    hist_lo, hist_hi = anchor - HISTORY_DAYS * DAY, anchor - HISTORICAL_MARGIN_S
    minted = np.where(recent, rng.integers(anchor - RECENT_SPAN_S, anchor, size=n),
                      rng.integers(hist_lo, hist_hi, size=n)).astype(np.int64)
    runtime = np.clip(np.rint(rng.lognormal(math.log(30.0), 1.0, size=n)), RUNTIME_MIN, RUNTIME_MAX).astype(np.int16)
    views = np.floor(rng.lognormal(VIEWS_LOG_MEAN, VIEWS_LOG_SIGMA, size=n)).astype(np.int64)
    address = rng.choice(ADDRESSES, size=n, p=_zipf(ADDRESSES, ADDRESS_ZIPF_S)).astype(np.int16)
    addresses = tuple("0x" + rng.bytes(20).hex() for _ in range(ADDRESSES))
    return Catalogue(seed, anchor, genres, types, minted, runtime, views, address, addresses)


@dataclass(frozen=True, slots=True)
class FilterCase:
    """A filter spec aimed at a selectivity, with its exact match mask over the catalogue."""

    kind: str
    target: float
    spec: dict[str, Any]
    mask: np.ndarray

    @property
    def matches(self) -> int:
        return int(self.mask.sum())

    @property
    def selectivity(self) -> float:
        return self.matches / len(self.mask)


def _error(count: int, n: int, target: float) -> float:
    """Distance of a selectivity from the target on a log scale (0 = exact; none matching = inf)."""
    return abs(math.log(count / (n * target))) if count else math.inf


def _views_case(cat: Catalogue, target: float) -> FilterCase:
    n = len(cat)
    ordered = np.sort(cat.views)
    want = max(1, int(round(n * target)))
    pivot = int(ordered[n - want])
    # Ties at the pivot: try it and the next distinct value up; keep the closer count.
    options = [pivot] + [int(v) for v in ordered[ordered > pivot][:1]]
    best = min(options, key=lambda x: _error(int(np.count_nonzero(cat.views >= x)), n, target))
    return FilterCase("views", target, {"views": {"$gte": best}}, cat.views >= best)


Choice = tuple[tuple[int, ...], tuple[int, ...]]  # (genre indexes, type indexes); empty = any


def _keyword_mask(cat: Catalogue, choice: Choice) -> np.ndarray:
    """Records holding any of the genres and having any of the types."""
    genres, types = choice
    mask = np.ones(len(cat), bool)
    if genres:
        mask = np.asarray(cat.genres[:, list(genres)].any(axis=1))
    if types:
        mask &= np.isin(cat.types, types)
    return mask


def _keyword_spec(choice: Choice) -> dict[str, Any]:
    genres, types = choice
    spec: dict[str, Any] = {}
    if genres:
        spec["genre"] = GENRES[genres[0]] if len(genres) == 1 else {"$in": [GENRES[g] for g in genres]}
    if types:
        spec["type"] = TYPES[types[0]] if len(types) == 1 else {"$in": [TYPES[t] for t in types]}
    return spec


def _keyword_candidates() -> list[Choice]:
    """Simplest first: one type, one genre, genre x type, genre x two types, two genres,
    two genres x type."""
    g1 = [(g,) for g in range(len(GENRES))]
    g2 = list(itertools.combinations(range(len(GENRES)), 2))
    t1 = [(t,) for t in range(len(TYPES))]
    t2 = list(itertools.combinations(range(len(TYPES)), 2))
    return ([((), t) for t in t1] + [(g, ()) for g in g1] + list(itertools.product(g1, t1))
            + list(itertools.product(g1, t2)) + [(g, ()) for g in g2] + list(itertools.product(g2, t1)))


def _keyword_case(cat: Catalogue, target: float, counted: list[tuple[Choice, int]]) -> FilterCase:
    n = len(cat)
    # Candidates come simplest first, so min() keeps the simplest of equally close specs.
    choice, _ = min(counted, key=lambda c: _error(c[1], n, target))
    return FilterCase("keyword", target, _keyword_spec(choice), _keyword_mask(cat, choice))


def _runtime_case(cat: Catalogue, target: float) -> FilterCase:
    n = len(cat)
    counts = np.bincount(cat.runtime, minlength=RUNTIME_MAX + 1)
    cum = np.concatenate([[0], np.cumsum(counts)])  # cum[v] = records with runtime < v
    lt_only = min(range(RUNTIME_MIN + 1, RUNTIME_MAX + 2), key=lambda b: _error(int(cum[b]), n, target))
    best = (RUNTIME_MIN, lt_only)
    best_err = _error(int(cum[lt_only]), n, target)
    # A two-sided range only when "$lt" alone misses the target by more than 10 %.
    if best_err > math.log(1.1):
        for a in range(RUNTIME_MIN, RUNTIME_MAX + 1):
            for b in range(a + 1, RUNTIME_MAX + 2):
                err = _error(int(cum[b] - cum[a]), n, target)
                if err < best_err - 1e-12:
                    best, best_err = (a, b), err
    a, b = best
    cond: dict[str, Any] = {}
    if a > RUNTIME_MIN:
        cond["$gte"] = a
    if b <= RUNTIME_MAX:
        cond["$lt"] = b
    mask = (cat.runtime >= a) & (cat.runtime < b)
    return FilterCase("runtime", target, {"attributes.runtime": cond}, mask)


def _date_case(cat: Catalogue, target: float) -> FilterCase:
    """A range of mint dates centred on the median record (mostly historical)."""
    n = len(cat)
    ordered = np.sort(cat.minted)
    want = max(1, int(round(n * target)))
    lo = max(0, min(n - want, int(round(n * 0.5 - want / 2))))
    start = int(ordered[lo])
    stop = int(ordered[lo + want]) if lo + want < n else int(ordered[-1]) + 1
    iso = np.datetime_as_string(np.array([start, stop], dtype="datetime64[s]"), unit="s")
    spec = {"mintDateTime": {"$gte": f"{iso[0]}Z", "$lt": f"{iso[1]}Z"}}
    return FilterCase("date", target, spec, (cat.minted >= start) & (cat.minted < stop))


def filter_cases(cat: Catalogue, targets: Sequence[float] = TARGETS,
                 kinds: Sequence[str] = FILTER_KINDS) -> list[FilterCase]:
    """For each target selectivity and kind, the filter whose exact selectivity is closest."""
    unknown = set(kinds) - set(FILTER_KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown {sorted(unknown)}; known: {', '.join(FILTER_KINDS)}")
    # Counts only: ~470 candidate masks of n bools each would not fit at 10M records.
    counted: list[tuple[Choice, int]] = []
    if "keyword" in kinds:
        counted = [(c, int(np.count_nonzero(_keyword_mask(cat, c)))) for c in _keyword_candidates()]
    makers: dict[str, Callable[[float], FilterCase]] = {
        "views": lambda s: _views_case(cat, s),
        "keyword": lambda s: _keyword_case(cat, s, counted),
        "runtime": lambda s: _runtime_case(cat, s),
        "date": lambda s: _date_case(cat, s),
    }
    return [makers[kind](target) for target in targets for kind in kinds]
