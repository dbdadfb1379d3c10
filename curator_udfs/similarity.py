"""Blocked all-pairs cosine similarity join: every pair at or above a threshold.

Used inside each fine cluster (and by the benchmark as the exact reference). Memory is bounded
by one ``block_size x block_size`` float32 tile; the full n x n matrix is never built.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pairs_above"]


def pairs_above(
    ids: np.ndarray,
    x: np.ndarray,
    threshold: float,
    *,
    block_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` (row indices into ``x``) with ``x[i] . x[j] >= threshold``.

    ``x`` should hold L2-normalised rows (the dot product is then the cosine). ``ids`` names
    the rows (same length as ``x``); pairs whose two rows carry the same id are dropped, so a
    sample listed twice never pairs with itself. Returns ``(i, j, sim)`` as int64, int64,
    float32 arrays sorted by ``(i, j)``. Only tiles on or above the block diagonal are
    computed, in float32.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = np.asarray(ids)
    n = x.shape[0]
    if ids.shape[0] != n:
        raise ValueError(f"ids has {ids.shape[0]} entries but x has {n} rows")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    thr = np.float32(threshold)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    for bi in range(0, n, block_size):
        xi = x[bi : bi + block_size]
        for bj in range(bi, n, block_size):
            tile = xi @ x[bj : bj + block_size].T
            ii, jj = np.nonzero(tile >= thr)
            if bi == bj:
                upper = ii < jj
                ii, jj = ii[upper], jj[upper]
            if ii.size == 0:
                continue
            out_s.append(tile[ii, jj])
            out_i.append(ii + bi)
            out_j.append(jj + bj)
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.float32)
    i = np.concatenate(out_i).astype(np.int64, copy=False)
    j = np.concatenate(out_j).astype(np.int64, copy=False)
    s = np.concatenate(out_s).astype(np.float32, copy=False)
    keep = ids[i] != ids[j]
    if not keep.all():
        i, j, s = i[keep], j[keep], s[keep]
    order = np.lexsort((j, i))
    return i[order], j[order], s[order]
