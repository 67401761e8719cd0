"""End to end: a real Prometheus server scrapes ``s5vec serve``; the Grafana dashboard's
queries all evaluate on it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
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
TASKS = ("checkpoint", "scrub", "backup")


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def with_instance(expr: str, instance: str) -> str:
    """``expr`` with the dashboard's ``$instance`` as Grafana substitutes one selected value
    (regex-escaped inside a PromQL string)."""
    return expr.replace("$instance", re.escape(instance).replace("\\", "\\\\"))


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
    with pytest.raises(urllib.error.HTTPError, match="404"):
        call(f"{daemon.url}{API}/collections/missing")
    prometheus = prometheus_for(daemon)
    prometheus.wait_for('up{job="s5vec"}', 1)
    prometheus.wait_for('s5vec_points{collection="c",tier="recent"}', POINTS)
    prometheus.wait_for('sum(s5vec_http_request_duration_seconds_count{route="/api/v1/collections/{c}/search"})', 3)

    for task in TASKS:  # jobs of three names: the dashboard's job panels must keep them apart
        call(f"{daemon.url}{API}/admin/{task}", {})
    prometheus.wait_for(f"count(s5vec_job_last_success_timestamp_seconds) >= bool {len(TASKS)}", 1)
    prometheus.wait_for('min(count_over_time(s5vec_job_last_success_timestamp_seconds[1m])) >= bool 3', 1)

    targets = call(f"{prometheus.url}/api/v1/targets")["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]

    # the dashboard's instance variable, as Grafana fills it: label_values(s5vec_ready, instance)
    instances = call(f"{prometheus.url}/api/v1/label/instance/values?"
                     + urllib.parse.urlencode({"match[]": "s5vec_ready"}))["data"]
    assert instances == [f"127.0.0.1:{daemon.port}"]
    dashboard = json.loads((REPO / "ops" / "grafana-dashboard.json").read_text())
    per_task, empty = [], []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = with_instance(target["expr"], instances[0])
            reply = prometheus.query(expr)
            assert reply["status"] == "success", (panel["title"], expr, reply)
            series = [r["metric"] for r in reply["data"]["result"]]
            if not series:
                empty.append((panel["title"], target["refId"]))
            for label in re.findall(r"{{\s*(\w+)\s*}}", target.get("legendFormat", "")):
                assert all(label in s for s in series), (panel["title"], label, series)
            if "{{task}}" in target.get("legendFormat", ""):
                per_task.append(panel["title"])
                assert set(TASKS) <= {s["task"] for s in series}, (panel["title"], series)
            # another daemon's instance: every selector filters, so nothing of this one shows
            other = prometheus.query(with_instance(target["expr"], "127.0.0.1:1"))["data"]["result"]
            assert other == [], (panel["title"], target["expr"], other)
    assert len(per_task) == 3, per_task
    # a healthy local store has no failed or retried requests, and no alert is active
    assert empty == [("Backend requests, errors and retries per second", "B"),
                     ("Backend requests, errors and retries per second", "C"), ("Active health alerts", "A")], empty
    scraped = prometheus.query('{__name__=~"s5vec_.+"}')["data"]["result"]
    assert scraped and not [r["metric"] for r in scraped if "exported_job" in r["metric"]]
    assert {r["metric"]["job"] for r in scraped} == {"s5vec"}  # the scrape job's name, as configured
    points = prometheus.query("s5vec_points")["data"]["result"]
    assert {(r["metric"]["collection"], r["metric"]["tier"], r["value"][1]) for r in points} == {
        ("c", "recent", str(POINTS)), ("c", "historical", "0")}
