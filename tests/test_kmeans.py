"""KMeans backends: determinism, shapes, normalisation; assign with the second-nearest option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator_udfs.kmeans import (
    FaissKMeans,
    KMeansBackend,
    SklearnKMeans,
    assign,
    assign_ids,
    fit_sample,
    l2_normalise,
    nearest_ids,
    select_backend,
    stack_embeddings,
)

CPU_BACKENDS = [SklearnKMeans, FaissKMeans]


def _blobs(n: int = 600, d: int = 32, k: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((k, d)))
    x = centres[rng.integers(0, k, n)] + 0.1 * rng.standard_normal((n, d)).astype(np.float32)
    return l2_normalise(x)


@pytest.mark.parametrize("cls", CPU_BACKENDS)
def test_fit_is_deterministic_and_normalised(cls: type) -> None:
    x = _blobs()
    backend = cls()
    assert isinstance(backend, KMeansBackend)
    c1 = backend.fit(x, 6, seed=7, max_iter=20)
    c2 = cls().fit(x, 6, seed=7, max_iter=20)
    assert c1.shape == (6, 32) and c1.dtype == np.float32
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    a1 = assign(x, c1)[0]
    a2 = assign(x, c2)[0]
    np.testing.assert_array_equal(a1, a2)
    assert np.unique(a1).size == 6


@pytest.mark.parametrize("cls", CPU_BACKENDS)
def test_fit_caps_k_at_n(cls: type) -> None:
    x = _blobs(n=5)
    c = cls().fit(x, 10, seed=0, max_iter=5)
    assert c.shape == (5, 32)
    assert cls().fit(x[:0], 3, seed=0, max_iter=5).shape == (0, 32)


def test_select_backend() -> None:
    assert select_backend("sklearn").name == "sklearn"
    assert select_backend("faiss").name == "faiss"
    assert select_backend("auto").name in {"faiss", "cuml"}
    with pytest.raises(ValueError, match="unknown kmeans backend"):
        select_backend("nope")


def test_select_cuml_without_gpu_is_a_clear_error() -> None:
    try:
        backend = select_backend("cuml")
    except RuntimeError as exc:
        assert "cuml" in str(exc).lower()
    else:  # a GPU box with RAPIDS: it must then really be cuML
        assert backend.name == "cuml"


def test_assign_nearest_and_second_margin() -> None:
    c = l2_normalise(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    x = l2_normalise(
        np.array(
            [
                [1.0, 0.0, 0.0],  # clearly centroid 0
                [1.0, 0.98, 0.0],  # between 0 and 1, close to both
                [0.0, 0.2, 1.0],  # centroid 2, far from 1
            ],
            dtype=np.float32,
        )
    )
    nearest, second, margin = assign(x, c)
    np.testing.assert_array_equal(nearest, [0, 0, 2])
    np.testing.assert_array_equal(second, [-1, -1, -1])
    assert np.isnan(margin).all()  # no second asked for: no margin computed
    top = np.sort(x @ c.T, axis=1)
    for precise in (True, False):
        nearest, second, margin = assign(x, c, second_margin=0.05, chunk_size=2, precise=precise)
        np.testing.assert_array_equal(nearest, [0, 0, 2])
        np.testing.assert_array_equal(second, [-1, 1, -1])
        np.testing.assert_allclose(margin, top[:, -1] - top[:, -2], atol=1e-6)
    _, second, _ = assign(x, c, second_margin=2.0)
    np.testing.assert_array_equal(second, [1, 1, 1])  # row 0: tie 1 vs 2 -> lower index


def test_assign_chunking_matches_unchunked() -> None:
    x = _blobs(n=1000)
    c = FaissKMeans().fit(x, 8, seed=1, max_iter=10)
    full = assign(x, c, second_margin=0.1)
    chunked = assign(x, c, second_margin=0.1, chunk_size=77)
    for f, ch in zip(full, chunked, strict=True):
        np.testing.assert_array_equal(f, ch)


def test_stack_embeddings_from_lists_and_arrays() -> None:
    x = stack_embeddings([[1, 2, 3], np.array([4.0, 5.0, 6.0]), (7, 8, 9)])
    assert x.dtype == np.float32 and x.shape == (3, 3)
    np.testing.assert_array_equal(x[:, 0], [1, 4, 7])
    with pytest.raises(ValueError):
        stack_embeddings([[1, 2], [1, 2, 3]])  # ragged: not one matrix


def test_fit_sample_sorts_by_sample_id_first() -> None:
    x = _blobs(n=120, k=4, seed=2)
    sample = pd.DataFrame({"sample_id": [f"s{i:03d}" for i in range(len(x))], "embedding": list(x)})
    centroids, name = fit_sample(sample, 4, backend="faiss", seed=5, max_iter=10)
    assert name == "faiss" and centroids.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(centroids, FaissKMeans().fit(x, 4, seed=5, max_iter=10))
    shuffled = sample.sample(frac=1.0, random_state=0)  # collected in another order
    again, _ = fit_sample(shuffled, 4, backend="faiss", seed=5, max_iter=10)
    np.testing.assert_array_equal(again, centroids)
    _, name = fit_sample(sample, 4, backend="sklearn", seed=5, max_iter=10)
    assert name == "sklearn"


def test_assign_ids_lists_nearest_and_second_near_a_border() -> None:
    c = l2_normalise(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    emb = pd.Series([[1.0, 0.0, 0.0], [1.0, 0.98, 0.0], [0.0, 0.2, 1.0]])
    assert assign_ids(emb, c).tolist() == [[0], [0], [2]]
    assert assign_ids(emb, c, second_margin=0.05).tolist() == [[0], [0, 1], [2]]
    out = assign_ids(emb, c, second_margin=2.0)
    assert out.tolist() == [[0, 1], [0, 1], [2, 1]]
    assert all(type(i) is int for ids in out for i in ids)  # plain ints for Arrow
    empty = assign_ids(pd.Series([], dtype=object), c, second_margin=0.05)
    assert empty.empty and empty.dtype == object


def test_nearest_ids_two_is_assign_and_a_third_joins_where_centroids_crowd() -> None:
    rng = np.random.default_rng(3)
    x = l2_normalise(rng.standard_normal((500, 16)).astype(np.float32))
    c = l2_normalise(rng.standard_normal((12, 16)).astype(np.float32))
    nearest, second, _ = assign(x, c, second_margin=0.1)
    want = [[int(a)] if b < 0 else [int(a), int(b)] for a, b in zip(nearest, second, strict=True)]
    two = nearest_ids(x, c, margin=0.1, max_ids=2, chunk_size=77)
    assert two.shape == (500, 2) and [[int(i) for i in r if i >= 0] for r in two] == want
    three = [[int(i) for i in r if i >= 0] for r in nearest_ids(x, c, margin=0.1, max_ids=3)]
    assert [ids[:2] for ids in three] == want  # a third id only ever adds to the two
    assert any(len(ids) == 3 for ids in three) and all(len(ids) <= 3 for ids in three)
    sims = x @ c.T
    for row, ids in zip(sims, three, strict=True):  # every id within the margin of the best
        assert all(row[ids[0]] - row[i] < 0.1 + 1e-6 for i in ids)
    np.testing.assert_array_equal(nearest_ids(x, c, margin=None, max_ids=3), nearest[:, None])
    # three centroids 120 degrees apart: the centre point is near all three
    tri = l2_normalise(np.array([[1, 0, 0.2], [-0.5, 0.866, 0.2], [-0.5, -0.866, 0.2]]))
    mid = l2_normalise(np.array([[0.02, 0.0, 1.0]], dtype=np.float32))
    assert assign_ids(pd.Series(list(mid)), tri, second_margin=0.05).tolist() == [[0, 1]]
    assert assign_ids(pd.Series(list(mid)), tri, second_margin=0.05, max_ids=3).tolist() == [
        [0, 1, 2]
    ]
    with pytest.raises(ValueError, match="max_ids"):
        nearest_ids(x, c, margin=0.1, max_ids=0)
