"""Spherical (cosine) k-means behind one small backend interface, plus chunked assignment.

The dedup job fits a coarse k-means on the driver (:func:`fit_sample`), assigns every embedding
to it in a pandas UDF (:func:`assign_ids`) and fits fine k-means inside each partition. Both
run on L2-normalised float32 embeddings; every backend returns L2-normalised centroids so the
nearest centroid by dot product is the nearest by cosine. Fits are seeded and deterministic.

Backend choice (``select_backend("auto")``): cuML when it imports and a GPU is visible, else
faiss. Measured on this project's 2-core CPU box, 50k x 768 float32, k=100, 20 iterations,
n_init=1, same data for both:

    faiss.Kmeans (spherical, 1 OpenMP thread)   1.4 s
    faiss.Kmeans (spherical, 2 OpenMP threads)  2.8 s
    sklearn KMeans (lloyd, k-means++, 1 thread) 15.2 s
    sklearn KMeans (lloyd, k-means++, 2 threads) 18.9 s

so faiss is the CPU default (about 10x faster). faiss subsamples to 256 points per centroid
(seeded), which is part of why; sklearn's k-means++ init alone costs several seconds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = [
    "CumlKMeans",
    "FaissKMeans",
    "KMeansBackend",
    "SklearnKMeans",
    "assign",
    "assign_ids",
    "fit_sample",
    "l2_normalise",
    "nearest_ids",
    "select_backend",
    "stack_embeddings",
]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Return rows of ``x`` as float32 unit vectors (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _check_input(x: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    x = l2_normalise(x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return x, min(k, x.shape[0])


@runtime_checkable
class KMeansBackend(Protocol):
    """What the dedup job needs from a k-means implementation."""

    name: str

    def fit(self, x: np.ndarray, k: int, *, seed: int, max_iter: int) -> np.ndarray:
        """Fit on rows of ``x``; return L2-normalised centroids of shape (min(k, n), d)."""
        ...


class SklearnKMeans:
    """scikit-learn Lloyd k-means on unit vectors, centroids re-normalised at the end.

    Euclidean k-means on unit vectors is a close stand-in for spherical k-means (the
    assignment step is identical; only the centroid update skips the projection).
    """

    name = "sklearn"

    def fit(self, x: np.ndarray, k: int, *, seed: int, max_iter: int = 20) -> np.ndarray:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        x, k = _check_input(x, k)
        if x.shape[0] == 0:
            return np.zeros((0, x.shape[1]), dtype=np.float32)
        km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed, algorithm="lloyd")
        with warnings.catch_warnings():
            # "Number of distinct clusters found smaller than n_clusters" on duplicate rows.
            warnings.simplefilter("ignore", ConvergenceWarning)
            km.fit(x)
        return l2_normalise(km.cluster_centers_)


class FaissKMeans:
    """faiss spherical k-means (``faiss.Kmeans(spherical=True, nredo=1)``).

    Runs with one OpenMP thread for the duration of the fit (restored afterwards): that
    makes results independent of the machine's core count and was also the fastest setting
    measured (see module docstring). Spark already runs one task per core.
    """

    name = "faiss"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def fit(self, x: np.ndarray, k: int, *, seed: int, max_iter: int = 20) -> np.ndarray:
        import faiss

        x, k = _check_input(x, k)
        n, d = x.shape
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        if k == 1:
            return l2_normalise(x.mean(axis=0, keepdims=True))
        km = faiss.Kmeans(
            d,
            k,
            niter=max_iter,
            seed=int(seed) & 0x7FFFFFFF,
            spherical=True,
            nredo=1,
            verbose=False,
            min_points_per_centroid=1,  # silence the "please provide at least" warning
        )
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            km.train(x)
        finally:
            faiss.omp_set_num_threads(before)
        assert km.centroids is not None  # set by train()
        return l2_normalise(km.centroids)


class CumlKMeans:
    """RAPIDS cuML k-means on the GPU (cupy arrays); centroids normalised on return."""

    name = "cuml"

    def fit(self, x: np.ndarray, k: int, *, seed: int, max_iter: int = 20) -> np.ndarray:
        import cupy as cp
        from cuml.cluster import KMeans

        x, k = _check_input(x, k)
        if x.shape[0] == 0:
            return np.zeros((0, x.shape[1]), dtype=np.float32)
        km = KMeans(
            n_clusters=k,
            max_iter=max_iter,
            n_init=1,
            random_state=int(seed),
            init="scalable-k-means++",
            output_type="cupy",
        )
        km.fit(cp.asarray(x, dtype=cp.float32))
        centres = cp.asnumpy(cp.asarray(km.cluster_centers_, dtype=cp.float32))
        return l2_normalise(centres)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _gpu_visible() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except Exception:  # noqa: BLE001 - any torch import/runtime failure means "no GPU"
        pass
    try:
        import cupy as cp

        return int(cp.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # noqa: BLE001
        return False


def _cuml_usable() -> bool:
    if not (_has_module("cuml") and _has_module("cupy")):
        return False
    try:
        import cuml.cluster  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return _gpu_visible()


def select_backend(preference: str = "auto") -> KMeansBackend:
    """Return a backend: "auto" (cuML on GPU, else faiss, else sklearn) or an explicit name."""
    pref = preference.lower().strip()
    if pref == "auto":
        if _cuml_usable():
            return CumlKMeans()
        if _has_module("faiss"):
            return FaissKMeans()
        if _has_module("sklearn"):
            return SklearnKMeans()
        raise RuntimeError("no k-means backend available: install faiss-cpu or scikit-learn")
    if pref == "cuml":
        if not _cuml_usable():
            raise RuntimeError(
                "kmeans backend 'cuml' needs RAPIDS cuML and cupy importable and a visible GPU; "
                "use 'auto', 'faiss' or 'sklearn' on CPU"
            )
        return CumlKMeans()
    if pref == "faiss":
        if not _has_module("faiss"):
            raise RuntimeError("kmeans backend 'faiss' needs faiss-cpu (pip install faiss-cpu)")
        return FaissKMeans()
    if pref == "sklearn":
        if not _has_module("sklearn"):
            raise RuntimeError("kmeans backend 'sklearn' needs scikit-learn")
        return SklearnKMeans()
    raise ValueError(f"unknown kmeans backend {preference!r}: use auto, cuml, faiss or sklearn")


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    second_margin: float | None = None,
    chunk_size: int = 16384,
    precise: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest centroid per row by cosine, optionally the second nearest near a border.

    Returns ``(nearest, second, margin)``: int64 indices, int64 indices with -1 where
    unused, and float32 ``cos_nearest - cos_second`` (NaN unless ``second_margin`` is given
    and k >= 2). ``second`` is set only when ``cos_nearest - cos_second < second_margin``.
    Works in row chunks, so memory is ``chunk_size * k`` floats, not ``n * k``. Ties go to
    the lower centroid index. With ``precise`` the dot products are taken in float64:
    float32 BLAS results for a row shift in the last bits with the chunk/batch it sits in,
    float64 ones do not survive to the float32 output, so a row's assignment does not depend
    on its Arrow batch. Without it (float32, about twice as fast), the result is still the
    same for the same ``x``: for callers that always see a group's rows together.
    """
    c = np.ascontiguousarray(centroids, dtype=np.float64 if precise else np.float32)
    if c.shape[0] == 0:
        raise ValueError("assign() needs at least one centroid")
    width = 2 if second_margin is not None and c.shape[0] >= 2 else 1
    ids, margin = _ranked(np.asarray(x), c, width, second_margin, chunk_size)
    second = ids[:, 1] if width == 2 else np.full(ids.shape[0], -1, dtype=np.int64)
    return ids[:, 0].copy(), second.copy(), margin


def _ranked(
    x: np.ndarray, c: np.ndarray, width: int, margin: float | None, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The core of :func:`assign` and :func:`nearest_ids`: per row, its `width` nearest
    centroids by cosine, nearest first, -1 where one is not within `margin` of the nearest's
    cosine (ties to the lower index: one argmax per column), and the float32 gap
    cos_nearest - cos_second (NaN when width is 1). Products in `c`'s dtype, in row chunks."""
    n = x.shape[0]
    ids = np.full((n, width), -1, dtype=np.int64)
    gap = np.full(n, np.nan, dtype=np.float32)
    limit = np.inf if margin is None else margin  # width is 1 without a margin
    rows = np.arange(min(chunk_size, max(n, 1)))
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = (x[start:stop].astype(c.dtype, copy=False) @ c.T).astype(np.float32, copy=False)
        r = rows[: stop - start]
        taken = np.argmax(sims, axis=1)
        best_sim = sims[r, taken]
        ids[start:stop, 0] = taken
        for col in range(1, width):  # the next nearest, one argmax at a time
            sims[r, taken] = -np.inf
            taken = np.argmax(sims, axis=1)
            g = best_sim - sims[r, taken]
            if col == 1:
                gap[start:stop] = g
            ids[start:stop, col] = np.where(g < limit, taken, -1)
    return ids, gap


def stack_embeddings(values: Iterable[Any]) -> np.ndarray:
    """A float32 matrix (n, d) from a column of embeddings (lists or arrays of equal length)."""
    return np.stack([np.asarray(e, dtype=np.float32) for e in values])


def fit_sample(
    sample: pd.DataFrame, k: int, *, backend: str, seed: int, max_iter: int = 20
) -> tuple[np.ndarray, str]:
    """Fit k-means on a collected sample (sample_id, embedding); return (centroids, backend).

    The rows are sorted by sample_id first, so the same sample gives the same centroids
    whatever order it was collected in.
    """
    rows = sample.sort_values("sample_id", kind="mergesort")
    km = select_backend(backend)
    return km.fit(stack_embeddings(rows["embedding"]), k, seed=seed, max_iter=max_iter), km.name


def nearest_ids(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    margin: float | None,
    max_ids: int = 2,
    chunk_size: int = 16384,
) -> np.ndarray:
    """Per row, its nearest centroid plus, up to ``max_ids`` in all, every next nearest whose
    cosine is within ``margin`` of the nearest's: an int64 array (n, width), nearest first,
    -1 where unused (width = ``max_ids``, or 1 without a margin; at most k).

    With ``max_ids = 2`` this is :func:`assign`'s (nearest, second), ties to the lower index
    alike. A third id helps where centroids crowd: two near-duplicates close to a point where
    three clusters meet can get disjoint pairs of centroids. Same float64 products and
    chunking as :func:`assign`.
    """
    if max_ids < 1:
        raise ValueError(f"max_ids must be >= 1, got {max_ids}")
    c = np.ascontiguousarray(centroids, dtype=np.float64)
    if c.shape[0] == 0:
        raise ValueError("nearest_ids() needs at least one centroid")
    width = min(max_ids if margin is not None else 1, c.shape[0])
    return _ranked(np.asarray(x), c, width, margin, chunk_size)[0]


def assign_ids(
    embeddings: pd.Series,
    centroids: np.ndarray,
    *,
    second_margin: float | None = None,
    max_ids: int = 2,
) -> pd.Series:
    """Per embedding, the list of its coarse centroid ids (see :func:`nearest_ids`).

    Lists so that exploding them gives one row per (embedding, centroid): a sample near a
    border is then in each of those clusters, and its pairs across the border are still found.
    """
    if embeddings.empty:
        return pd.Series([], dtype=object)
    ids = nearest_ids(
        stack_embeddings(embeddings), centroids, margin=second_margin, max_ids=max_ids
    )
    return pd.Series([[int(i) for i in row if i >= 0] for row in ids], dtype=object)
