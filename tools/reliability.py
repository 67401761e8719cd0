"""Render RELIABILITY.md from the JSON reports of the reliability runs.

``python -m s5vec_tools.reliability [--dir bench-results/reliability] [--write RELIABILITY.md]``

Each run (crash loop, fault injection, fuzzing, soak) writes one JSON file of the shape
``{"name", "command", "started", "seconds", "ok", "summary": {...}, ...}``. This module
knows only that shape: whatever keys a summary holds are rendered generically (scalars as
a key/value table, nested objects as sub-tables, lists of objects as tables), so a run can
add figures without touching the renderer. A missing file is listed as "not run". Without
``--write`` the Markdown goes to standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from .stats import machine_info

REPO: Final = Path(__file__).resolve().parents[1]
# (file, title, what it shows); the order of the report
RUNS: Final = (
    ("crashloop.json", "Crash loop", ("the daemon is SIGKILLed again and again under write load; every "
                                      "acknowledged write must survive each restart")),
    ("faults.json", "Fault injection", ("storage and network faults are injected under load; nothing "
                                        "acknowledged may be lost and nothing corrupt may be served")),
    ("fuzz.json", "Fuzzing", ("decoders, HTTP routes, WebSocket frames and NDJSON lines get malformed "
                              "input; any crash or 5xx is a failure")),
    ("soak.json", "Soak", ("mixed read/write/subscribe load from several processes; memory growth after "
                           "warm-up under 5 % and no creeping error rate")),
    ("hostile.json", "Adversarial run", ("a byte flipped in the middle of the write-ahead log must stop start-up "
                                         "(exit 65) without changing a byte, and `s5vec wal salvage` must bring "
                                         "back everything but the damaged frame; API keys in header bytes the "
                                         "HTTP parser rejects must reach no log line and no response")),
    ("filterbomb.json", "Filter bombs", ("huge, deep and slow filters sent with a read key must be refused or "
                                         "cut off by the search time limit while reads by id, health and "
                                         "metrics keep answering, and SIGTERM still ends the daemon promptly")),
    ("replication.json", "Replication: write acknowledgement", (
        "single-vector upserts against the S5 portal double (a subprocess, encrypted blobs, signed "
        "registry) with 0 and 50 ms injected on every portal request: `local` acknowledges after the "
        "local fsync, `replicated` after the WAL chunk holding the write is stored and the head naming "
        "it published; a fresh node with only the phrase must then hold every replicated write")),
    ("followers.json", "Followers: lag at 1,000 writes/s, ready time at 100k vectors", (
        "a writer (local durability, shipping every 1 s) and a follower (polling every 250 ms) on the portal "
        "double: the time from the writer applying an LSN to the follower applying it at a steady 1,000 "
        "writes/s; then a new follower from the phrase alone over 100k MiniLM vectors (99k in the manifest, "
        "1k only in shipped chunks), timed from start to open and caught up")),
    ("failover-etcd.json", "Failover through etcd behind HAProxy (replicated)", (
        "1 writer + 2 followers + HAProxy (systemd/haproxy-s5vec.cfg) + a one-member etcd (5 s lease) on the "
        "portal double, 8 threads searching and 8 writing through HAProxy (500 writes/s offered); the writer "
        "is SIGKILLed and a follower takes over by itself: no read may fail, every acknowledged write must be "
        "on the new writer (checked id by id)")),
    ("failover-promote.json", "Failover by `s5vec promote --force` behind HAProxy (replicated)", (
        "the same without etcd: one second after the SIGKILL a follower is promoted by hand")),
    ("failover-etcd-local.json", "Failover through etcd behind HAProxy (local durability)", (
        "the etcd run with durability local: acknowledged writes of the last shipping interval (200 ms here) "
        "may be lost, and are counted")),
)
# Figures worth a line in the overview when a summary has them (looked up at any depth).
HEADLINE_KEYS: Final = ("kills", "faults_injected", "decoder_inputs", "http_calls", "ws_frames", "ndjson_lines",
                        "requests", "acknowledged", "acknowledged_writes", "lost", "corrupt_served", "failures",
                        "errors", "memory_growth_pct", "refused_start_exit_65", "lost_batches_after_salvage",
                        "key_in_log", "bombs_refused_400", "sigterm_to_exit_s")
MAX_ROWS: Final = 40


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if all(not isinstance(v, (dict, list)) for v in value):
            text = ", ".join(_cell(v) for v in value[:20])
            return text + (f", … ({len(value) - 20} more)" if len(value) > 20 else "")
        return f"{len(value)} items"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "none"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _value(key: str, value: Any) -> str:
    """:func:`_cell`, with byte counts (keys ending in ``_bytes``) in MiB."""
    if key.endswith("_bytes") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value / 2**20:,.1f} MiB"
    return _cell(value)


def _is_scalar(value: Any) -> bool:
    """Fits one table cell: not a mapping, not a list of objects, not a long list of texts."""
    if isinstance(value, dict):
        return False
    if isinstance(value, list):
        return all(not isinstance(i, (dict, list)) for i in value) and len(_cell(value)) <= 160
    return True


def _is_flat(mapping: Mapping[str, Any]) -> bool:
    return all(_is_scalar(v) for v in mapping.values())


def _table_of_dicts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    shown = rows if len(rows) <= MAX_ROWS else [rows[i * len(rows) // MAX_ROWS] for i in range(MAX_ROWS)]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_value(c, row.get(c)) for c in columns) + " |" for row in shown]
    if len(shown) < len(rows):
        out.append(f"\n({len(shown)} of {len(rows)} rows, evenly spaced)")
    return out


def render_mapping(mapping: Mapping[str, Any], level: int = 4, title: str | None = None) -> list[str]:
    """A key/value table of the scalar entries of ``mapping``; nested objects become
    sub-tables (a mapping of flat mappings becomes one table), lists of objects tables."""
    out: list[str] = []
    if title:
        out += [f"{'#' * min(level, 6)} {title}", ""]
    scalars = {k: v for k, v in mapping.items() if _is_scalar(v)}
    if scalars:
        out += ["| | |", "|---|---|"] + [f"| {k} | {_value(k, v)} |" for k, v in scalars.items()] + [""]
    for key, value in mapping.items():
        if key in scalars:
            continue
        if isinstance(value, dict):
            if value and all(isinstance(v, dict) and _is_flat(v) for v in value.values()):
                out += [f"{'#' * min(level + 1, 6)} {key}", ""]
                out += _table_of_dicts([{"": k, **v} for k, v in value.items()]) + [""]
            elif not value:
                out += [f"{'#' * min(level + 1, 6)} {key}", "", "none", ""]
            else:
                out += render_mapping(value, level + 1, key)
        else:  # a list holding objects or lists
            out += [f"{'#' * min(level + 1, 6)} {key}", ""]
            if all(isinstance(v, dict) for v in value):
                out += _table_of_dicts(value) + [""]
            else:
                out += [f"- {_cell(v)}" for v in value[:MAX_ROWS]] + [""]
    return out


def _find(mapping: Any, key: str) -> Any:
    """The first value stored under ``key`` anywhere in ``mapping`` (breadth first)."""
    level = [mapping]
    while level:
        nested: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                if key in node:
                    return node[key]
                nested.extend(v for v in node.values() if isinstance(v, dict))
        level = nested
    return None


def _total(value: Any) -> Any:
    if isinstance(value, dict):
        numbers = [_total(v) for v in value.values()]
        numbers = [n for n in numbers if isinstance(n, (int, float)) and not isinstance(n, bool)]
        return sum(numbers) if numbers else None
    if isinstance(value, list):
        return len(value)
    return value


def headline(report: Mapping[str, Any]) -> str:
    """The figures of HEADLINE_KEYS a report's summary holds, dicts summed."""
    summary = report.get("summary") or {}
    parts = []
    for key in HEADLINE_KEYS:
        value = _total(_find(summary, key))
        if value is not None:
            parts.append(f"{key.replace('_', ' ')} {_cell(value)}")
    return "; ".join(parts) or "—"


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty else "")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def load_reports(directory: Path) -> dict[str, dict[str, Any] | None]:
    """The reports of RUNS found in ``directory`` (None: missing), then any other ``*.json``
    there (extra runs, e.g. a longer soak). Unreadable JSON raises ValueError."""
    out: dict[str, dict[str, Any] | None] = {}
    known = [file for file, _title, _what in RUNS]
    extra = sorted(p.name for p in directory.glob("*.json") if p.name not in known) if directory.is_dir() else []
    for file in known + extra:
        path = directory / file
        if not path.is_file():
            out[file] = None
            continue
        try:
            out[file] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return out


def _runs(reports: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """RUNS, then the extra reports of :func:`load_reports` titled by their name and file."""
    known = {file for file, _title, _what in RUNS}
    extra = [(file, f"{(reports[file] or {}).get('name', file)} ({file})", "an additional run, see its command")
             for file in reports if file not in known]
    return [*RUNS, *extra]


def previous_sections(text: str) -> tuple[dict[str, str], dict[str, str], str]:
    """From an earlier RELIABILITY.md: each run's section (by title), each run's overview
    row, and the "generated, commit" line that dates them."""
    sections: dict[str, str] = {}
    rows: dict[str, str] = {}
    title = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = line
        elif title is not None:
            sections[title] += line
    for line in sections.get("Overview", "").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] not in ("Run", "---", "") and cells[2] != "not run":
            title = cells[1].removesuffix(" (earlier run)")
            rows[title] = line.replace(f"| {cells[1]} |", f"| {title} |", 1)
    dated = " ".join(line.split("|")[2].strip() for line in text.splitlines()
                     if line.startswith(("| Generated |", "| Git commit |")))
    return sections, rows, dated


def render(reports: Mapping[str, dict[str, Any] | None], source: str, machine: Mapping[str, Any] | None = None,
           commit: str | None = None, now: datetime | None = None, previous: str | None = None) -> str:
    """The Markdown of RELIABILITY.md for ``reports`` (as :func:`load_reports` returns).
    With ``previous`` (the file as it was), a run without a report keeps its section and
    overview row from it, marked with when it was generated, instead of "not run"."""
    kept_sections, kept_rows, dated = previous_sections(previous) if previous else ({}, {}, "")
    machine = machine if machine is not None else machine_info()
    now = now or datetime.now(UTC)
    ram = machine.get("mem_total_bytes")
    cores = machine.get("cpu_count")
    usable = machine.get("cpu_usable")
    lines = [
        "# Reliability",
        "",
        (f"Generated by `python -m s5vec_tools.reliability` from the JSON reports in `{source}` "
         "(`make reliability` runs everything and regenerates this file). Do not edit by hand: the "
         "figures are from real runs on the machine below."),
        "",
        "| | |", "|---|---|",
        f"| Generated | {now.strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| Git commit | {commit if commit is not None else _git_commit()} |",
        f"| CPU | {machine.get('cpu_model') or 'unknown'}, {cores} cores"
        + (f" ({usable} usable)" if usable and usable != cores else "") + " |",
        f"| RAM | {ram / 2**30:.1f} GiB |" if isinstance(ram, (int, float)) else "| RAM | unknown |",
        f"| Platform | {machine.get('platform', 'unknown')}, Python {machine.get('python', '?')} |",
        "",
        "## Overview",
        "",
        "| Run | Result | Duration | Figures |",
        "|---|---|---|---|",
    ]
    for file, title, _what in _runs(reports):
        report = reports.get(file)
        if report is None and title in kept_rows:
            lines.append(kept_rows[title].rstrip("\n").replace(f"| {title} |", f"| {title} (earlier run) |", 1))
        elif report is None:
            lines.append(f"| {title} | not run | — | — |")
        else:
            result = "ok" if report.get("ok") else "**FAILED**"
            lines.append(f"| {title} | {result} | {_duration(report.get('seconds'))} | {_cell(headline(report))} |")
    rendered = {title for _file, title, _what in _runs(reports)}
    earlier = [title for title in kept_rows if title not in rendered and title in kept_sections]
    lines += [kept_rows[title].replace(f"| {title} |", f"| {title} (earlier run) |", 1) for title in earlier]
    lines.append("")
    for file, title, what in _runs(reports):
        report = reports.get(file)
        if report is None and title in kept_sections and title in kept_rows:
            body = kept_sections[title].split("\n", 1)[1].strip("\n")
            note = f"Not re-run this time: kept from the earlier report ({dated})."
            if body.startswith("Not re-run this time"):
                body = body.split("\n", 1)[1].strip("\n") if "\n" in body else ""
            lines += [f"## {title}", "", note, "", body, ""]
            continue
        lines += [f"## {title}", "", f"What: {what}.", ""]
        if report is None:
            lines += [f"Not run: no `{file}` in `{source}`.", ""]
            continue
        lines += [
            "| | |", "|---|---|",
            f"| Result | {'ok' if report.get('ok') else '**FAILED**'} |",
            f"| Command | `{report.get('command', '—')}` |",
            f"| Started | {report.get('started', '—')} |",
            f"| Duration | {_duration(report.get('seconds'))} |",
            "",
        ]
        summary = report.get("summary")
        if isinstance(summary, dict) and summary:
            lines += render_mapping(summary, 3, "Summary")
        for key in ("violations", "failures"):
            items = report.get(key)
            if isinstance(items, list):
                lines += [f"### {key.capitalize()}", ""]
                if not items:
                    lines += ["none", ""]
                elif all(isinstance(i, dict) for i in items):
                    lines += _table_of_dicts(items) + [""]
                else:
                    lines += [f"- {_cell(i)}" for i in items[:MAX_ROWS]] + [""]
        series = report.get("series")
        if isinstance(series, list) and series and all(isinstance(s, dict) for s in series):
            flat = [{k: v for k, v in s.items() if not isinstance(v, (dict, list))} for s in series]
            lines += ["### Series", ""] + _table_of_dicts(flat) + [""]
    for title in earlier:
        body = kept_sections[title].split("\n", 1)[1].strip("\n")
        if body.startswith("Not re-run this time"):
            body = body.split("\n", 1)[1].strip("\n") if "\n" in body else ""
        lines += [f"## {title}", "", f"Not re-run this time: kept from the earlier report ({dated}).", "", body, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.reliability", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-results/reliability"),
                        help="where crashloop.json, faults.json, fuzz.json and soak.json are")
    parser.add_argument("--write", type=Path, help="write the Markdown here (default: standard output)")
    parser.add_argument("--keep", action="store_true",
                        help="a run without a report keeps its section from the file --write replaces")
    args = parser.parse_args(argv)
    try:
        reports = load_reports(args.dir)
    except ValueError as exc:
        print(f"s5vec_tools.reliability: {exc}", file=sys.stderr)
        return 1
    previous = args.write.read_text() if args.keep and args.write is not None and args.write.is_file() else None
    text = render(reports, str(args.dir), previous=previous)
    if args.write is None:
        sys.stdout.write(text)
    else:
        args.write.write_text(text)
        found = sum(reports.get(file) is not None for file, _title, _what in RUNS)
        extra = len(reports) - len(RUNS)
        print(f"wrote {args.write} from {found} of {len(RUNS)} reports in {args.dir}"
              + (f" and {extra} other" if extra else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
