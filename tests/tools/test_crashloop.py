"""The crash-loop checker on hand-made models: it must catch every kind of violation, or
a green crash loop proves nothing."""

from __future__ import annotations

import random

from s5vec_tools.crashloop import Model, Value, compare, phase_schedule


def written(**values: Value | None) -> Model:
    model = Model()
    for rid, value in values.items():
        model.begin({rid: value})
        model.ack({rid: value})
    return model


def meta(value: Value) -> dict[str, object]:
    return value.metadata("w0")


def test_checker_reports_an_acknowledged_write_that_is_missing() -> None:
    model = written(a=Value(1, 1), b=Value(2, 2))
    result = compare(model, {"a": meta(Value(1, 1))}, "kill 3 (checkpoint)")
    assert result.violations == ["kill 3 (checkpoint): id 'b' absent, acknowledged row 2 version 2 (lost write)"]


def test_checker_reports_a_stale_value_and_a_resurrected_delete() -> None:
    model = written(a=Value(1, 1), b=Value(2, 2))
    model.ack({"a": Value(1, 3)})          # a metadata update was acknowledged
    model.ack({"b": None})                 # b was deleted
    result = compare(model, {"a": meta(Value(1, 1)), "b": meta(Value(2, 2))}, "kill 1 (migrate)")
    assert len(result.violations) == 2
    assert "id 'a' row 1 version 1, acknowledged row 1 version 3" in result.violations[0]
    assert "id 'b' row 2 version 2, acknowledged absent" in result.violations[1]


def test_checker_reports_an_id_that_was_never_written() -> None:
    result = compare(written(a=Value(1, 1)), {"a": meta(Value(1, 1)), "ghost": meta(Value(9, 9))}, "k")
    assert result.violations == [("k: id 'ghost' is present but was never written (metadata "
                                  "{'row': 9, 'v': 9, 'owner': 'w0'})")]


def test_checker_accepts_an_unacknowledged_write_either_way_and_adopts_what_it_finds() -> None:
    model = written(a=Value(1, 1), b=Value(2, 2))
    model.begin({"a": Value(3, 3)})
    model.begin({"b": None})
    result = compare(model, {"a": meta(Value(3, 3)), "b": meta(Value(2, 2))}, "k")
    assert result.violations == [] and (result.landed, result.dropped) == (1, 1)
    assert model.acked == {"a": Value(3, 3), "b": Value(2, 2)} and model.pending == {}


def test_checker_reports_an_unacknowledged_write_that_landed_as_something_else() -> None:
    model = written(a=Value(1, 1))
    model.begin({"a": Value(3, 3)})
    result = compare(model, {"a": meta(Value(4, 4))}, "k")
    assert len(result.violations) == 1 and "unacknowledged writes" in result.violations[0]


def test_checker_reports_a_batch_in_flight_that_landed_partly() -> None:
    model = Model()
    intents: dict[str, Value | None] = {"x": Value(1, 1), "y": Value(2, 2), "z": Value(3, 3)}
    model.begin(intents)
    model.groups.append(("batch upsert", "group_commit", tuple(intents)))
    result = compare(model, {"x": meta(Value(1, 1)), "y": meta(Value(2, 2))}, "kill 2 (group_commit)")
    assert result.violations == [("kill 2 (group_commit): the batch upsert of 3 ids in flight during "
                                  "group_commit landed partly (2 of them, e.g. ['x', 'y'])")]


def test_phase_schedule_aims_at_every_phase_in_each_block() -> None:
    order = phase_schedule(("a", "b", "c"), 7, random.Random(1))
    assert len(order) == 7 and sorted(order[:3]) == sorted(order[3:6]) == ["a", "b", "c"]
