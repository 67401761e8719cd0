"""glibc memory tuning: fewer malloc arenas, freed memory handed back."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_arena_limit_applies_unless_the_environment_sets_one() -> None:
    code = ("import os; from s5vec.engine.memory import limit_malloc_arenas, release_free_memory; "
            "print(limit_malloc_arenas(2), release_free_memory() in (True, False))")
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_free)
    assert out.stdout.split() == ["True", "True"]  # glibc accepted mallopt(M_ARENA_MAX, 2)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env_free, "MALLOC_ARENA_MAX": "4"})
    assert out.stdout.split() == ["False", "True"]  # the operator's setting wins


# Free a 24 MiB block (glibc then raises its mmap threshold to 24 MiB unless it is pinned),
# fill 40 x 2 MiB blocks, each followed by a long-lived 256 KiB one (as a long-lived
# object lands between freed arrays in the engine), free the 2 MiB ones: how much of their
# 80 MiB is still resident?
_RETAINED = """
import ctypes, os, sys
from s5vec.engine.memory import pin_mmap_threshold
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
big = libc.malloc(24 << 20); ctypes.memset(big, 1, 24 << 20); libc.free(big)
before = rss()
blocks, keep = [], []
for _ in range(40):
    blocks.append(libc.malloc(2 << 20)); ctypes.memset(blocks[-1], 1, 2 << 20)
    keep.append(libc.malloc(256 << 10)); ctypes.memset(keep[-1], 1, 256 << 10)
before += 10 << 20  # the kept blocks
for b in blocks:
    libc.free(b)
print((rss() - before) >> 20)
"""


def _retained_mib(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _RETAINED, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout)


def test_a_pinned_mmap_threshold_hands_large_freed_blocks_back() -> None:
    # glibc's default keeps them (the dynamic threshold): this is what the pin is for
    assert _retained_mib("default") >= 60
    assert _retained_mib("pinned") <= 8


def test_the_operator_setting_of_the_mmap_threshold_wins() -> None:
    code = "from s5vec.engine.memory import tune_malloc; print(tune_malloc())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert out.stdout.strip() == "{'arena_max': True, 'mmap_threshold': False}"
