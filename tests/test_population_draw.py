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
