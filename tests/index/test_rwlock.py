"""The readers-writer lock: readers share, a writer waits for them and excludes everyone."""

from __future__ import annotations

import threading
import time

from s5vec.index.rwlock import RWLock


def test_a_writer_waits_for_the_last_reader_and_then_runs_alone() -> None:
    lock = RWLock()
    log: list[str] = []
    inside = threading.Barrier(3)
    release = threading.Event()

    def reader(name: str) -> None:
        with lock.read():
            inside.wait(5)
            release.wait(5)
            log.append(f"{name} out")

    def writer() -> None:
        with lock.write():
            log.append("writer in")

    readers = [threading.Thread(target=reader, args=(f"r{i}",)) for i in range(2)]
    for t in readers:
        t.start()
    inside.wait(5)  # both readers hold the lock together
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.05)
    assert log == []  # the writer is blocked by the readers
    late: list[str] = []
    late_reader = threading.Thread(target=lambda: (lock.read().__enter__(), late.append("late in")))
    late_reader.start()
    time.sleep(0.05)
    assert late == []  # a waiting writer holds back new readers
    release.set()
    w.join(5)
    assert not w.is_alive(), "the writer was never woken after the last reader left"
    assert log[-1] == "writer in" and sorted(log[:2]) == ["r0 out", "r1 out"]
    late_reader.join(5)
    assert late == ["late in"]
