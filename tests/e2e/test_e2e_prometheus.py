"""End to end: a real Prometheus server scrapes ``s5vec serve``; the Grafana dashboard's
queries all evaluate on it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Daemon, free_port

pytestmark = pytest.mark.e2e
API = "/api/v1"
POINTS = 25


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


class Prometheus:
    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: `make tools` installs Debian's prometheus package")
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: s5vec\n    metrics_path: /metrics\n"
                          f"    static_configs:\n      - targets: ['{target}']\n")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> dict[str, Any]:
        reply: dict[str, Any] = call(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return reply

    def wait_for(self, expr: str, want: float, timeout: float = 60.0) -> None:
        """Until ``expr`` has a sample equal to ``want`` (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                last = self.query(expr)["data"]["result"]
                if any(float(r["value"][1]) == want for r in last):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{expr} never became {want} (last {last}):\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(daemon: Daemon) -> Prometheus:
        server = Prometheus(tmp_path, f"127.0.0.1:{daemon.port}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_real_prometheus_scrapes_the_daemon_and_evaluates_every_dashboard_query(
        daemon: Daemon, prometheus_for: Any) -> None:
    daemon.start()
    call(f"{daemon.url}{API}/collections", {"name": "c", "dimension": 4})
    call(f"{daemon.url}{API}/collections/c/vectors/batch",
         {"vectors": [{"id": f"p{i}", "vector": [1, i, 0, 1]} for i in range(POINTS)]})
    for i in range(3):
        call(f"{daemon.url}{API}/collections/c/search", {"vector": [1, i, 1, 0], "k": 5})
    prometheus = prometheus_for(daemon)
    prometheus.wait_for('up{job="s5vec"}', 1)
    prometheus.wait_for('s5vec_points{collection="c",tier="recent"}', POINTS)
    prometheus.wait_for('sum(s5vec_http_request_duration_seconds_count{route="/api/v1/collections/{c}/search"})', 3)

    targets = call(f"{prometheus.url}/api/v1/targets")["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]

    dashboard = json.loads((REPO / "ops" / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            reply = prometheus.query(target["expr"])
            assert reply["status"] == "success", (panel["title"], target["expr"], reply)
    points = prometheus.query("s5vec_points")["data"]["result"]
    assert {(r["metric"]["collection"], r["metric"]["tier"], r["value"][1]) for r in points} == {
        ("c", "recent", str(POINTS)), ("c", "historical", "0")}
