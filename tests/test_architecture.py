"""The layering of STYLE.md: storage and index import neither each other nor ops/daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # storage and index at the bottom, then engine, then ops, then daemon
    "storage": {"index", "engine", "ops", "daemon", "bench"},
    "index": {"storage", "engine", "ops", "daemon", "bench"},
    "engine": {"ops", "daemon", "bench"},
    "ops": {"daemon", "bench"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s5vec."):
            layers.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            layers.update(a.name.split(".")[1] for a in node.names if a.name.startswith("s5vec."))
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_form_a_dag(layer: str) -> None:
    for path in (REPO / layer).rglob("*.py"):
        bad = imported_layers(path) & FORBIDDEN[layer]
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_only_the_daemon_serves_http_and_only_storage_backends_are_http_clients() -> None:
    """The portal and bridge backends speak HTTP as clients; the S5 portal double
    (storage/testportal.py, a test fixture that also runs standalone) is the one server
    outside the daemon.  Index and ops never touch HTTP."""
    for layer in ("index", "engine", "ops"):
        for path in (REPO / layer).rglob("*.py"):
            assert "aiohttp" not in path.read_text(), path
    for path in (REPO / "storage").rglob("*.py"):
        if path.name != "testportal.py":
            assert "aiohttp.web" not in path.read_text() and "from aiohttp import web" not in path.read_text(), path


def test_serving_does_not_load_the_mcp_sdk_until_the_first_mcp_request() -> None:
    """The SDK (and pydantic) cost seconds of imports: a restart must not pay them."""
    import subprocess
    import sys
    code = "import sys, s5vec.daemon.app, s5vec.daemon.service; print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'pydantic'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
