"""The seed's figures (a)-(d) (conf/cost_model/seed-2022.yaml) with the default cost
model, and what each becomes without A/D write-back (``ad_writeback=false``, Linux
6.13+): the figures the retired ``upstream-6.13`` cost model gave.

Bands 1-3 need 512 GiB and 12 TiB guests of 4K pages: fast engine only.
Expected figures (arithmetic from the spec's geometry, see the YAML comments):
one fully populated 512 GiB PGD entry = 2^27 leaves + 262,657 tables; one
1 GiB region = 2^18 leaves + 513 tables; 12 TiB = 3*2^30 leaves + 6,303,769
tables under one 256T root entry.
"""

from __future__ import annotations

from functools import cache

import pytest

from engine import Scenario, event_counts, load_cost_model, simulate

ENGINE = "fast"
SEED = "seed-2022"
WRITEBACK, NO_WRITEBACK = True, False  # ad_writeback: the seed's kernel, Linux 6.13+
S, MS = 1_000_000_000, 1_000_000  # ns


def pgd_512g(zap_levels: str, ad_writeback: bool) -> Scenario:
    """4-level, a fully populated 512 GiB region of 4K pages (one root entry)."""
    return Scenario(
        paging_levels=4,
        guest_memory="512GiB",
        page_size="4K",
        populated_ratio=1.0,
        accessed_ratio=1.0,
        dirty_ratio=0.5,
        zap_levels=zap_levels,
        ad_writeback=ad_writeback,
    )


def guest_12t(ad_writeback: bool) -> Scenario:
    return Scenario(
        paging_levels=5,
        guest_memory="12TiB",
        page_size="4K",
        populated_ratio=1.0,
        accessed_ratio=1.0,
        dirty_ratio=0.5,
        zap_levels="root",
        ad_writeback=ad_writeback,
    )


@cache
def run(which: str, ad_writeback: bool):
    if which == "12t":
        scenario = guest_12t(ad_writeback)
    else:
        scenario = pgd_512g(which, ad_writeback)
    return simulate(scenario, engine=ENGINE, cost_model=SEED)


# ---------------------------------------------------------------- band 1


@pytest.mark.slow
def test_band1_root_worst_op_is_5_to_9_s():
    r = run("root", WRITEBACK)
    assert r.max_op_leaves == 2**27
    assert 5 * S <= r.max_op_ns <= 9 * S  # seed: "up to ~7 or so seconds"
    assert r.max_op_ns == pytest.approx(6.766 * S, rel=0.001)


@pytest.mark.slow
def test_band1_without_write_back_the_op_is_cheaper_not_shorter():
    # 10 ns per leaf instead of 50: ~1.40 s, still one operation of 2^27 leaves.
    r = run("root", NO_WRITEBACK)
    assert r.max_op_leaves == 2**27
    assert r.max_op_ns == pytest.approx(1.397 * S, rel=0.001)
    assert r.max_op_ns < run("root", WRITEBACK).max_op_ns / 4
    assert r.accessed_writebacks == r.dirty_writebacks == 0
    assert run("root", WRITEBACK).accessed_writebacks == 2**27


# ---------------------------------------------------------------- band 2


@pytest.mark.slow
def test_band2_two_pass_worst_op_is_10_to_100_ms():
    r = run("1G,root", WRITEBACK)
    assert r.max_op_leaves == 2**18
    assert 10 * MS <= r.max_op_ns <= 100 * MS  # seed: "less than 100ms"
    assert r.max_op_ns == pytest.approx(13.2 * MS, rel=0.01)


@pytest.mark.slow
def test_band2_two_pass_without_write_back_worst_op_is_under_3_ms():
    r = run("1G,root", NO_WRITEBACK)
    assert r.max_op_leaves == 2**18
    assert r.max_op_ns == pytest.approx(2.73 * MS, rel=0.01)


# ---------------------------------------------------------------- band 3


@pytest.mark.slow
def test_band3_5_level_12t_root_takes_hundreds_of_seconds_and_stalls():
    r = run("12t", WRITEBACK)
    assert r.max_op_leaves == 3 * 2**30
    assert 100 * S <= r.max_op_ns <= 1000 * S  # seed: "well into hundreds of seconds"
    assert r.max_op_ns == pytest.approx(162.4 * S, rel=0.001)
    assert r.rcu_stall and r.max_rcu_hold_ns >= 21 * S


@pytest.mark.slow
def test_band3_without_write_back_root_still_stalls():
    # ~33.5 s: no write-back alone leaves the RCU stall; only the
    # multi-pass strategies remove it.
    r = run("12t", NO_WRITEBACK)
    assert r.max_op_ns == pytest.approx(33.536 * S, rel=0.001)
    assert r.rcu_stall


# ---------------------------------------------------------------- band 4


VCPUS = (1, 2, 8, 64, 256)


def flush_costs(ad_writeback: bool) -> dict[int, tuple[int, int]]:
    """Per vCPU count: (flush cost in ps, flushes, total in ps) of a flushing zap."""
    cm = load_cost_model(SEED)
    out = {}
    for v in VCPUS:
        s = Scenario(
            guest_memory="8MiB",
            zap_levels="per_level",  # every leaf is an operation: a flush per yield
            resched="always",
            flush_on_yield=True,
            vcpus=v,
            ad_writeback=ad_writeback,
        )
        r = simulate(s, engine=ENGINE, cost_model=cm)
        counts = event_counts(r, s)
        flush = counts["flush_base_ns"] * cm.flush_base_ps
        flush += counts["flush_per_vcpu_ns"] * cm.flush_per_vcpu_ps
        out[v] = (flush, r.tlb_flushes, r.total_ns * 1000)
    return out


@pytest.mark.parametrize("ad_writeback", [WRITEBACK, NO_WRITEBACK])
def test_band4_flush_cost_grows_linearly_with_vcpus(ad_writeback):
    costs = flush_costs(ad_writeback)
    flushes = {n for _, n, _ in costs.values()}
    assert len(flushes) == 1 and flushes.pop() > 0  # same flushes, whatever the vCPUs
    f1 = costs[1][0]
    slope = costs[2][0] - f1
    assert slope > 0
    for v in VCPUS:
        assert costs[v][0] == f1 + slope * (v - 1)
    # "significant overhead for VMs with large numbers of vCPUs": at 256
    # vCPUs the flushes are most of the zap.
    assert costs[256][0] > costs[256][2] / 2


def test_band4_no_write_back_changes_only_the_non_flush_part():
    seed, up = flush_costs(WRITEBACK), flush_costs(NO_WRITEBACK)
    for v in VCPUS:
        assert up[v][0] == seed[v][0]  # same flush costs
        assert up[v][2] < seed[v][2]  # cheaper leaves
