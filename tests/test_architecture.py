"""The layering of STYLE.md: storage and index import neither each other nor ops/daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "storage": {"index", "ops", "daemon", "bench"},
    "index": {"storage", "ops", "daemon", "bench"},
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
    for path in (REPO / layer).glob("*.py"):
        bad = imported_layers(path) & FORBIDDEN[layer]
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_only_the_daemon_imports_aiohttp() -> None:
    for layer in ("storage", "index", "ops"):
        for path in (REPO / layer).glob("*.py"):
            assert "aiohttp" not in path.read_text(), path
