"""The readers-writer lock: readers share, a writer waits for them and excludes everyone."""

from __future__ import annotations

import threading
import time

from s5vec.index.rwlock import RWLock


def settling(lock: RWLock, *names: str) -> dict[str, threading.Event]:
    """An event per thread name, set when that thread goes to sleep on ``lock`` (its
    ``on_block`` hook); a test thread sets its own when it gets in. Waiting for it tells
    whether a thread was held back, with no sleep guessing how long that takes."""
    settled = {name: threading.Event() for name in names}

    def on_block() -> None:
        event = settled.get(threading.current_thread().name)
        if event is not None:
            event.set()

    lock.on_block = on_block
    return settled


def test_a_writer_waits_for_the_last_reader_and_then_runs_alone() -> None:
    lock = RWLock()
    settled = settling(lock, "writer", "late reader")
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
            settled["writer"].set()

    readers = [threading.Thread(target=reader, args=(f"r{i}",)) for i in range(2)]
    for t in readers:
        t.start()
    inside.wait(5)  # both readers hold the lock together
    w = threading.Thread(target=writer, name="writer")
    w.start()
    assert settled["writer"].wait(5)
    assert log == []  # the writer is blocked by the readers
    late: list[str] = []
    late_reader = threading.Thread(target=lambda: (lock.read().__enter__(), late.append("late in"),
                                                   settled["late reader"].set()), name="late reader")
    late_reader.start()
    assert settled["late reader"].wait(5)
    assert late == []  # a waiting writer holds back new readers
    release.set()
    w.join(5)
    assert not w.is_alive(), "the writer was never woken after the last reader left"
    assert log[-1] == "writer in" and sorted(log[:2]) == ["r0 out", "r1 out"]
    late_reader.join(5)
    assert late == ["late in"]


def test_readers_and_writers_never_overlap_under_constant_thread_switching() -> None:
    """Readers register without the mutex (GIL-atomic list append plus a re-check of the
    writer flags): switching threads every microsecond must still never let a reader in
    beside a writer, nor two writers in together, nor leave anyone waiting forever."""
    import sys

    lock = RWLock()
    book = threading.Lock()
    state = {"readers": 0, "writer": False, "reads": 0, "writes": 0}
    errors: list[str] = []
    stop = time.monotonic() + 1.0

    def reader() -> None:
        while time.monotonic() < stop:
            with lock.read():
                with book:
                    if state["writer"]:
                        errors.append("reader inside beside a writer")
                    state["readers"] += 1
                    state["reads"] += 1
                time.sleep(0)  # let other threads run while inside
                with book:
                    state["readers"] -= 1

    def writer() -> None:
        while time.monotonic() < stop:
            with lock.write():
                with book:
                    if state["writer"] or state["readers"]:
                        errors.append(f"writer entered with writer={state['writer']} readers={state['readers']}")
                    state["writer"] = True
                    state["writes"] += 1
                time.sleep(0)
                with book:
                    state["writer"] = False
            time.sleep(0.0005)  # writers prefer themselves: leave the readers room between writes

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        sys.setswitchinterval(before)
    assert not any(t.is_alive() for t in threads), "a thread never got the lock"
    assert errors == []
    assert state["reads"] > 100 and state["writes"] > 10  # both sides made progress
    assert lock._active == [] and not lock._writer and lock._writers_waiting == 0


def test_a_reader_that_registers_after_a_writer_got_in_steps_back() -> None:
    """The race the lock-free read path must win, forced deterministically: a reader has
    seen no writer and is about to register when a writer checks, finds no reader, and
    goes in. The reader must notice the writer after registering, step back and wait."""
    import inspect
    import sys

    from s5vec.index import rwlock

    lock = RWLock()
    settled = settling(lock, "reader")
    source, first = inspect.getsourcelines(rwlock._ReadSide.__enter__)
    append_line = first + next(i for i, line in enumerate(source) if "active.append(None)" in line)
    at_append = threading.Event()
    writer_inside = threading.Event()
    writer_done = threading.Event()
    seen: list[str] = []
    writer_saw_the_reader_settle: list[bool] = []

    def pause_before_registering(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            return pause_before_registering if frame.f_code is rwlock._ReadSide.__enter__.__code__ else None
        if event == "line" and frame.f_lineno == append_line and not at_append.is_set():
            at_append.set()
            writer_inside.wait(5)
        return pause_before_registering

    def reader() -> None:
        sys.settrace(pause_before_registering)
        try:
            with lock.read():
                seen.append("reader in after the writer left" if writer_done.is_set() else "reader in beside the writer")
                settled["reader"].set()
        finally:
            sys.settrace(None)

    def writer() -> None:
        at_append.wait(5)
        with lock.write():
            writer_inside.set()
            # the reader resumes meanwhile: it must step back and sleep on the lock, not get in
            writer_saw_the_reader_settle.append(settled["reader"].wait(5))
            writer_done.set()

    threads = [threading.Thread(target=reader, name="reader"), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert at_append.is_set() and writer_inside.is_set() and writer_saw_the_reader_settle == [True]
    assert seen == ["reader in after the writer left"]
    assert lock._active == [] and not lock._writer and lock._writers_waiting == 0


def test_a_read_now_enters_beside_readers_while_a_writer_waits_but_never_beside_a_writer() -> None:
    """A read by id (``read_now``) must not queue behind a writer that waits for a long search."""
    lock = RWLock()
    settled = settling(lock, "writer", "late reader")
    inside, release = threading.Event(), threading.Event()
    writer_in = threading.Event()

    def long_search() -> None:
        with lock.read():
            inside.set()
            release.wait(10)

    def writer() -> None:
        with lock.write():
            writer_in.set()
            settled["writer"].set()
            release_writer.wait(10)

    search = threading.Thread(target=long_search)
    search.start()
    assert inside.wait(5)
    release_writer = threading.Event()
    w = threading.Thread(target=writer, name="writer")
    w.start()
    assert settled["writer"].wait(5) and not writer_in.is_set()  # the writer is queued behind the search
    with lock.read_now():  # would block until the search ends with read()
        assert not writer_in.is_set()
    release.set()
    assert writer_in.wait(5)
    entered = threading.Event()
    late = threading.Thread(target=lambda: (lock.read_now().__enter__(), entered.set(),
                                            settled["late reader"].set()), name="late reader")
    late.start()
    assert settled["late reader"].wait(5)
    assert not entered.is_set()  # a writer inside excludes it
    release_writer.set()
    assert entered.wait(5)
    for t in (search, w, late):
        t.join(5)
