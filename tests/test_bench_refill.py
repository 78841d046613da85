"""The engine benchmark's slot figures (``bench/engine.py``): how long a slot stays empty between two nodes, and
how many nodes run on average — what docs/benchmarks.md reads slot use from."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    sys.path.insert(0, str(BENCH))  # (its own helpers: data_fs)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop(spec.name, None)


def test_each_start_on_a_freed_slot_is_timed_from_the_earliest_end_not_taken_over(bench: ModuleType) -> None:
    # two slots: a and b fill them; c takes a's (ended at 1), d takes b's (ended at 2), e takes c's (at 2.5)
    spans = [(0.0, 1.0), (0.0, 2.0), (1.5, 2.5), (2.1, 4.0), (3.0, 3.2)]
    assert bench.refill_gaps(spans) == pytest.approx([0.5, 0.1, 0.5])
    # (the order the spans come in does not matter)
    assert bench.refill_gaps(list(reversed(spans))) == pytest.approx([0.5, 0.1, 0.5])


def test_a_start_on_a_slot_no_node_used_yet_has_no_gap(bench: ModuleType) -> None:
    # a fan-out: the root runs alone; its first child takes its slot, the second the slot never used
    spans = [(0.0, 1.0), (1.2, 2.0), (1.3, 2.5), (2.05, 3.0)]
    assert bench.refill_gaps(spans) == pytest.approx([0.2, 0.05])


def test_a_chain_on_one_slot_has_the_hand_offs_as_its_gaps(bench: ModuleType) -> None:
    spans = [(0.0, 1.0), (1.25, 2.0), (2.5, 3.0)]
    assert bench.refill_gaps(spans) == pytest.approx([0.25, 0.5])


def test_a_measure_with_spans_has_its_mean_running_mean_span_and_gaps(bench: ModuleType) -> None:
    measure = bench.Measure(wall=4.0, cpu_self=0.0, cpu_children=0.0)
    spans = [(0.0, 1.0), (0.0, 2.0), (1.5, 2.5), (2.1, 4.0), (3.0, 3.2)]
    measured = bench.with_spans(measure, spans)
    assert measured.running == pytest.approx(6.1 / 4.0)
    assert measured.span == pytest.approx(6.1 / 5)
    assert measured.gaps == pytest.approx((0.5, 0.1, 0.5))
    assert bench.gap_cell(measured) == "500.00 / 500.00, span 1220.00"
