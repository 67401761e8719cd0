"""Segment pruning (issue 19), measured: filtered query QPS with and without pruning.

~100k MiniLM vectors in ~10 sealed segments (one per day-window), each record's
``mintDateTime`` and ``n`` following its timestamp, so a segment's payload ranges follow
its window. Rounds alternate pruning on and off in one process; a round runs every query
once, one at a time (no executor). Run: python tools/prune_bench.py [rows] [segments]
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from s5vec.index import Collection, CollectionConfig, SearchSpec, prepare_batch, RawItem
from s5vec.index.segment import train_codebook

from s5vec_tools.dataset import default_data_dir

DATA = default_data_dir()
DAY = 86_400.0


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    windows = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    base = np.load(DATA / "base.f16.npy", mmap_mode="r")[:rows].astype(np.float32)
    queries = np.load(DATA / "queries.f16.npy")[:200].astype(np.float32)
    per = rows // windows
    config = CollectionConfig("bench", base.shape[1], payload=(("mintDateTime", "datetime"), ("n", "number")),
                              segment_records=per)
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection(config, Path(tmp), capacity=rows)
        start = (time.time() // DAY - 100) * DAY
        stamps = start + np.arange(rows) // per * DAY + (np.arange(rows) % per) * (DAY / per)
        items = [RawItem(i, base[i], {"mintDateTime": dt.datetime.fromtimestamp(stamps[i], dt.timezone.utc)
                                      .isoformat(), "n": i}, float(stamps[i])) for i in range(rows)]
        began = time.perf_counter()
        for at in range(0, rows, 10_000):
            batch, errors = prepare_batch(config, items[at:at + 10_000])
            assert not errors
            coll.apply_upsert(batch)
        plan = coll.plan_migration()
        assert plan is not None
        sample = np.concatenate([p["vectors"][:2000] for p in plan.windows.values()])
        codebook = train_codebook(config, sample)
        coll.commit_migration(plan, coll.build_migration(plan, Path(tmp), codebook))
        print(f"built {len(coll.segments)} segments of {per} rows in {time.perf_counter() - began:.0f} s")
        prepared = np.stack([q / np.linalg.norm(q) for q in queries]).astype(np.float32)

        def iso(w: float) -> str:
            return dt.datetime.fromtimestamp(start + w * DAY, dt.timezone.utc).isoformat()

        filters = {  # name -> filter, and how many segments it can touch
            "mint: one window (1/10)": {"mintDateTime": {"$gte": iso(3), "$lt": iso(4)}},
            "mint: last 2.5 windows": {"mintDateTime": {"$gte": iso(windows - 2.5)}},
            "n: range inside one window": {"n": {"$gte": 3 * per + 100, "$lt": 3 * per + 5100}},
            "n: $or (no pruning possible)": {"$or": [{"n": {"$lt": per // 2}}, {"n": {"$gte": rows - per // 2}}]},
        }
        for name, spec in filters.items():
            runs: dict[bool, list[float]] = {True: [], False: []}
            same = True
            for round_ in range(6):
                for prune in ((True, False) if round_ % 2 else (False, True)):
                    coll.prune_segments = prune
                    t0 = time.perf_counter()
                    out = [coll.search(q, SearchSpec(k=10, filter=spec)) for q in prepared]
                    runs[prune].append(len(prepared) / (time.perf_counter() - t0))
                    if prune:
                        got = [[h.id for h in r.hits] for r in out]
                    else:
                        want = [[h.id for h in r.hits] for r in out]
                same = same and got == want
            on, off = statistics.median(runs[True]), statistics.median(runs[False])
            print(f"{name:32s} QPS pruned {on:8.1f}  unpruned {off:8.1f}  x{on / off:5.2f}  "
                  f"identical hits: {same}  (rounds: {[round(x) for x in runs[True]]} vs "
                  f"{[round(x) for x in runs[False]]})")
        print(coll.stats()["segments_searched"], "segment searches,", coll.stats()["segments_pruned"], "pruned")
        coll.close()


if __name__ == "__main__":
    main()
