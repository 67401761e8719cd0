"""PNG figures of a ``s5vec bench --peers`` run (matplotlib, Agg backend, small files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"s5vec": "#d62728", "s5vec-http": "#d62728", "hnswlib": "#7f7f7f", "faiss": "#8c564b",
           "chroma": "#1f77b4", "chroma-http": "#1f77b4", "lancedb": "#2ca02c", "qdrant": "#9467bd"}


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _curve(ax: Any, name: str, rows: list[dict[str, Any]]) -> None:
    pts = [(r["recall@10"], r["qps"], r["knob"]) for r in rows if "qps" in r]
    if not pts:
        return
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name, color=COLOURS.get(name), markersize=4)
    for x, y, knob in pts:
        ax.annotate(str(knob), (x, y), fontsize=6, textcoords="offset points", xytext=(2, 2))


def plot_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the figures into ``out_dir``; returns their paths."""
    plt = _pyplot()
    made: list[Path] = []
    data = results.get("data", {})
    title = f"{data.get('name', '?')}: {data.get('base_vectors', 0):,} x {data.get('dimension', '?')}"
    engines = [r for r in results.get("engines", []) if "not_run" not in r]
    http = [r for r in results.get("http", {}).values() if "not_run" not in r]

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        made.append(path)

    for label, group, fname in (("in process, 1 thread", engines, "recall_qps_in_process.png"),
                                (f"over HTTP, {results['parameters']['http_clients']} clients", http,
                                 "recall_qps_http.png")):
        if not group:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in group:
            _curve(ax, r["engine"], r.get("search", []))
        ax.set_yscale("log")
        ax.axvline(0.95, color="k", linestyle=":", linewidth=0.8)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries / s (log)")
        ax.set_title(f"{title} — {label}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, fname)

    filtered = [r for r in engines if r.get("filtered")]
    if filtered:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
        for r in filtered:
            sel = [row["target"] * 100 for row in r["filtered"]]
            ax1.plot(sel, [row["recall@10"] for row in r["filtered"]], "o-", label=r["engine"],
                     color=COLOURS.get(r["engine"]), markersize=4)
            ax2.plot(sel, [row["qps"] for row in r["filtered"]], "o-", label=r["engine"],
                     color=COLOURS.get(r["engine"]), markersize=4)
        for ax, ylabel in ((ax1, "recall@10"), (ax2, "queries / s (log)")):
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("filter selectivity, % of records matching")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        ax2.set_yscale("log")
        ax1.legend(fontsize=7)
        fig.suptitle(f"{title} — filtered search (views >= X)", fontsize=9)
        save(fig, "filtered.png")

    rows = [r for r in engines + http if r.get("ingest")]
    if rows:
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
        metrics = (("ingest vectors/s", lambda r: r["ingest"].get("vectors_per_s")),
                   ("RSS GiB per 1M vectors", lambda r: (r.get("rss_per_million_bytes") or 0) / 2**30),
                   ("disk bytes / vector", lambda r: r.get("disk_bytes_per_vector") or 0),
                   ("spawn → first result, s", lambda r: (r.get("restart") or {}).get("spawn_to_first_result_s") or 0))
        for ax, (label, get) in zip(axes, metrics):
            names = [r["engine"] for r in rows]
            ax.barh(names, [get(r) or 0 for r in rows], color=[COLOURS.get(n, "#999") for n in names])
            ax.set_title(label, fontsize=8)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{title} — ingest, memory, disk, restart", fontsize=9)
        save(fig, "resources.png")
    return made


def plot_hybrid(runs: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """Figures of ``s5vec bench --hybrid`` runs (label -> results JSON), side by side:
    merged recall@10 against QPS from the client threads, and filtered recall and QPS per
    selectivity. Returns the paths written."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, results in runs.items():
        pts = sorted((r["recall@10"], r["qps"], str(r["nprobe"])) for r in results.get("threads", []))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, markersize=4)
            for x, y, knob in pts:
                ax.annotate(knob, (x, y), fontsize=6, textcoords="offset points", xytext=(2, 2))
    ax.axvline(0.95, color="#999999", linewidth=0.8, linestyle="--")
    ax.axhline(1000, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("recall@10 (merged tiers)")
    ax.set_ylabel("queries/s, 2 client threads")
    ax.set_title("Merged search (labels: nprobe)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "hybrid_recall_qps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, results in runs.items():
        rows = results.get("filtered", [])
        targets = sorted({r["target"] for r in rows}, reverse=True)
        worst = [min(r["recall@10"] for r in rows if r["target"] == t) for t in targets]
        slowest = [min(r["qps"] for r in rows if r["target"] == t) for t in targets]
        names = [f"{t:.1%}" for t in targets]
        left.plot(names, worst, "o-", label=label, markersize=4)
        right.plot(names, slowest, "o-", label=label, markersize=4)
    left.axhline(0.95, color="#999999", linewidth=0.8, linestyle="--")
    right.axhline(200, color="#999999", linewidth=0.8, linestyle="--")
    left.set_title("filtered recall@10, worst filter kind", fontsize=9)
    right.set_title("filtered queries/s (1 thread), slowest kind", fontsize=9)
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xlabel("selectivity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "hybrid_filtered.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m s5vec_tools.plots --hybrid OUT_DIR LABEL=results.json ...``"""
    import argparse
    import json
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.plots")
    parser.add_argument("--hybrid", type=Path, required=True, help="directory for the figures")
    parser.add_argument("runs", nargs="+", help="LABEL=path/to/results.json")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"{item!r}: expected LABEL=path")
        runs[label] = json.loads(Path(path).read_text())
    for path in plot_hybrid(runs, args.hybrid):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
