"""The JavaScript client's own tests (clients/js/test, Node's test runner), run by `make test`.

They start `s5vec serve` themselves (this venv's, via S5VEC_BIN), exercise REST, WebSocket
and server-sent events against it, and run the README's "JavaScript client" example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e
JS = REPO / "clients" / "js"


def node() -> str:
    found = shutil.which("node")
    assert found, "node (20 or newer) is needed for the JavaScript client's tests"
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1))  # type: ignore[union-attr]
    assert major >= 20, f"node {version}: the JavaScript client needs 20 or newer"
    return found


@pytest.mark.timeout(300)
def test_js_client_node_tests_pass() -> None:
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs"))
    assert files, "no clients/js/test/*.test.mjs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    env["S5VEC_BIN"] = str(Path(sys.executable).parent / "s5vec")
    # --experimental-websocket: Node 20's global WebSocket (on by default from Node 22; harmless there)
    result = subprocess.run([node(), "--experimental-websocket", "--test", "--test-reporter=spec", *files],
                            cwd=JS, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, f"node --test failed ({result.returncode}):\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    assert re.search(r"^ℹ pass [1-9]", result.stdout, re.MULTILINE), result.stdout[-5000:]
    assert re.search(r"^ℹ fail 0$", result.stdout, re.MULTILINE), result.stdout[-5000:]
