"""``GET /metrics``, the request-latency middleware, ``/api/v1/admin/health`` and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from prometheus_client.parser import text_string_to_metric_families

API = "/api/v1"
DASHBOARD = REPO / "ops" / "grafana-dashboard.json"
READ_KEY = "read-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
KEYS = f"{READ_KEY}:read;{ADMIN_KEY}:admin"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Any, headers: dict[str, str] | None = None) -> tuple[str, Samples]:
    resp = await client.get("/metrics", headers=headers or {})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    return text, {(s.name, frozenset(s.labels.items())): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}


def promtool_check(exposition: bytes) -> None:
    """``promtool check metrics`` (Prometheus's own linter) finds nothing to complain about."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30,
                          check=False)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()


def requests(samples: Samples, route: str, method: str, status: str) -> float:
    key = ("s5vec_http_request_duration_seconds_count",
           frozenset({"route": route, "method": method, "status": status}.items()))
    return samples.get(key, 0.0)


async def test_metrics_count_points_and_requests_by_route_template(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "videos", "dimension": 3})
    for i in range(7):
        resp = await client.post(f"{API}/collections/videos/vectors", json={"id": f"v{i}", "vector": [1, i, 0]})
        assert resp.status == 201
    for _ in range(4):
        resp = await client.post(f"{API}/collections/videos/search", json={"vector": [1, 0, 0], "k": 3})
        assert resp.status == 200
    assert (await client.get(f"{API}/collections/videos/vectors/missing")).status == 404
    assert (await client.get("/no/such/route")).status == 404
    _, samples = await scrape(client)
    assert samples[("s5vec_points", frozenset({"collection": "videos", "tier": "recent"}.items()))] == 7
    assert requests(samples, "/api/v1/collections/{c}/vectors", "POST", "201") == 7
    assert requests(samples, "/api/v1/collections/{c}/search", "POST", "200") == 4
    assert requests(samples, "/api/v1/collections/{c}/vectors/{id}", "GET", "404") == 1
    assert requests(samples, "unmatched", "GET", "404") == 1
    # the query cache answers repeats without searching: one search reached the index
    assert samples[("s5vec_search_duration_seconds_count", frozenset({("tier", "recent")}))] >= 1
    assert not any("videos/vectors/v" in name or "/no/such" in str(labels) for name, labels in samples)


async def test_metrics_are_public_on_loopback_and_need_a_read_key_when_required(make_client: Any,
                                                                                 tmp_path: Path) -> None:
    client = await make_client({"S5VEC_API_KEYS": KEYS}, tmp_path / "open")
    await scrape(client)  # loopback and require_auth unset: Prometheus needs no token
    client = await make_client({"S5VEC_API_KEYS": KEYS, "S5VEC_METRICS__REQUIRE_AUTH": "true"}, tmp_path / "closed")
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong-key-0123456789"})).status == 401
    await scrape(client, {"Authorization": f"Bearer {READ_KEY}"})


def test_metrics_need_a_key_by_default_when_bound_beyond_loopback() -> None:
    from s5vec.daemon import load_config
    assert load_config(env={"S5VEC_HOST": "0.0.0.0", "S5VEC_API_KEYS": KEYS}).metrics_need_auth
    assert not load_config(env={"S5VEC_HOST": "0.0.0.0", "S5VEC_API_KEYS": KEYS,
                                "S5VEC_METRICS__REQUIRE_AUTH": "false"}).metrics_need_auth
    assert not load_config().metrics_need_auth


async def test_admin_health_report_applies_configured_thresholds(make_client: Any) -> None:
    client = await make_client({"S5VEC_API_KEYS": KEYS, "S5VEC_HEALTH__WAL_MAX_BYTES": "100"})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await client.get(f"{API}/admin/health", headers={"Authorization": f"Bearer {READ_KEY}"})).status == 403
    body = await (await client.get(f"{API}/admin/health", headers=admin)).json()
    assert body["status"] == "ok" and body["alerts"] == []
    assert body["checks"]["wal_bytes"]["threshold"] == 100
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3}, headers=admin)
    await client.post(f"{API}/collections/c/vectors", json={"id": "a", "vector": [1, 2, 3]}, headers=admin)
    body = await (await client.get(f"{API}/admin/health", headers=admin)).json()
    assert body["status"] in ("warning", "critical")
    (alert,) = body["alerts"]
    assert alert["alert"] == "wal_too_large" and alert["threshold"] == 100 and alert["value"] > 100
    _, samples = await scrape(client)
    assert samples[("s5vec_health_alerts", frozenset({"alert": "wal_too_large",
                                                      "severity": alert["severity"]}.items()))] == 1


def test_a_bad_health_threshold_fails_start_up_naming_the_key() -> None:
    from s5vec.daemon import load_config
    from s5vec.daemon.config import ConfigError
    with pytest.raises(ConfigError, match="health.wal_max_bytes"):
        load_config(env={"S5VEC_HEALTH__WAL_MAX_BYTES": "-1"})
    with pytest.raises(ConfigError, match="log_format"):
        load_config(env={"S5VEC_LOG_FORMAT": "xml"})


def dashboard_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) > 20
    return {name for expr in exprs for name in re.findall(r"\bs5vec_[a-z0-9_]+", expr)}


def exported_names(text: str) -> set[str]:
    """Sample names, plus the names a family without samples yet would have."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


async def test_every_dashboard_query_uses_metrics_the_daemon_exports(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3})
    text, _ = await scrape(client)
    missing = dashboard_names() - exported_names(text)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {sorted(missing)}"


async def test_live_scrape_passes_promtool(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3})
    await client.post(f"{API}/collections/c/vectors", json={"id": "a", "vector": [1, 2, 3]})
    await client.post(f"{API}/collections/c/search", json={"vector": [1, 2, 3]})
    text, _ = await scrape(client)
    promtool_check(text.encode())


async def test_metrics_export_no_created_timestamps(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "c", "dimension": 3})
    await client.post(f"{API}/collections/c/vectors", json={"id": "a", "vector": [1, 2, 3]})
    await client.post(f"{API}/collections/c/search", json={"vector": [1, 2, 3]})
    await client.post(f"{API}/admin/checkpoint")
    text, samples = await scrape(client)
    assert samples, text
    assert not [line for line in text.splitlines() if "_created" in line]
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert "_created" not in await resp.text()


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["uid"] and dashboard["title"] == "s5vec"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # nothing only Grafana's import dialog would fill in: file provisioning loads it as it is
    assert "__inputs" not in dashboard and "${DS_" not in DASHBOARD.read_text()


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_picks_its_data_source_and_instances_through_variables() -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["multi"] and instance["includeAll"]
    assert instance["query"] == "label_values(s5vec_ready, instance)"
    assert instance["datasource"]["uid"] == "${datasource}"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for panel, target in dashboard_targets():
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_dashboard_selector_is_filtered_by_the_instance_variable() -> None:
    selectors = 0
    for panel, target in dashboard_targets():
        for match in re.finditer(r"\bs5vec_[a-z0-9_]+", target["expr"]):
            selectors += 1
            rest = target["expr"][match.end():]
            assert re.match(r'\{instance=~"\$instance"[,}]', rest), (panel["title"], target["expr"])
        # and no panel adds daemons together: aggregations keep the instance apart
        for by in re.findall(r"\b(?:sum|avg|min|max|count)\b\s*(by\s*\([^)]*\))?\s*\(", target["expr"]):
            assert "instance" in by, (panel["title"], target["expr"])
    assert selectors > 40


def test_dashboard_queries_with_an_instance_substituted_are_valid_promql(tmp_path: Path) -> None:
    """``promtool check rules`` parses each expression, as Grafana sends it for one instance."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    rules = [{"record": f"s5vec:panel{panel['id']}_{target['refId'].lower()}",
              "expr": target["expr"].replace("$instance", "127\\\\.0\\\\.0\\\\.1:7533")}
             for panel, target in dashboard_targets()]
    assert all("$" not in rule["expr"] for rule in rules)
    path = tmp_path / "dashboard.rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout.decode()


def unit_of(panel: dict[str, Any], target: dict[str, Any]) -> str:
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byFrameRefID", "options": target["refId"]}:
            (unit,) = [p["value"] for p in override["properties"] if p["id"] == "unit"]
            return str(unit)
    return str(panel["fieldConfig"]["defaults"].get("unit", ""))


def test_stat_panels_show_each_value_in_its_unit() -> None:
    stats = 0
    for panel, target in dashboard_targets():
        if panel["type"] != "stat":
            continue
        stats += 1
        unit, names = unit_of(panel, target), re.findall(r"\bs5vec_[a-z0-9_]+", target["expr"])
        assert unit, (panel["title"], target["refId"])
        if any(name.endswith("_seconds") for name in names):
            assert unit in ("s", "dtdurations"), (panel["title"], target["expr"], unit)
        elif any(name.endswith("_bytes") for name in names):
            assert unit == "bytes", (panel["title"], target["expr"], unit)
        assert not re.search(r"\((s|bytes)\)", target.get("legendFormat", "")), target["legendFormat"]
    assert stats >= 10


async def test_metrics_and_health_routes_are_in_the_openapi_document(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert "get" in paths["/metrics"] and "get" in paths["/api/v1/admin/health"]
