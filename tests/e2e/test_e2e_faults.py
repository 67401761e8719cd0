"""End to end: ``s5vec serve`` as a subprocess with disk faults switched on and off while it
runs (a test-only ``sitecustomize`` patches ``os.write``/``os.fsync``; on a machine that
lets us mount a tmpfs, also a real full disk), a real client, then SIGKILL and a
restart: every acknowledged write is there, every refused one is not."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon
from s5vec.client import AsyncClient, S5vecError

pytestmark = pytest.mark.e2e
INJECT = Path(__file__).parent / "faultinject"
DIM = 8


def record(n: int) -> dict[str, Any]:
    return {"id": f"r{n}", "vector": np.random.default_rng(n).normal(size=DIM).astype(np.float32).tolist(),
            "metadata": {"n": n}}


@pytest.fixture
def control(tmp_path: Path) -> Path:
    path = tmp_path / "faults"
    path.write_text("")
    return path


@pytest.fixture
def faulty(tmp_path: Path, control: Path) -> Iterator[Daemon]:
    pythonpath = os.pathsep.join(p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p)
    daemon = Daemon(tmp_path / "data", {"PYTHONPATH": pythonpath, "S5VEC_FAULT_CONTROL": str(control)})
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.kill()


async def write(client: AsyncClient, start: int, count: int, acked: set[int], refused: dict[int, S5vecError],
                batch: int = 1) -> None:
    """Upsert records ``start`` .. ``start + count`` in requests of ``batch``; sort them into
    acknowledged and refused (with the error)."""
    for first in range(start, start + count, batch):
        numbers = range(first, min(first + batch, start + count))
        try:
            await client.upsert_batch("c", [record(n) for n in numbers])
        except S5vecError as exc:
            refused.update(dict.fromkeys(numbers, exc))
        else:
            acked.update(numbers)


async def check_after_restart(daemon: Daemon, acked: set[int], refused: set[int]) -> None:
    async with AsyncClient(daemon.url, retries=0) as client:
        assert (await client.get_collection("c")).count == len(acked)
        stride = max(1, len(acked) // 100)  # the count covers the rest
        for n in sorted(acked)[::stride]:
            got = await client.get("c", f"r{n}")
            assert got.metadata == {"n": n} and np.allclose(got.vector, record(n)["vector"])
        for n in sorted(refused)[::max(1, len(refused) // 20)]:
            with pytest.raises(S5vecError) as missing:
                await client.get("c", f"r{n}")
            assert missing.value.status == 404


def test_writes_on_a_full_wal_disk_get_507_and_every_acknowledged_write_survives_sigkill(
        faulty: Daemon, control: Path) -> None:
    acked: set[int] = set()
    refused: dict[int, S5vecError] = {}

    async def run() -> None:
        async with AsyncClient(faulty.url, retries=0) as client:
            await client.create_collection("c", DIM, "l2")
            await write(client, 0, 20, acked, refused)
            control.write_text("write ENOSPC /wal/ partial\n")
            await write(client, 20, 5, acked, refused)
            health = await client.health()
            assert health["status"] == "degraded" and "last write failed" in health["storage"]["reason"]
            assert (await client.search("c", record(3)["vector"], k=1)).ids == ["r3"]  # reads go on
            control.write_text("")  # space is back
            await write(client, 25, 20, acked, refused)
            assert (await client.health())["status"] == "ok"

    faulty.start()
    asyncio.run(run())
    assert acked == set(range(20)) | set(range(25, 45)) and set(refused) == set(range(20, 25))
    assert all(exc.status == 507 and exc.code == "storage_full" for exc in refused.values())
    faulty.kill()
    faulty.start()  # the control file is empty: a normal restart from the WAL
    asyncio.run(check_after_restart(faulty, acked, set(refused)))
    assert faulty.stop() == 0


def test_after_a_failed_wal_fsync_writes_get_503_until_restart_and_nothing_acknowledged_is_lost(
        faulty: Daemon, control: Path) -> None:
    acked: set[int] = set()
    refused: dict[int, S5vecError] = {}

    async def run() -> None:
        async with AsyncClient(faulty.url, retries=0) as client:
            await client.create_collection("c", DIM, "l2")
            await write(client, 0, 20, acked, refused)
            control.write_text("fsync EIO /wal/\n")
            await write(client, 20, 3, acked, refused)
            control.write_text("")  # the disk answers again; the log stays shut
            await write(client, 23, 3, acked, refused)
            health = await client.health()
            assert health["status"] == "failing" and "restart" in health["storage"]["reason"]
            assert (await client.get("c", "r5")).metadata == {"n": 5}

    faulty.start()
    asyncio.run(run())
    assert acked == set(range(20)) and set(refused) == set(range(20, 26))
    assert all(exc.status == 503 and exc.code == "storage_read_only" for exc in refused.values())
    faulty.kill()
    faulty.start()

    async def after() -> None:
        await check_after_restart(faulty, acked, set(refused))
        async with AsyncClient(faulty.url, retries=0) as client:
            assert (await client.health())["status"] == "ok"
            await write(client, 100, 5, acked, refused)
        assert set(range(100, 105)) <= acked

    asyncio.run(after())
    faulty.kill()
    faulty.start()
    asyncio.run(check_after_restart(faulty, acked, set(refused)))
    assert faulty.stop() == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (skips where mounting is not allowed, e.g. without root)."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount(8) here")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s file system; delete the file to free them."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_really_full_disk_refuses_writes_with_507_and_loses_nothing_acknowledged(tmpfs: Path) -> None:
    daemon = Daemon(tmpfs / "data")
    acked: set[int] = set()
    refused: dict[int, S5vecError] = {}

    async def run() -> None:
        async with AsyncClient(daemon.url, retries=0) as client:
            await client.create_collection("c", DIM, "l2")
            await write(client, 0, 200, acked, refused, batch=100)
            filler = await asyncio.to_thread(fill, tmpfs)
            await write(client, 200, 500, acked, refused, batch=100)  # more than the last page holds
            assert (await client.health())["status"] == "degraded"
            assert (await client.get("c", "r1")).metadata == {"n": 1}
            filler.unlink()
            await write(client, 700, 200, acked, refused, batch=100)

    daemon.start()
    try:
        asyncio.run(run())
        assert set(range(200)) | set(range(700, 900)) <= acked and refused
        assert all(exc.status == 507 and exc.code == "storage_full" for exc in refused.values())
        daemon.kill()
        daemon.start()
        asyncio.run(check_after_restart(daemon, acked, set(refused)))
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
