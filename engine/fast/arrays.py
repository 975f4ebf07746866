"""numpy helpers the fast engine's modules share: runs, running sums, and
linear combinations of int16 count arrays without int64 temporaries."""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 16  # elements at a time: temporaries of 8M-element arrays stay in cache


def first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array."""
    n = len(sorted_values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return np.flatnonzero(starts)


def running(values: np.ndarray) -> np.ndarray:
    """0, then the running sums of ``values``: the sum before each item, and the total.
    (np.r_ costs more than the cumsum itself on the small arrays of small guests.)"""
    out = np.empty(len(values) + 1, dtype=np.int64)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out


def linear(n: int, const: int, *terms: tuple[np.ndarray | int, int]) -> np.ndarray:
    """``const + sum(x * w)`` over ``terms`` as n int64 values, a cache-sized
    chunk at a time: the leaf counts are int16, and widening whole arrays of
    a 16 TiB guest's 8M tables would stream a dozen 64 MiB temporaries.  A
    term whose ``x`` is a plain int is the same for every element."""
    out = np.full(n, const, dtype=np.int64)
    arrays = []
    for x, w in terms:
        if not w:
            continue
        if isinstance(x, np.ndarray):
            arrays.append((x, w))
        else:
            out += int(x) * w
    if not arrays:
        return out
    scratch = np.empty(min(n, CHUNK), dtype=np.int64)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        acc, tmp = out[lo:hi], scratch[: hi - lo]
        for x, w in arrays:
            np.multiply(x[lo:hi], w, out=tmp, dtype=np.int64)
            acc += tmp
    return out


def linear_max(const: int, *terms: tuple[np.ndarray, int]) -> int:
    """max(const + sum(x * w)) over the elements, a chunk at a time (no
    n-element temporary); the arrays must be non-empty and equally long."""
    n = len(terms[0][0])
    best = None
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        value = int(linear(hi - lo, const, *((x[lo:hi], w) for x, w in terms)).max())
        best = value if best is None else max(best, value)
    return best


def per_run(values: np.ndarray | int, starts: np.ndarray, lengths: np.ndarray, ufunc=np.add):
    """``ufunc`` over each run of ``values`` (runs start at ``starts`` and are
    ``lengths`` long), in int64; a uniform value needs no pass over the runs."""
    if not isinstance(values, np.ndarray):
        if ufunc is np.add:
            return lengths.astype(np.int64) * values
        return np.full(len(starts), values, dtype=np.int64)
    return ufunc.reduceat(values, starts, dtype=np.int64)
