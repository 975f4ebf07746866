"""The binomial draw's guide table returns exactly what a binary search over
the CDF returns, for every kind of uniform the generator can produce."""

from __future__ import annotations

import numpy as np
import pytest

from engine import population as P


@pytest.mark.parametrize(
    "n, q", [(512, 0.5), (512, 0.01), (512, 0.999), (3, 0.5), (512, 1e-9), (100, 0.3), (1, 0.7)]
)
def test_guide_table_equals_binary_search(n, q):
    rng = np.random.default_rng(n)
    cdf = P._binomial_cdf(n, q)
    bits = rng.integers(0, 2**53, size=100_000, dtype=np.int64)
    buckets = rng.integers(0, 1 << P.GUIDE_BITS, size=5_000, dtype=np.int64)
    shift = 53 - P.GUIDE_BITS
    below_one = cdf[cdf < 1.0]
    u = np.concatenate(
        [
            bits.astype(np.float64) * 2.0**-53,  # what keyed_uniform draws
            (buckets << shift).astype(np.float64) * 2.0**-53,  # a bucket's first uniform
            (((buckets + 1) << shift) - 1).astype(np.float64) * 2.0**-53,  # and its last
            below_one,  # exactly on a step of the CDF
            np.nextafter(below_one, 0.0),  # just below one
        ]
    )
    assert len(u) >= P.GUIDE_MIN  # the guide, not the fallback, is under test
    np.testing.assert_array_equal(P._inverse_cdf(u, n, q), np.searchsorted(cdf, u, side="right"))


def test_guide_covers_the_straddling_buckets_only():
    guide = P._binomial_guide(512, 0.5)
    straddling = int((guide < 0).sum())
    assert 0 < straddling <= 513


# -- independence between leaf tables ------------------------------------------


def _scenario(**kw):
    from engine import Scenario

    return Scenario(**{"guest_memory": "2GiB", "page_size": "4K", **kw})


def test_a_tables_counts_do_not_depend_on_which_tables_are_drawn():
    s = _scenario(populated_ratio=0.5, accessed_ratio=0.7, dirty_ratio=0.3, seed=11)
    every = P.leaf_table_counts(s)
    some = np.array([1023, 0, 512, 7, 7, 1000])
    alone = P.leaf_table_counts(s, some)
    for name in ("entries", "present", "accessed", "dirty"):
        np.testing.assert_array_equal(getattr(alone, name), getattr(every, name)[some])


def test_tables_are_drawn_independently():
    """Each leaf table has its own counts and its own rank map: neither
    repeats from table to table, and neighbouring tables are uncorrelated."""
    s = _scenario(populated_ratio=0.5, accessed_ratio=0.6, dirty_ratio=0.3, seed=3)
    c = P.leaf_table_counts(s)  # 1024 tables of Bin(512, 0.5) present leaves
    present = c.present.astype(float)
    assert len(np.unique(c.present)) > 20  # sd 11.3: dozens of values
    assert abs(present.mean() - 256) < 2 and 8 < present.std() < 15
    for x in (c.present, c.accessed, c.dirty):
        x = x.astype(float) - x.mean()
        assert abs((x[1:] * x[:-1]).sum() / (x * x).sum()) < 0.15  # lag-1 correlation
    midx, add = P.rank_map_key(s.seed, np.arange(1024))
    assert len(np.unique(midx)) == 16 and len(np.unique(add)) > 400
    # Two tables with the same counts still place their leaves differently.
    same = np.flatnonzero(c.present == np.bincount(c.present).argmax())[:2]
    first, second = (P.leaf_table_entries(s, int(t), c, int(t)) for t in same)
    assert (first != second).sum() > 100


def test_entries_of_a_table_follow_its_counts_and_its_own_key():
    s = _scenario(populated_ratio=0.8, accessed_ratio=0.5, dirty_ratio=0.2, seed=5)
    c = P.leaf_table_counts(s)
    for t in (0, 1, 777):
        codes = P.leaf_table_entries(s, t, c, t)
        assert (codes != P.NONPRESENT).sum() == c.present[t]
        assert ((codes & P.ACCESSED) == P.ACCESSED).sum() == c.accessed[t]
        assert (codes == P.DIRTY).sum() == c.dirty[t]
    other_seed = _scenario(populated_ratio=0.8, accessed_ratio=0.5, dirty_ratio=0.2, seed=6)
    assert not np.array_equal(P.leaf_table_counts(other_seed).present, c.present)


# -- leaf runs of memory layouts -----------------------------------------------


def test_run_keys_are_table_indices_for_the_flat_guest_and_salted_otherwise():
    """Part I's guest (slot 0, leaves at its page size) keys a table by its
    index, so its draw is what it was; a run of another slot, or one below
    its slot's page size, in the same table draws other counts and ranks."""
    tables = np.arange(1000, dtype=np.int64)
    assert np.array_equal(P.run_key(tables, 0, 2, 2), tables.astype(np.uint64))
    keys = {
        (slot, level, backing): P.run_key(tables, slot, level, backing)
        for slot, level, backing in [(0, 1, 1), (1, 1, 1), (0, 1, 3), (0, 2, 3), (2, 1, 2)]
    }
    every = np.concatenate(list(keys.values()))
    assert len(np.unique(every)) == len(every)
    ratios = (0.5, 0.7, 0.3)
    a = P.run_counts(7, keys[(0, 1, 1)], np.full(1000, 512), ratios)
    b = P.run_counts(7, keys[(1, 1, 1)], np.full(1000, 512), ratios)
    x, y = a.present.astype(float) - 256, b.present.astype(float) - 256
    assert abs((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())) < 0.15


def test_a_partial_run_ranks_its_own_entries():
    """A run over entries [lo, hi) of its table: the present ones are the
    ``present`` entries of smallest rank-map value among them."""
    key, lo, hi = 12345, 100, 400
    values = P.rank_values(3, key, np.arange(lo, hi))
    codes = P.run_codes(3, key, lo, hi, (120, 60, 10))
    assert ((codes != P.NONPRESENT).sum(), (codes == P.DIRTY).sum()) == (120, 10)
    assert values[codes != P.NONPRESENT].max() < values[codes == P.NONPRESENT].min()


def test_splits_are_drawn_per_huge_mapping():
    entries = np.arange(20_000)
    half = P.split_mask(5, 2, entries, 0.5)
    assert abs(half.mean() - 0.5) < 0.02
    assert not np.array_equal(half, P.split_mask(5, 3, entries, 0.5))  # level is part of the key
    assert not P.split_mask(5, 2, entries, 0.0).any() and P.split_mask(5, 2, entries, 1.0).all()
    # A larger ratio splits a superset (one uniform per mapping).
    assert np.all(P.split_mask(5, 2, entries, 0.7)[half])
