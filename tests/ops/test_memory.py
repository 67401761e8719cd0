"""glibc memory tuning: fewer malloc arenas, freed memory handed back."""

from __future__ import annotations

import subprocess
import sys


def test_the_arena_limit_applies_unless_the_environment_sets_one() -> None:
    code = ("import os; from s5vec.ops.memory import limit_malloc_arenas, release_free_memory; "
            "print(limit_malloc_arenas(2), release_free_memory() in (True, False))")
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_free)
    assert out.stdout.split() == ["True", "True"]  # glibc accepted mallopt(M_ARENA_MAX, 2)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env_free, "MALLOC_ARENA_MAX": "4"})
    assert out.stdout.split() == ["False", "True"]  # the operator's setting wins
