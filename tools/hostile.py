"""Adversarial campaign for the reliability report: the fault classes an outside review
found (issue "Hardening"), each against a real daemon subprocess. Filter bombs have their own
run, :mod:`s5vec_tools.filterbomb`.

- **Mid-WAL corruption**: acknowledged batches, SIGKILL, one byte flipped at a random
  offset before the last frame. The daemon must refuse to start (exit 65) naming the file,
  change no byte; ``s5vec wal salvage`` must then bring back every acknowledged record but
  those of the damaged frame. A flip inside the *last* frame is a torn tail (the daemon
  cannot tell it from an unfinished write) and is cut: counted apart.
- **Header bytes**: ``Authorization`` headers the HTTP parser rejects (NUL, DEL, bare CR,
  folded line, over 8 KB) carrying a secret key: the key must appear in no response and no
  log line, every answer is the JSON error shape, and no traceback is logged.

``python -m s5vec_tools.hostile --out bench-results/reliability/hostile.json [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from .daemon_proc import Daemon, DaemonError

BATCHES: Final = 10
PER_BATCH: Final = 50
DIM: Final = 8
SECRET: Final = "hostile-campaign-secret-key-0123456789"
EX_DATAERR: Final = 65


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True,
                          timeout=120)


def _frame_ends(raw: bytes) -> list[int]:
    """Byte offsets where each frame of a WAL segment ends (header: u32 length first)."""
    ends, at = [], 0
    while at + 16 <= len(raw):
        at += 16 + int.from_bytes(raw[at:at + 4], "little")
        ends.append(at)
    return ends


def wal_round(rng: random.Random, workdir: Path, tail: bool) -> dict[str, Any]:
    """One mid-WAL (or, with ``tail``, last-frame) flip; returns what happened."""
    data = workdir / "data"
    daemon = Daemon(data, workdir / "daemon.log", settings={"engine.checkpoint_interval_s": "100000"})
    daemon.start()
    acked: set[str] = set()
    try:
        daemon.wait_status("/ready")
        daemon.request("POST", "/api/v1/collections", {"name": "c", "dimension": DIM})
        daemon.request("POST", "/api/v1/admin/checkpoint")
        for batch in range(BATCHES):
            ids = [f"b{batch}-{i}" for i in range(PER_BATCH)]
            status, _ = daemon.request("POST", "/api/v1/collections/c/vectors/batch", {"vectors": [
                {"id": rid, "vector": [rng.uniform(-1, 1) for _ in range(DIM)]} for rid in ids]})
            if status == 200:
                acked.update(ids)
    finally:
        daemon.kill()
    (segment,) = sorted((data / "wal").glob("*.wal"))
    raw = bytearray(segment.read_bytes())
    ends = _frame_ends(bytes(raw))
    last_start = ends[-2] if len(ends) > 1 else 0
    offset = rng.randrange(last_start, len(raw)) if tail else rng.randrange(0, last_start)
    raw[offset] ^= 1 << rng.randrange(8)
    segment.write_bytes(bytes(raw))
    damaged = bytes(raw)
    out: dict[str, Any] = {"offset": offset, "wal_bytes": len(raw), "acknowledged": len(acked), "tail": tail}

    started = time.perf_counter()
    daemon.start()
    try:
        daemon.wait_status("/ready", timeout=30)
        refused = False
    except DaemonError:
        refused = True
    out["refused_start"] = refused
    out["exit_code"] = daemon.proc.returncode if daemon.proc is not None else None
    log = (workdir / "daemon.log").read_text(errors="replace")
    out["log_names_file"] = segment.name in log and "wal salvage" in log
    out["bytes_unchanged"] = segment.read_bytes() == damaged if refused else None
    if refused:
        inspect = _cli("wal", "inspect", "--data-dir", str(data), "--json")
        out["inspect_exit"] = inspect.returncode
        salvage = _cli("wal", "salvage", "--data-dir", str(data), "--json")
        out["salvage_exit"] = salvage.returncode
        out["salvaged_lost_records"] = json.loads(salvage.stdout)["lost_records"] if salvage.returncode == 0 else None
        daemon.start()
        daemon.wait_status("/ready")
    try:
        present: set[str] = set()
        while True:
            status, page = daemon.request("GET", f"/api/v1/collections/c/vectors?limit=1000&offset={len(present)}")
            ids = [r["id"] for r in page["records"]] if status == 200 else []
            present.update(ids)
            if len(ids) < 1000:
                break
        lost = acked - present
        out["seconds_to_recover"] = round(time.perf_counter() - started, 2)
        out["lost_acknowledged"] = len(lost)
        out["lost_batches"] = len({rid.split("-")[0] for rid in lost})
    finally:
        daemon.stop()
    return out


HEADERS: Final = {
    "trailing NUL": f"Authorization: Bearer {SECRET}\x00".encode(),
    "DEL byte": f"Authorization: Bearer {SECRET}\x7f".encode(),
    "bare CR": f"Authorization: Bearer {SECRET}\rX-Other: 1".encode(),
    "folded line": f"Authorization: Bearer\r\n {SECRET}".encode(),
    "over 8 KB": f"Authorization: Bearer {SECRET}{'A' * 9000}".encode(),
    "NUL in the middle": f"Authorization: Bearer {SECRET[:10]}\x00{SECRET[10:]}".encode(),
}


def header_round(workdir: Path, repeats: int) -> dict[str, Any]:
    """Malformed Authorization headers carrying the key; what leaked and how it answered."""
    data = workdir / "data"
    log_path = workdir / "daemon.log"
    daemon = Daemon(data, log_path)
    plain_env = daemon.env
    daemon.env = lambda: {**plain_env(), "S5VEC_API_KEYS": f"{SECRET}:admin"}  # type: ignore[method-assign]
    daemon.start()
    by_kind: dict[str, dict[str, Any]] = {}
    try:
        daemon.wait_status("/health")
        for kind, header in HEADERS.items():
            statuses, json_shape, leaked = [], 0, 0
            for _ in range(repeats):
                request = (b"GET /api/v1/collections HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n")
                with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
                    sock.sendall(request)
                    answer = b""
                    try:
                        while chunk := sock.recv(65536):
                            answer += chunk
                    except OSError:
                        pass
                head, _, body = answer.partition(b"\r\n\r\n")
                statuses.append(int(head.split()[1]) if head.startswith(b"HTTP/") else 0)
                leaked += SECRET.encode() in answer or SECRET[10:].encode() in answer
                try:
                    json_shape += "error" in json.loads(body)
                except ValueError:
                    pass
            by_kind[kind] = {"requests": repeats, "statuses": sorted(set(statuses)), "json_error_shape": json_shape,
                             "key_in_response": leaked}
    finally:
        daemon.stop()
    log = log_path.read_text(errors="replace")
    return {"requests": repeats * len(HEADERS), "by_header": by_kind,
            "key_in_log": log.count(SECRET) + log.count(SECRET[10:]), "tracebacks_in_log": log.count("Traceback"),
            "key_in_responses": sum(k["key_in_response"] for k in by_kind.values()),
            "non_json_answers": sum(k["requests"] - k["json_error_shape"] for k in by_kind.values())}


def campaign(rounds: int, seed: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    wal = [wal_round(rng, Path(tempfile.mkdtemp(dir=workdir)), tail=False) for _ in range(rounds)]
    tails = [wal_round(rng, Path(tempfile.mkdtemp(dir=workdir)), tail=True) for _ in range(max(1, rounds // 4))]
    headers = header_round(Path(tempfile.mkdtemp(dir=workdir)), repeats=20)
    summary: dict[str, Any] = {
        "mid_wal_corruption": {
            "rounds": len(wal),
            "acknowledged": sum(r["acknowledged"] for r in wal),
            "refused_start_exit_65": sum(r["refused_start"] and r["exit_code"] == EX_DATAERR for r in wal),
            "bytes_unchanged": sum(bool(r["bytes_unchanged"]) for r in wal),
            "log_names_file": sum(r["log_names_file"] for r in wal),
            "lost_acknowledged_after_salvage": sum(r["lost_acknowledged"] for r in wal),
            "lost_batches_after_salvage": sum(r["lost_batches"] for r in wal),
            "expected_lost_batches": len(wal),
        },
        "last_frame_flip_cut_as_torn_tail": {
            "rounds": len(tails),
            "started": sum(not r["refused_start"] for r in tails),
            "lost_batches": sum(r["lost_batches"] for r in tails),
        },
        "header_bytes": headers,
    }
    m = summary["mid_wal_corruption"]
    violations = []
    if m["refused_start_exit_65"] != m["rounds"]:
        violations.append("a mid-WAL flip did not stop start-up with exit 65")
    if m["bytes_unchanged"] != m["rounds"]:
        violations.append("start-up changed a damaged WAL")
    if m["lost_batches_after_salvage"] != m["expected_lost_batches"]:
        violations.append("salvage lost more than the damaged frame's batch")
    if headers["key_in_log"] or headers["key_in_responses"]:
        violations.append("an API key reached a log line or a response")
    if headers["tracebacks_in_log"]:
        violations.append("a malformed header logged a traceback")
    if headers["non_json_answers"]:
        violations.append("a malformed header got a non-JSON answer")
    return {"summary": summary, "violations": violations, "wal_rounds": wal + tails}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="mid-WAL corruption rounds (a quarter more on the tail)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s5vec-hostile-") as tmp:
        result = campaign(args.rounds, args.seed, Path(tmp))
    report = {"name": "hostile", "command": " ".join(["python -m s5vec_tools.hostile", *(argv or sys.argv[1:])]),
              "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
              "seconds": round(time.time() - started, 1), "ok": not result["violations"], **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    for violation in result["violations"]:
        print(f"VIOLATION: {violation}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
