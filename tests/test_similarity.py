"""Blocked pairs_above against brute force, across block boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from curator_udfs.kmeans import l2_normalise
from curator_udfs.similarity import pairs_above


def _brute(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    s = x @ x.T
    i, j = np.nonzero(np.triu(s >= np.float32(threshold), k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("block_size", [1, 7, 32, 50, 4096])
def test_matches_brute_force(block_size: int) -> None:
    rng = np.random.default_rng(3)
    base = l2_normalise(rng.standard_normal((40, 16)))
    # near copies so there are plenty of pairs at high thresholds
    x = l2_normalise(np.concatenate([base, base[:30] + 0.05 * rng.standard_normal((30, 16))]))
    for threshold in (0.0, 0.5, 0.9):
        i, j, s = pairs_above(np.arange(len(x)), x, threshold, block_size=block_size)
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute(x, threshold)
        assert np.all(i < j)
        order = np.lexsort((j, i))
        np.testing.assert_array_equal(order, np.arange(len(i)))
        np.testing.assert_allclose(s, np.sum(x[i] * x[j], axis=1), atol=1e-5)
        assert s.dtype == np.float32 and i.dtype == np.int64


def test_same_id_never_pairs_and_empty_inputs() -> None:
    x = l2_normalise(np.ones((3, 4), dtype=np.float32))
    i, j, _ = pairs_above(np.array(["a", "a", "b"]), x, 0.99, block_size=2)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 2), (1, 2)]
    i, j, s = pairs_above(np.array([]), np.zeros((0, 4), np.float32), 0.5)
    assert i.size == j.size == s.size == 0
    with pytest.raises(ValueError):
        pairs_above(np.arange(2), x, 0.5)
