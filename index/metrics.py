"""Distance → score, written once for every tier and every caller.

Both tiers return *raw* distances in hnswlib's convention, lower is better: ``1 - <q, x>``
for "cosine" (vectors and queries unit length) and "ip", the squared Euclidean distance
for "l2". A hit reports

====== =========================== ==============================
metric ``Hit.distance``            ``Hit.score`` (higher is better)
====== =========================== ==============================
cosine raw (``1 - cos``)           ``1 - raw / 2`` = ``(1 + cos) / 2``, clamped to [0, 1]
ip     raw (``1 - <q, x>``)        ``1 - raw`` = ``<q, x>``
l2     ``sqrt(raw)`` (0 if <= 0)   ``1 / (1 + distance)``
====== =========================== ==============================

:func:`score_of` / :func:`distance_of` are the vectorised forms (numpy, float64 out);
:func:`hit_values` is the same arithmetic on a Python list, for the search hot path where
a row holds ~10 values and numpy's per-call overhead would cost more than the loop
(tests pin the two forms to each other). :func:`raw_distances` computes raw distances of
stored rows to one query, as the exact scans do.
"""

from __future__ import annotations

import math
from typing import Any, Final

import faiss
import numpy as np

_SWIG: Any = faiss  # the SIMD distance loops, which faiss's stubs lack

SCORED_METRICS: Final = ("cosine", "ip", "l2")


def raw_distances(metric: str, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Raw distances (float32, lower is better) of ``rows`` (n, d) to ``query`` (d,):
    squared L2 for "l2", ``1 - <q, x>`` otherwise ("cosine" rows and query unit length)."""
    # faiss's SIMD loops on the calling thread: ``rows @ query`` goes to BLAS, whose
    # threads spin against the search threads (1,600 rows: ~8 ms per query on a busy
    # 2-core host instead of ~0.1 ms)
    q = np.ascontiguousarray(query, np.float32)
    rows = np.ascontiguousarray(rows, np.float32)
    out = np.empty(len(rows), np.float32)
    if len(rows):
        fn = _SWIG.fvec_L2sqr_ny if metric == "l2" else _SWIG.fvec_inner_products_ny
        fn(_SWIG.swig_ptr(out), _SWIG.swig_ptr(q), _SWIG.swig_ptr(rows), rows.shape[1], len(rows))
    return out if metric == "l2" else np.float32(1.0) - out


def distance_of(metric: str, raw: np.ndarray) -> np.ndarray:
    """``Hit.distance`` for raw distances (float64): the Euclidean distance for "l2"
    (negative rounding noise counts as 0), the raw distance itself otherwise."""
    values = np.asarray(raw, dtype=np.float64)
    if metric == "l2":
        return np.sqrt(np.maximum(values, 0.0))
    return values


def score_of(metric: str, raw: np.ndarray) -> np.ndarray:
    """``Hit.score`` for raw distances (float64, higher is better; see the module table)."""
    values = np.asarray(raw, dtype=np.float64)
    if metric == "cosine":
        out: np.ndarray = np.clip(1.0 - values * 0.5, 0.0, 1.0)
        return out
    if metric == "ip":
        return 1.0 - values
    return 1.0 / (1.0 + distance_of(metric, values))


def hit_values(metric: str, raw: list[float]) -> tuple[list[float], list[float]]:
    """(distances, scores) for a list of raw distances: :func:`distance_of` and
    :func:`score_of` in plain Python, exactly equal to them (same IEEE operations, in
    double). For "cosine" and "ip" the distances are ``raw`` itself, not a copy."""
    if metric == "cosine":
        return raw, [s if 0.0 <= (s := 1.0 - r * 0.5) <= 1.0 else (0.0 if s < 0.0 else 1.0) for r in raw]
    if metric == "ip":
        return raw, [1.0 - r for r in raw]
    sqrt = math.sqrt
    distances = [sqrt(r) if r > 0.0 else 0.0 for r in raw]
    return distances, [1.0 / (1.0 + d) for d in distances]
