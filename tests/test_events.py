"""A zap's events (engine.zap_events): the fast engine's equal the reference
engine's, hold by hold and pass by pass, its operations are operations the
reference walk made (same start, length, SPTE), and every record agrees with
the ZapResult of the same run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_properties import scenario_kwargs
from test_fast_engine import contended

from engine import Scenario, load_cost_model, simulate, zap_events
from engine.events import EventsMismatch

DIFFERENTIAL = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOLD_FIELDS = ("start_ps", "end_ps", "flushed", "tables", "pass_index")


# The kernel yields at a step-down visit too, when the walk made progress (a
# step side) since the last yield and need_resched was raised after that
# step side's check (tdp_mmu_iter_cond_resched() looks at next_last_level_gfn,
# which a step down leaves as it was).  A tick walk that waited for the next
# step side would move that yield one visit on, which the ZapResult of this
# scenario does not show but its 815th hold does.
STEP_DOWN_YIELD = Scenario(
    guest_memory=(1 << 30) + (2 << 20),
    page_size="2M",
    accessed_ratio=0.0,
    dirty_ratio=0.0,
    zap_levels="per_level",
    resched="tick",
    resched_interval_us=0.05,
)


def assert_same_events(scenario: Scenario, cost_model: str = "seed-2022", keep: int = 40) -> None:
    # The reference keeps every operation, so any the fast engine lists can be looked up.
    reference = zap_events(scenario, "reference", cost_model, max_operations=10**9)
    fast = zap_events(scenario, "fast", cost_model, max_operations=keep)
    reference.check()
    fast.check()
    assert fast.result == reference.result == simulate(scenario, "fast", cost_model)
    assert fast.passes == reference.passes
    for f in HOLD_FIELDS:
        a, b = getattr(fast.holds, f), getattr(reference.holds, f)
        assert len(a) == len(b) and np.array_equal(a, b), f"holds differ in {f}: {scenario}"
    made = {(op.start_ps, op.duration_ps): op for op in reference.operations}
    for op in fast.operations:
        assert made.get((op.start_ps, op.duration_ps)) == op, f"{op} for {scenario}"
    # The same lengths, longest first: ties may pick other operations of one length.
    lengths = [op.duration_ps for op in fast.operations]
    assert lengths == [op.duration_ps for op in reference.operations[: len(lengths)]]


@DIFFERENTIAL
@given(kw=scenario_kwargs(), ad_writeback=st.booleans())
def test_fast_events_equal_reference(kw, ad_writeback):
    assert_same_events(Scenario(**kw, ad_writeback=ad_writeback), "seed-2022")


@DIFFERENTIAL
@given(scenario=contended(), ad_writeback=st.booleans())
def test_fast_events_equal_reference_when_contended(scenario, ad_writeback):
    assert_same_events(dataclasses.replace(scenario, ad_writeback=ad_writeback), "seed-2022")


def test_a_tick_yield_at_a_step_down_visit_is_where_the_reference_has_it():
    assert_same_events(STEP_DOWN_YIELD)


def test_the_root_pass_of_the_spec_example_by_hand():
    # Spec section 8: 1 GiB of 4K pages, root, always: 128 root entries, 127 yields.
    s = Scenario(guest_memory="1GiB", zap_levels="root", resched="always", dirty_ratio=0)
    ev = zap_events(s, "fast")
    ev.check()
    assert len(ev.holds) == 128 and ev.result.yields == 127
    (longest, *rest) = ev.operations
    # Entry 0 of the root removes the whole guest: its first visit, at time 0.
    assert (longest.start_ps, longest.level, longest.gfn) == (0, 4, 0)
    assert (longest.leaves, longest.tables_freed) == (262144, 514)
    assert rest == []  # the other 127 root entries are not present
    cm = load_cost_model("seed-2022")
    # The first hold holds that operation and the aborted visit of entry 1.
    assert ev.holds.end_ps[0] == longest.duration_ps + cm.visit_ps
    assert ev.holds.start_ps[1] == ev.holds.end_ps[0] + cm.yield_ps


@pytest.mark.parametrize("resched", ["tick", "always"])
def test_holds_past_the_budget_are_summarized_and_still_agree(resched):
    s = Scenario(
        guest_memory="256MiB",
        zap_levels="per_level",
        resched=resched,
        resched_interval_us=10,
        flush_on_yield=True,
    )
    full = zap_events(s, "fast")
    assert not full.summarized
    for budget in (0, 10, 200):
        ev = zap_events(s, "fast", max_yields=budget)
        ev.check()  # hold count, longest hold and operation, total: summaries included
        assert ev.summarized and ev.hold_count == full.hold_count == full.result.yields + 1
        assert ev.longest_hold_ps == full.longest_hold_ps
        listed = sorted({int(p) for p in ev.holds.pass_index})
        summarized = sorted(x.pass_index for x in ev.summarized)
        assert sorted(listed + summarized) == list(range(len(full.passes)))
        for f in HOLD_FIELDS:  # the listed passes' holds are the full trace's
            mask = np.isin(full.holds.pass_index, listed)
            assert np.array_equal(getattr(ev.holds, f), getattr(full.holds, f)[mask])
        # Operations of a summarized pass keep their length and SPTE, not their time.
        for op in ev.operations:
            assert (op.start_ps is None) == (op.pass_index in summarized)


def test_a_zap_that_clears_nothing_has_visits_for_operations():
    s = Scenario(guest_memory="16MiB", populated_ratio=0.0, resched="never")
    ev = zap_events(s, "fast")
    ev.check()
    assert ev.operations[0].duration_ps == load_cost_model("seed-2022").visit_ps
    assert ev.operations[0].leaves == 0


def test_a_mismatch_names_the_fields():
    ev = zap_events(Scenario(guest_memory="16MiB"), "fast")
    broken = type(ev)(**{**ev.__dict__, "total_ps": ev.total_ps + 10**6})
    with pytest.raises(EventsMismatch, match="total_ns"):
        broken.check()
