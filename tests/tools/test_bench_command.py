"""``s5vec bench`` runs the tools of tools/ (the s5vec-tools distribution, not in the s5vec
wheel) and, where they are not installed, says how to install them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

S5VEC = str(Path(sys.executable).parent / "s5vec")
# The s5vec command as installed, in an interpreter where s5vec_tools cannot be imported.
WITHOUT_TOOLS = ("import sys; sys.modules['s5vec_tools'] = None; from s5vec.daemon.cli import main; "
                 "sys.exit(main(sys.argv[1:]))")


def test_s5vec_bench_runs_the_installed_tools() -> None:
    done = subprocess.run([S5VEC, "bench", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: s5vec bench")


def test_s5vec_bench_without_the_tools_exits_2_and_says_how_to_install_them() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TOOLS, "bench", "--quick"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "not installed" in done.stderr and "make install" in done.stderr and "pip install -e ./tools" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_tools_have_their_own_command() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "s5vec-bench"), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: s5vec bench" in done.stdout
