"""The quicker ``__init__`` of the frozen records every run makes: the same parameters,
defaults and factories as the dataclass's own, and still frozen."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from engine import RunResult, RunStatus
from engine._model.frozen import quick_init
from engine._model.records import RunHeader
from permissions import ANONYMOUS


@pytest.mark.parametrize("cls", [RunHeader, RunResult])
def test_the_parameters_are_the_dataclass_ones(cls: type) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields, strict=True):
        required = field.default is dataclasses.MISSING
        required = required and field.default_factory is dataclasses.MISSING
        assert (parameter.default is inspect.Parameter.empty) == required, field.name
        if field.default is not dataclasses.MISSING:
            assert parameter.default == field.default, field.name


def test_a_header_is_made_whole_and_stays_frozen() -> None:
    header = RunHeader("r1", "orders", 2, ANONYMOUS, {"a": 1}, depth=3, via="cli")
    assert (header.run_id, header.flow, header.version, header.inputs) == (
        "r1",
        "orders",
        2,
        {"a": 1},
    )
    assert (header.parent_run_id, header.root_run_id, header.depth, header.via) == (
        None,
        None,
        3,
        "cli",
    )
    assert header.created_at == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.flow = "other"  # type: ignore[misc]
    assert dataclasses.replace(header, flow="other").flow == "other"
    assert header == RunHeader("r1", "orders", 2, ANONYMOUS, {"a": 1}, depth=3, via="cli")
    with pytest.raises(TypeError):
        RunHeader("r1", "orders")  # type: ignore[call-arg]


def test_a_default_factory_makes_a_new_value_each_time() -> None:
    one, two = RunResult("a", "f", 1, RunStatus.COMPLETED), RunResult("b", "f", 1, RunStatus.FAILED)
    assert len(one.trace) == 0 and one.trace is not two.trace
    assert one.log == () and one.roles == () and one.error is None


def test_only_frozen_slotted_dataclasses_without_post_init() -> None:
    @dataclasses.dataclass(slots=True)
    class Loose:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Loose, Checked):
        with pytest.raises(TypeError):
            quick_init(cls)
