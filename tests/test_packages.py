"""Packages that install alone: the sdists and wheels of s5vec and s5vec-client are built
(each wheel from its sdist, so the sdist is complete), the s5vec wheel goes into a clean
venv that then runs `s5vec serve` and a search from outside the checkout, and the client
wheel goes into a venv that holds nothing but it and its dependencies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
VERSION = "0.1.0"


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("S5VEC_")}
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
                            check=False)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def venv(path: Path) -> Path:
    """A new venv without system site-packages; returns its python."""
    run(sys.executable, "-m", "venv", path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for project in (REPO / "clients" / "python", REPO):
        run(sys.executable, "-m", "build", "--outdir", out, project)  # sdist, then the wheel from it
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the two wheels (and their dependencies from the package index)."""
    python = venv(tmp_path_factory.mktemp("wheel-venv") / "venv")
    run(python, "-m", "pip", "install", "--quiet", dist / f"s5vec_client-{VERSION}-py3-none-any.whl",
        dist / f"s5vec-{VERSION}-py3-none-any.whl")
    return python


@pytest.fixture(scope="module")
def served(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`s5vec serve` of the clean venv, run outside the checkout (nothing imported from it)."""
    work = tmp_path_factory.mktemp("wheel-run")
    port = free_port()
    log = work / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("S5VEC_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([installed.parent / "s5vec", "serve", "--data-dir", "data", "--port", str(port)],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while f"listening on {url}" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]


def test_the_wheels_and_sdists_carry_the_console_and_the_license(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"s5vec-{VERSION}-py3-none-any.whl", f"s5vec-{VERSION}.tar.gz",
                     f"s5vec_client-{VERSION}-py3-none-any.whl", f"s5vec_client-{VERSION}.tar.gz"]
    with zipfile.ZipFile(dist / f"s5vec-{VERSION}-py3-none-any.whl") as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read(f"s5vec-{VERSION}.dist-info/METADATA").decode()
    assert {"s5vec/daemon/ui/index.html", "s5vec/daemon/ui/console.js", "s5vec/daemon/ui/console.css",
            f"s5vec-{VERSION}.dist-info/licenses/LICENSE"} <= files
    assert not any(name.startswith(("s5vec/client/", "tests/", "s5vec_tools/")) for name in files)
    assert "Requires-Python: <3.12,>=3.11" in metadata and f"Requires-Dist: s5vec-client=={VERSION}" in metadata
    assert "License: MIT" in metadata and "MIT License" in (REPO / "LICENSE").read_text()
    with zipfile.ZipFile(dist / f"s5vec_client-{VERSION}-py3-none-any.whl") as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read(f"s5vec_client-{VERSION}.dist-info/METADATA").decode()
    assert {n for n in files if n.endswith(".py")} == {f"s5vec/client/{m}.py" for m in (
        "__init__", "async_client", "bulk", "cli", "errors", "results", "retry", "sse", "sync_client", "websocket",
        "wire")}
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == ["aiohttp>=3.9", "msgspec>=0.18"]


def test_the_wheel_in_a_clean_venv_serves_and_searches(installed: Path, served: str, tmp_path: Path) -> None:
    s5vec = installed.parent / "s5vec"
    assert run(s5vec, "--version").strip() == f"s5vec {VERSION}"
    env_url = ["--url", served]
    run(s5vec, "collections", "create", "films", "--dimension", "3", "--metric", "cosine", *env_url, cwd=tmp_path)
    run(s5vec, "upsert", "films", "--id", "alien", "--vector", "[0.1, 0.9, 0.1]", "--metadata", '{"year": 1979}',
        *env_url, cwd=tmp_path)
    run(s5vec, "upsert", "films", "--id", "heat", "--vector", "[0.9, 0.1, 0.0]", *env_url, cwd=tmp_path)
    hits = json.loads(run(s5vec, "search", "films", "--vector", "[0.2, 0.8, 0.1]", "-k", "1", "--json", *env_url,
                          cwd=tmp_path))
    assert [hit["id"] for hit in hits["results"]] == ["alien"]
    with urllib.request.urlopen(f"{served}/ui/", timeout=10) as resp:  # package data made it into the wheel
        assert resp.status == 200 and b"s5vec console" in resp.read()
    where = run(installed, "-c", "import s5vec.daemon, s5vec.client; print(s5vec.daemon.__file__, s5vec.client.__file__)")
    assert str(REPO) not in where and "site-packages" in where


def test_the_client_wheel_alone_talks_to_the_daemon(dist: Path, served: str, tmp_path: Path) -> None:
    python = venv(tmp_path / "client-venv")
    run(python, "-m", "pip", "install", "--quiet", dist / f"s5vec_client-{VERSION}-py3-none-any.whl")
    listed = {line.split("==")[0].lower() for line in run(python, "-m", "pip", "freeze").split()}
    assert "s5vec" not in listed and {"s5vec-client", "aiohttp", "msgspec"} <= listed
    assert not listed & {"numpy", "pyarrow", "faiss-cpu", "chroma-hnswlib", "tqdm"}, listed
    script = tmp_path / "client_only.py"
    script.write_text(f"""
import sys
from s5vec.client import Client, NotFound

with Client({served!r}) as client:
    client.create_collection("songs", dimension=2, metric="l2")
    client.upsert_batch("songs", [{{"id": "a", "vector": [0, 0]}}, {{"id": "b", "vector": [5, 5]}}])
    print(client.search("songs", [1, 1], k=1).ids)
    try:
        client.get("songs", "nope")
    except NotFound as exc:
        print(exc.code)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "pyarrow", "s5vec") and m != "s5vec"
             and not m.startswith("s5vec.client")))
""")
    assert run(python, script, cwd=tmp_path).splitlines() == ["['a']", "record_not_found", "[]"]
