"""The layering of STYLE.md: storage and index import neither each other nor ops/daemon; the
wheel ships no test or benchmark dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # storage and index at the bottom, then engine, then ops, then daemon
    "storage": {"index", "engine", "ops", "daemon"},
    "index": {"storage", "engine", "ops", "daemon"},
    "engine": {"ops", "daemon"},
    "ops": {"daemon"},
    "testing": {"daemon"},  # the test doubles may use storage/index/ops
}
# Every package the s5vec wheel installs and the folder it comes from.
PACKAGE_DIRS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
# What `pip install s5vec` does not bring: the dev and embed extras and the tools distribution.
NOT_RUNTIME = frozenset({"pytest", "_pytest", "hypothesis", "schemathesis", "websockets", "openapi_python_client",
                         "tokenizers", "safetensors", "threadpoolctl", "s5vec_tools"})


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
    (s5vec.testing.portal, a test fixture that also runs standalone) is the one server
    outside the daemon.  Index and ops never touch HTTP."""
    for layer in ("index", "engine", "ops"):
        for path in (REPO / layer).rglob("*.py"):
            assert "aiohttp" not in path.read_text(), path
    for path in (REPO / "storage").rglob("*.py"):
        assert "aiohttp.web" not in path.read_text() and "from aiohttp import web" not in path.read_text(), path


def test_serving_does_not_load_the_mcp_sdk_until_the_first_mcp_request() -> None:
    """The SDK (and pydantic) cost seconds of imports: a restart must not pay them."""
    import subprocess
    import sys
    code = "import sys, s5vec.daemon.app, s5vec.daemon.service; print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'pydantic'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def installed_modules() -> list[str]:
    """Every module of the s5vec wheel, from pyproject's package-dir (subpackages included)."""
    modules = []
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            modules.append(".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return modules


def test_the_wheel_ships_every_module_of_its_folders_and_no_benchmarks() -> None:
    packages = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {name.rpartition(".")[0] for name in installed_modules()} - {"s5vec"} <= packages
    assert not {"bench", "tools"} & {folder.split("/")[0] for folder in PACKAGE_DIRS.values()}


def test_only_tests_and_tools_import_the_test_doubles_and_only_s5vec_bench_imports_the_tools() -> None:
    """s5vec.testing ships for tests (ours and users'); nothing in s5vec depends on it. The
    tools (tools/, the s5vec-tools distribution) are reached only by `s5vec bench`, which
    says how to install them when they are missing."""
    for package, folder in PACKAGE_DIRS.items():
        for path in (REPO / folder).rglob("*.py"):
            names = imported_names(path)
            if package != "s5vec.testing":
                assert not {n for n in names if n.startswith("s5vec.testing")}, path
            if path != REPO / "daemon" / "cli.py":
                assert not {n for n in names if n.partition(".")[0] == "s5vec_tools"}, path


def test_every_module_of_the_wheel_imports_without_test_or_tool_dependencies() -> None:
    """A plain `pip install s5vec` has no pytest, Hypothesis or tools: every module it ships,
    s5vec.testing included, imports in a fresh interpreter without loading any of them."""
    modules = installed_modules()
    assert {"s5vec.testing.portal", "s5vec.testing.diskfaults", "s5vec.daemon.cli"} <= set(modules)
    code = (f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(NOT_RUNTIME)!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_only_the_app_factory_imports_the_rest_handlers() -> None:
    """The daemon's transports (WebSocket, SSE, ingest, admin, MCP) reach the engine through
    daemon/operations.py and their state through daemon/services.py, never through rest.py."""
    importers = set()
    for path in (REPO / "daemon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [f"{node.module or ''}.{a.name}" if node.level and not node.module else node.module or ""
                           for a in node.names]
                if any(m in ("rest", ".rest", "s5vec.daemon.rest") or m.endswith(".rest") for m in modules):
                    importers.add(path.relative_to(REPO).as_posix())
            elif isinstance(node, ast.Import) and any(a.name == "s5vec.daemon.rest" for a in node.names):
                importers.add(path.relative_to(REPO).as_posix())
    assert importers == {"daemon/app.py"}


def test_tests_and_tools_find_the_shared_data_beside_the_checkout_not_at_an_absolute_path() -> None:
    """`../shared` relative to the repository (or $S5VEC_SHARED): a clone anywhere works."""
    for folder in ("tests", "tools"):
        for path in (REPO / folder).rglob("*.py"):
            assert '"/' + 'work' not in path.read_text(), path.relative_to(REPO)
    assert "/" + "work" not in (REPO / "Makefile").read_text()
