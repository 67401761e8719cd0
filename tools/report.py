"""Plain-text rendering of the benchmark results (aligned columns, no dependencies)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

MIB = 1024 * 1024


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; text left-aligned, everything else right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(not isinstance(row[i], str) or _looks_numeric(row[i]) for row in rows) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("x", "").replace("-", "").isdigit()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render(results: dict[str, Any]) -> str:
    """The whole report as text."""
    out: list[str] = []
    p = results["parameters"]
    m = results["machine"]
    out.append(f"s5vec benchmark: {p['data']}")
    out.append(f"  {p['base_vectors']} base vectors x {p['dimension']} dims, {p['queries']} queries, k=10; "
               f"ground truth: {p['ground_truth']}")
    out.append(f"  machine: {m['cpu_count']} CPUs ({m['cpu_usable']} usable) {m.get('cpu_model') or ''}, "
               f"{mib(m.get('mem_total_bytes'))} MiB RAM, {m['platform']}, Python {m['python']}, "
               f"hnswlib {m.get('hnswlib')}")
    if m.get("loadavg_start") is not None:
        out.append(f"  load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in m['loadavg_start'])}, "
                   f"at end {'/'.join(f'{x:.2f}' for x in m.get('loadavg_end') or [])}")
    out.append("  in-process: one query per call, single thread, hnswlib and s5vec passes alternate per ef")
    out.append("  HTTP: daemon subprocess + load generator in a separate process (asyncio/aiohttp, pre-encoded "
               "JSON bodies); both share this machine's CPUs, so HTTP numbers include client cost")
    out.append("")

    ip = results.get("in_process")
    http = results.get("http")
    rows = []
    if ip:
        rb, sb = ip["hnswlib"]["build"], ip["s5vec_in_process"]["build"]
        rows.append(["hnswlib (raw, 2 threads)", rb["vectors"], f(rb["build_s"]), f(rb["vectors_per_s"], 0), "-",
                     mib(rb["rss_delta_bytes"])])
        rows.append(["s5vec in-process", sb["vectors"], f(sb["build_s"]), f(sb["vectors_per_s"], 0),
                     f"apply {f(sb['apply_s'])}s + index {f(sb['index_s'])}s", mib(sb["rss_delta_bytes"])])
    if http and "ingest" in http:
        ing = http["ingest"]
        rows.append(["s5vec HTTP (durable ack)", ing["vectors_acked"], f(ing["elapsed_s"]), f(ing["vectors_per_s"], 0),
                     f"indexed {f(ing['ingest_end_to_indexed_s'])}s after last ack "
                     f"({f(ing['first_write_to_indexed_s'])}s total)", mib(http.get("rss_indexed_bytes"))])
    if rows:
        out.append("Build / ingest")
        out.append(table(["engine", "vectors", "seconds", "vectors/s", "detail", "RSS MiB"], rows))
        out.append("  (RSS MiB: process RSS growth for in-process builds; whole daemon RSS after indexing for HTTP)")
        out.append("")

    if ip:
        out.append("Search in process (single thread, one query per call)")
        rows = []
        for r, s, q in zip(ip["hnswlib"]["search"], ip["s5vec_in_process"]["search"],
                           ip["latency_ratio_s5vec_over_hnswlib"]):
            ok = "ok" if q["mean_ratio"] <= ip["ratio_target"] else "OVER"
            rows.append([r["ef"], f(r["recall@10"], 4), f(r["qps"], 0), f(r["p50_ms"], 3), f(r["p99_ms"], 3),
                         f(s["recall@10"], 4), f(s["qps"], 0), f(s["p50_ms"], 3), f(s["p99_ms"], 3),
                         f"{q['p50_ratio']:.2f}x", f"{q['mean_ratio']:.2f}x", f"{q['p99_ratio']:.2f}x", ok])
        out.append(table(["ef", "hnsw R@10", "hnsw QPS", "hnsw p50", "hnsw p99", "s5vec R@10", "s5vec QPS",
                          "s5vec p50", "s5vec p99", "p50 ratio", "mean ratio", "p99 ratio",
                          f"<= {ip['ratio_target']}x"], rows))
        out.append("  (latencies in ms; ratio = s5vec / raw hnswlib at the same ef)")
        out.append("")

    if http and "search" in http:
        out.append("Search over HTTP (client-observed latency, load generator in its own process)")
        rows = []
        for r in http["search"]:
            rows.append([str(r["ef"]), r["clients"], f(r["recall@10"], 4), f(r["qps"], 0), f(r["p50_ms"], 2),
                         f(r["p99_ms"], 2), f(r.get("server_search_time_ms_p50"), 3), r["queries"], r["errors"],
                         f(r.get("client_cpu_cores")), f(r.get("daemon_cpu_cores"))])
        out.append(table(["ef", "clients", "R@10", "QPS", "p50 ms", "p99 ms", "server ms p50", "requests",
                          "errors", "client CPU", "daemon CPU"], rows))
        out.append("  (server ms = the daemon's own search_time_ms; CPU columns in cores used during the run)")
        out.append("")

    if http:
        out.append("Daemon memory and restart")
        rows = [["RSS after create (empty)", mib(http.get("rss_empty_bytes")) + " MiB"],
                ["RSS after indexing", mib(http.get("rss_indexed_bytes")) + " MiB"],
                ["peak RSS (VmHWM) by then", mib(http.get("rss_peak_bytes")) + " MiB"],
                ["RSS after search runs", mib(http.get("rss_after_search_bytes")) + " MiB"]]
        if ip:
            rows.append(["raw hnswlib index (RSS delta)", mib(ip["hnswlib"]["build"]["rss_delta_bytes"]) + " MiB"])
        rs = http.get("restart")
        if rs:
            rows += [["checkpoint (POST /api/v1/admin/checkpoint)",
                      f"{f(rs.get('checkpoint_s'))} s" if "checkpoint_s" in rs else f"skipped (HTTP {rs['checkpoint_status']})"],
                     ["data dir on disk", mib(rs.get("data_dir_bytes")) + " MiB"],
                     ["SIGTERM -> exit", f"{f(rs['shutdown_s'])} s (exit code {rs['shutdown_exit_code']})"],
                     [f"spawn -> GET {rs['ready_path']} 200", f"{f(rs['spawn_to_ready_s'])} s"],
                     ["spawn -> first search 200", f"{f(rs['spawn_to_first_search_s'])} s"],
                     ["RSS after restart", mib(rs.get("rss_after_restart_bytes")) + " MiB"],
                     [f"recall@10 after restart (ef={rs['recall_check']['ef']}, {rs['recall_check']['queries']} q)",
                      f(rs["recall_check"]["recall@10"], 4)]]
        out.append(table(["measure", "value"], rows))
        out.append("")

    notes = list(results.get("notes", [])) + list((http or {}).get("notes", []))
    if notes:
        out.append("Notes")
        out.extend(f"  - {n}" for n in notes)
        out.append("")
    out.append(f"total wall time {f(results.get('wall_s'), 1)} s; JSON: {results.get('out')}")
    return "\n".join(out)


def finish(results: dict[str, Any], out: Path, started: float, render_fn: Callable[[dict[str, Any]], str]) -> None:
    """Stamp wall time and end load, write the JSON results and print the table."""
    results["wall_s"] = time.perf_counter() - started
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    out.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    print(render_fn(results))
