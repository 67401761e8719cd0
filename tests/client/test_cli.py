"""The ``s5vec`` client commands as subprocesses against a real daemon: ``--json``
output, exit codes, and import of NDJSON / CSV / .npy whose export equals the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon, free_port

pytestmark = pytest.mark.e2e
S5VEC = str(Path(sys.executable).parent / "s5vec")


def s5vec(daemon: Daemon | None, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    if daemon is not None:
        env["S5VEC_URL"] = daemon.url
    return subprocess.run([S5VEC, *args], capture_output=True, text=True, input=stdin, env=env, timeout=90,
                          check=False)


def js(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def exported(daemon: Daemon, collection: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{collection}.ndjson"
    result = s5vec(daemon, "export", collection, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert js(result)["exported"] == len(lines)
    return lines


def test_collections_commands_print_json_and_exit_with_meaningful_codes(live: Daemon) -> None:
    created = s5vec(live, "--json", "collections", "create", "k-col", "--dimension", "3", "--metric", "l2",
                    "--index", "genre=keyword")
    assert created.returncode == 0 and js(created)["payload_indexes"] == {"genre": "keyword"}
    clash = s5vec(live, "collections", "create", "k-col", "-d", "4", "--json")
    assert clash.returncode == 1 and js(clash)["error"]["code"] == "collection_exists"
    listed = s5vec(live, "collections", "list", "--json")
    assert "k-col" in [c["name"] for c in js(listed)]
    text = s5vec(live, "collections", "list")
    assert text.returncode == 0 and "k-col" in text.stdout
    assert js(s5vec(live, "collections", "get", "k-col", "--json"))["dimension"] == 3
    missing = s5vec(live, "collections", "get", "nope")
    assert missing.returncode == 1 and "collection_not_found" in missing.stderr
    assert s5vec(live, "collections", "drop", "k-col", "--json").returncode == 0
    assert s5vec(live, "collections", "get", "k-col").returncode == 1


def test_usage_errors_exit_2_and_an_unreachable_daemon_exits_3() -> None:
    assert s5vec(None, "search").returncode == 2  # argparse
    bad = s5vec(None, "search", "c", "--vector", "[1, oops]", "--json")
    assert bad.returncode == 2 and js(bad)["error"]["code"] == "usage"
    down = s5vec(None, "--url", f"http://127.0.0.1:{free_port()}", "collections", "list", "--json")
    assert down.returncode == 3 and js(down)["error"]["code"] == "connection_failed"


def test_ndjson_import_reports_rejected_lines_and_export_round_trips(live: Daemon, tmp_path: Path) -> None:
    records = [{"id": f"n{i:02d}", "metadata": {"i": i, "tags": ["a", "b"][: i % 3]}, "timestamp": 1.7e9 + i,
                "vector": [i / 4, 1.0, -0.5, 2.0]} for i in range(40)]
    source = tmp_path / "in.ndjson"
    lines = [json.dumps(r) for r in records]
    lines.insert(5, "")  # blank lines count, so error line numbers match the file
    lines.insert(10, json.dumps({"id": "short", "vector": [1.0]}))
    source.write_text("\n".join(lines) + "\n")
    result = s5vec(live, "import", "k-nd", str(source), "--create", "--metric", "l2", "--json")
    assert result.returncode == 4, result.stderr  # partly done: one line rejected
    report = js(result)
    assert (report["successful"], report["failed"]) == (40, 1)
    assert [(e["line"], e["id"], e["error"]["code"]) for e in report["errors"]] == [(11, "short", "dimension_mismatch")]
    assert exported(live, "k-nd", tmp_path) == records  # id order, same fields and values
    again = s5vec(live, "import", "k-nd2", str(tmp_path / "k-nd.ndjson"), "--create", "--metric", "l2")
    assert again.returncode == 0 and "imported 40 of 40" in again.stdout
    assert (tmp_path / "k-nd2.ndjson").exists() is False
    exported(live, "k-nd2", tmp_path)
    assert (tmp_path / "k-nd2.ndjson").read_bytes() == (tmp_path / "k-nd.ndjson").read_bytes()


def test_csv_import_reads_vector_columns_in_every_documented_form(live: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,vector,genre,views,timestamp\n"
                      'c1,"[0.5, 0.25, 1]",drama,10,1700000000\n'
                      "c2,0.5 0.25 2,comedy,5,2023-11-14T22:13:21Z\n"
                      "c3,0.5;0.25;3,,7,1700000002\n"
                      'c4,"0.5,0.25,4","multi\nline",1,1700000003\n'
                      "c5,not a vector,drama,1,1700000004\n")
    assert s5vec(live, "collections", "create", "k-csv", "-d", "3", "--metric", "l2").returncode == 0
    result = s5vec(live, "import", "k-csv", str(source), "--infer-types", "--json")
    report = js(result)
    assert result.returncode == 4 and (report["successful"], report["failed"]) == (4, 1)
    assert [(e["line"], e["id"]) for e in report["errors"]] == [(7, "c5")]  # the CSV line, header included
    assert exported(live, "k-csv", tmp_path) == [
        {"id": "c1", "metadata": {"genre": "drama", "views": 10}, "timestamp": 1700000000.0, "vector": [0.5, 0.25, 1.0]},
        {"id": "c2", "metadata": {"genre": "comedy", "views": 5}, "timestamp": 1700000001.0, "vector": [0.5, 0.25, 2.0]},
        {"id": "c3", "metadata": {"views": 7}, "timestamp": 1700000002.0, "vector": [0.5, 0.25, 3.0]},
        {"id": "c4", "metadata": {"genre": "multi\nline", "views": 1}, "timestamp": 1700000003.0,
         "vector": [0.5, 0.25, 4.0]}]
    plain = tmp_path / "plain.tsv"
    plain.write_text("name\temb\tviews\nx\t1 0 0\t007\n")
    result = s5vec(live, "import", "k-csv", str(plain), "--id-column", "name", "--vector-column", "emb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert js(s5vec(live, "get", "k-csv", "x", "--json"))["metadata"] == {"views": "007"}  # strings by default


def test_npy_import_with_metadata_round_trips(live: Daemon, tmp_path: Path) -> None:
    vectors = (np.arange(60, dtype=np.float32).reshape(20, 3) / 8).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    meta = [{"id": f"p{i:02d}", "metadata": {"row": i}, "timestamp": 1.6e9 + i} for i in range(20)]
    (tmp_path / "meta.ndjson").write_text("".join(json.dumps(m) + "\n" for m in meta))
    result = s5vec(live, "import", "k-npy", str(tmp_path / "v.npy"), "--metadata", str(tmp_path / "meta.ndjson"),
                   "--create", "--metric", "l2", "--json")
    assert result.returncode == 0 and js(result)["successful"] == 20, result.stdout + result.stderr
    records = exported(live, "k-npy", tmp_path)
    assert [r["id"] for r in records] == [m["id"] for m in meta]
    assert [r["metadata"] for r in records] == [m["metadata"] for m in meta]
    assert np.array_equal(np.array([r["vector"] for r in records], np.float32), vectors)
    bare = s5vec(live, "import", "k-npy", str(tmp_path / "v.npy"), "--id-prefix", "row-")
    assert bare.returncode == 0 and js(s5vec(live, "get", "k-npy", "row-19", "--json"))["vector"] == [7.125, 7.25, 7.375]
    short = tmp_path / "short.ndjson"
    short.write_text("{}\n")
    mismatch = s5vec(live, "import", "k-npy", str(tmp_path / "v.npy"), "--metadata", str(short))
    assert mismatch.returncode == 2 and "1 lines for 20 rows" in mismatch.stderr


def test_upsert_search_get_and_delete(live: Daemon, tmp_path: Path) -> None:
    assert s5vec(live, "collections", "create", "k-q", "-d", "2", "--metric", "l2").returncode == 0
    one = s5vec(live, "upsert", "k-q", "--id", "a", "--vector", "[1, 0]", "--metadata", '{"genre": "drama"}', "--json")
    assert one.returncode == 0 and js(one) == {"id": "a", "status": "upserted"}
    many = s5vec(live, "upsert", "k-q", "--file", "-", "--json",
                 stdin='{"id": "b", "vector": [0.9, 0.1]}\n{"id": "c", "vector": [0, 1], "metadata": {"genre": "x"}}\n')
    assert many.returncode == 0 and js(many)["successful"] == 2
    found = js(s5vec(live, "search", "k-q", "--vector", "[1, 0]", "-k", "2", "--json"))
    assert [r["id"] for r in found["results"]] == ["a", "b"]
    filtered = js(s5vec(live, "search", "k-q", "--vector", "[1, 0]", "--filter", '{"genre": "x"}', "--json"))
    assert [r["id"] for r in filtered["results"]] == ["c"]
    like = js(s5vec(live, "search", "k-q", "--id", "a", "-k", "1", "--json"))
    assert [r["id"] for r in like["results"]] == ["b"]  # the record itself is left out
    table = s5vec(live, "search", "k-q", "--vector", "[1, 0]")
    assert table.returncode == 0 and "drama" in table.stdout
    assert js(s5vec(live, "get", "k-q", "a", "--json"))["vector"] == [1.0, 0.0]
    assert s5vec(live, "get", "k-q", "nope").returncode == 1
    both = s5vec(live, "get", "k-q", "a", "nope", "--json")
    assert both.returncode == 4 and js(both)["missing"] == ["nope"]
    partial = s5vec(live, "delete", "k-q", "--id", "a", "--id", "nope", "--json")
    assert partial.returncode == 4 and js(partial)["deleted"] == 1
    assert s5vec(live, "delete", "k-q", "--id", "a").returncode == 1  # nothing to delete
    by_filter = s5vec(live, "delete", "k-q", "--filter", '{"genre": "x"}', "--json")
    assert by_filter.returncode == 0 and js(by_filter)["deleted"] == 1


def test_storage_status_and_checkpoint(live: Daemon) -> None:
    status = js(s5vec(live, "storage", "status", "--json"))
    assert status["storage"]["mode"] == "local" and status["source"] == "statistics"
    checkpoint = s5vec(live, "storage", "checkpoint", "--json")
    assert checkpoint.returncode == 0 and "lsn" in js(checkpoint)
    text = s5vec(live, "storage", "status")
    assert "reachable: true" in text.stdout and "checkpoint_lsn" in text.stdout and "mode: local" in text.stdout
    assert "last_error: null" in text.stdout  # JSON values, not Python reprs
    assert not {"True", "False", "None"} & set(text.stdout.replace(":", " ").split())


def test_parquet_arrow_and_npy_files_import_in_bulk_and_are_searchable(live: Daemon, tmp_path: Path) -> None:
    import time

    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 6)).astype(np.float32)
    old = time.time() - 30 * 86_400
    table = pa.table({"id": [f"f{i}" for i in range(500)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 6),
                      "genre": ["drama" if i % 2 else "news" for i in range(500)],
                      "timestamp": [old if i < 400 else time.time() for i in range(500)]})
    pq.write_table(table.slice(0, 250), tmp_path / "a.parquet")
    feather.write_feather(table.slice(250), tmp_path / "b.arrow")
    result = s5vec(live, "import", "k-bulk", str(tmp_path / "a.parquet"), str(tmp_path / "b.arrow"), "--create",
                   "--chunk-rows", "100", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = js(result)
    assert report["records"] == 500 and report["historical"] == 400 and report["requests"] == 6
    got = js(s5vec(live, "get", "k-bulk", "f260", "--json"))
    assert got["metadata"] == {"genre": "news"} and np.allclose(got["vector"], vectors[260] / np.linalg.norm(vectors[260]),
                                                                 atol=1e-6)
    hits = js(s5vec(live, "search", "k-bulk", "--vector", json.dumps(vectors[17].tolist()), "-k", "1", "--json"))
    assert hits["results"][0]["id"] == "f17"
    np.save(tmp_path / "more.npy", vectors[:10])
    assert s5vec(live, "import", "k-bulk", str(tmp_path / "more.npy"), "--id-prefix", "n").returncode == 0
    assert js(s5vec(live, "get", "k-bulk", "n9", "--json"))["id"] == "n9"


def test_a_bulk_import_the_server_refuses_exits_1_naming_the_file_and_rows(live: Daemon, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert s5vec(live, "collections", "create", "k-bad", "-d", "4").returncode == 0
    vectors = np.ones((30, 4), np.float32)
    vectors[25, 2] = np.nan
    pq.write_table(pa.table({"id": [str(i) for i in range(30)],
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4)}),
                   tmp_path / "bad.parquet")
    result = s5vec(live, "import", "k-bad", str(tmp_path / "bad.parquet"), "--chunk-rows", "20")
    assert result.returncode == 1
    assert "bad.parquet rows 20..29" in result.stderr and "rows[5].vector" in result.stderr, result.stderr
    wrong = s5vec(live, "import", "k-bad", str(tmp_path / "bad.parquet"), "--vector-column", "emb")
    assert wrong.returncode == 2 and "no column 'emb'" in wrong.stderr


def test_collections_list_in_name_order_whatever_the_creation_order(live: Daemon) -> None:
    for name in ("zz-last", "aa-first", "mm-middle"):
        assert s5vec(live, "collections", "create", name, "--dimension", "2").returncode == 0
    names = [c["name"] for c in js(s5vec(live, "collections", "list", "--json"))]
    assert names == sorted(names) and {"zz-last", "aa-first", "mm-middle"} <= set(names)
    lines = s5vec(live, "collections", "list").stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == names
