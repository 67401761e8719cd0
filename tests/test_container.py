"""The container recipe (container/build.sh: mmdebstrap + podman import, no Dockerfile) is
built and run here: the image serves with API keys on a published port, keeps its data in
a volume across a restart, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
KEY = "container-admin-key-0123456789"
# This host runs cgroups v1 in hybrid mode (crun refuses it) and gives no CAP_SYS_RESOURCE
# (podman's default rlimits cannot be raised): runc, and limits within the current ones.
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert not check or result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def call(url: str, method: str, path: str, body: Any = None, key: str | None = KEY) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def start(tag: str, volume: str, port: int) -> str:
    cid = podman("run", "-d", *RUN_FLAGS, "-p", f"127.0.0.1:{port}:7533", "-v", f"{volume}:/var/lib/s5vec",
                 "-e", f"S5VEC_API_KEYS={KEY}:admin", tag).stdout.strip()
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                if resp.status == 200:
                    return cid
        except OSError:
            pass
        assert time.monotonic() < deadline, podman("logs", cid, check=False).stdout
        time.sleep(0.5)


def test_the_container_image_builds_serves_and_keeps_its_data_in_a_volume() -> None:
    for tool in ("podman", "mmdebstrap", "runc"):
        assert shutil.which(tool), f"{tool} is needed to build and run the image (make tools installs it)"
    assert os.geteuid() == 0, "mmdebstrap and podman run as root here"
    tag = f"localhost/s5vec-test:{uuid.uuid4().hex[:8]}"
    volume = f"s5vec-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHON": sys.executable}
    built = subprocess.run([str(REPO / "container" / "build.sh"), tag], capture_output=True, text=True, timeout=900,
                           env=env, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cid = start(tag, volume, port)
        assert call(url, "GET", "/api/v1/collections", key=None)[0] == 401  # beyond loopback: keys required
        assert call(url, "POST", "/api/v1/collections", {"name": "v", "dimension": 2})[0] == 201
        assert call(url, "POST", "/api/v1/collections/v/vectors", {"id": "a", "vector": [1, 0]})[0] in (200, 201)
        podman("stop", "-t", "30", cid)
        assert podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        assert "INFO s5vec: stopped" in podman("logs", cid).stdout + podman("logs", cid).stderr
        podman("rm", cid)
        cid = start(tag, volume, port)  # a new container on the same volume
        status, answer = call(url, "POST", "/api/v1/collections/v/search", {"vector": [1, 0.1], "k": 1})
        assert status == 200 and [hit["id"] for hit in answer["results"]] == ["a"]
        with urllib.request.urlopen(f"{url}/ui/", timeout=10) as resp:
            assert b"s5vec console" in resp.read()
        podman("stop", "-t", "30", cid)
        podman("rm", cid)
    finally:
        podman("rm", "-f", "--filter", f"ancestor={tag}", check=False)
        podman("volume", "rm", "-f", volume, check=False)
        podman("rmi", "-f", tag, check=False)
