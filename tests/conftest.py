"""Shared fixtures: the real data set, an in-process app, a daemon subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import urllib.request

from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from s5vec.daemon import create_app, load_config
from s5vec.daemon.runner import DaemonRunner

REPO = Path(__file__).resolve().parents[1]
# the shared data sets sit beside the checkout (../shared), or where $S5VEC_SHARED says
SHARED = Path(os.environ.get("S5VEC_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "minilm-100k"


@dataclass(frozen=True)
class MiniLM:
    base: np.ndarray
    queries: np.ndarray


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    """The first 5,000 real 384-d MiniLM embeddings and the 1,000 queries (float32)."""
    assert DATA.is_dir(), f"shared data set missing at {DATA}"
    base = np.load(DATA / "base.f16.npy", mmap_mode="r")[:5000].astype(np.float32)
    queries = np.load(DATA / "queries.f16.npy").astype(np.float32)
    return MiniLM(base, queries)


def exact_top_k(base: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    norms = base / np.linalg.norm(base, axis=1, keepdims=True)
    scores = norms @ (query / np.linalg.norm(query))
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> Any:
    """Factory: an in-process test client for the real app on a fresh data dir."""
    async def factory(env: dict[str, str] | None = None, data_dir: Path | None = None) -> Any:
        config = load_config(env=env or {}, overrides={"data_dir": str(data_dir or tmp_path / "data")})
        return await aiohttp_client(DaemonTestServer(create_app(config)))
    return factory


class DaemonTestServer(TestServer):
    """The in-process server on the runner ``s5vec serve`` uses (parser errors in the error shape)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return DaemonRunner(self.app, **kwargs)


@pytest.fixture
async def client(make_client: Any) -> AsyncIterator[Any]:
    yield await make_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """``s5vec serve`` as a subprocess on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.args = args  # more ``serve`` arguments (e.g. ``--follow``)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"daemon-{self.port}.log"

    def start(self, timeout: float = 60.0) -> Daemon:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "s5vec.daemon.cli", "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), *self.args], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            return self.proc.wait(30)
        return self.proc.returncode


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "data")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One started ``s5vec serve`` shared by the tests of a module."""
    daemon = Daemon(tmp_path_factory.mktemp("live") / "data").start()
    yield daemon
    daemon.stop()


async def take(stream: Any, count: int, timeout: float = 20) -> list[Any]:
    """The first ``count`` items of an async stream, failing after ``timeout`` seconds."""
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        async for item in stream:
            out.append(item)
            if len(out) == count:
                break
    return out
