"""Synthetic CLIP-like embeddings with planted near-duplicates at known similarities.

Background samples come from a mixture of many clusters: centres random on the sphere, members
``centre + noise`` with a per-cluster spread chosen so that two members of one cluster have
cosine about 0.5-0.8 (CLIP image embeddings of one concept look like that), cluster sizes
heavy-tailed. Planted near-duplicates are ``s * x + sqrt(1 - s^2) * u`` for a background
sample ``x``, a random unit ``u`` orthogonal to it and ``s`` uniform in ``sims``, so their
cosine to ``x`` is exactly ``s`` (up to float32 rounding).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mixture_embeddings"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mixture_embeddings(
    n: int,
    d: int = 768,
    clusters: int | None = None,
    *,
    seed: int = 0,
    planted_fraction: float = 0.05,
    sims: tuple[float, float] = (0.95, 0.999),
    intra_cos: tuple[float, float] = (0.5, 0.8),
    chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, planted)``: ``x`` float32 (n, d) unit rows, ``planted`` int64 (m, 2).

    ``planted[k] = (base, dup)`` are row indices; the last ``m = round(n * planted_fraction)``
    rows are the planted duplicates (a base may get several, which then also resemble each
    other). ``clusters`` defaults to ``max(1, n // 200)``. Generated in chunks so 10^6 x 768
    needs little more than the output array.
    """
    rng = np.random.default_rng(seed)
    m = int(round(n * planted_fraction))
    n_bg = n - m
    if n_bg < 1:
        raise ValueError("planted_fraction leaves no background samples")
    k = clusters if clusters is not None else max(1, n // 200)
    centres = _unit(rng.standard_normal((k, d))).astype(np.float32)
    # cos between two members ~ 1 / (1 + sigma^2 d); pick sigma per cluster from intra_cos.
    target = rng.uniform(intra_cos[0], intra_cos[1], size=k)
    sigma = np.sqrt((1.0 / target - 1.0) / d).astype(np.float32)
    weights = rng.pareto(1.5, size=k) + 1.0
    label = rng.choice(k, size=n_bg, p=weights / weights.sum())

    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n_bg, chunk):
        stop = min(start + chunk, n_bg)
        lab = label[start:stop]
        noise = rng.standard_normal((stop - start, d), dtype=np.float32)
        x[start:stop] = _unit(centres[lab] + noise * sigma[lab, None])

    base = np.sort(rng.choice(n_bg, size=m, replace=True)) if m else np.zeros(0, np.int64)
    s = rng.uniform(sims[0], sims[1], size=m).astype(np.float32)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        xb = x[base[start:stop]]
        u = rng.standard_normal((stop - start, d), dtype=np.float32)
        u -= np.sum(u * xb, axis=1, keepdims=True) * xb  # orthogonal to the base
        u = _unit(u)
        ss = s[start:stop, None]
        x[n_bg + start : n_bg + stop] = _unit(ss * xb + np.sqrt(1.0 - ss * ss) * u)
    planted = np.stack([base, np.arange(n_bg, n)], axis=1).astype(np.int64)
    return x, planted
