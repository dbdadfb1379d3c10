"""Semantic dedup on bad input: empty, one sample, identical vectors, NaN/NULL embeddings; and
the coarse sample's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from curator_udfs.resolve import resolve_duplicates
from curator_udfs.similarity import pairs_above
from spark_jobs import dedup, dedup_semantic
from spark_jobs.config import load_config
from spark_jobs.dedup_semantic import semantic_pairs, semantic_rows, usable_embedding
from spark_jobs.summary import Summary
from spark_jobs.tables import read_table, table_path
from tests.test_filter import SCORES_DDL, fake_images_and_scores

EMB_DDL = "sample_id STRING, embedding ARRAY<FLOAT>"
RANK_DDL = "sample_id STRING, aesthetic_score DOUBLE, width INT, height INT, pixels DOUBLE"
DIM = 8


def _cfg(*sets: str):
    return load_config(sets=["dedup.eps=[0.01, 0.05]", "dedup.coarse_k=1", *sets])


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _run(spark, cfg, emb: list[tuple], scores: dict[str, float]):
    """semantic_pairs + semantic_rows over the given rows; (rows as pandas, all pairs, summary)."""
    frame = spark.createDataFrame(emb, EMB_DDL)
    ranked = spark.createDataFrame(
        [(s, float(v), 10, 10, 100.0) for s, v in scores.items()], RANK_DDL
    )
    summary = Summary(job="t", run_id="t")
    sp = semantic_pairs(spark, cfg, frame, ranked, summary)
    try:
        removed: dict[str, int] = {}
        rows = semantic_rows(sp, ranked, cfg, summary, removed).toPandas()
        n_pairs = sp.all_pairs().count()
    finally:
        sp.unpersist()
    summary.extra["removed"] = removed
    return rows.sort_values(["eps", "sample_id"]).reset_index(drop=True), n_pairs, summary


def test_no_embeddings_and_one_sample(spark) -> None:
    rows, n_pairs, summary = _run(spark, _cfg(), [], {})
    assert rows.empty and n_pairs == 0 and "0 distinct embedding" in summary.extra["semantic_note"]
    assert summary.extra["removed"] == {"semantic eps=0.01": 0, "semantic eps=0.05": 0}
    one = [("s0", [float(v) for v in _unit(np.random.default_rng(0), 1)[0]])]
    rows, n_pairs, summary = _run(spark, _cfg(), one, {"s0": 1.0})
    assert rows.empty and n_pairs == 0 and summary.extra["embeddings"] == 1
    assert "1 distinct embedding" in summary.extra["semantic_note"]


def test_five_hundred_identical_vectors_are_linear(spark) -> None:
    v = [float(x) for x in _unit(np.random.default_rng(1), 1)[0]]
    ids = [f"s{i:03d}" for i in range(500)]
    scores = {s: float(i % 7) for i, s in enumerate(ids)}  # ties: s006 is the best 6.0
    rows, n_pairs, summary = _run(spark, _cfg(), [(s, v) for s in ids], scores)
    assert n_pairs == 499  # each copy with its representative, not 500 * 499 / 2
    assert summary.extra["identical_copies"] == 499 and summary.extra["distinct_embeddings"] == 1
    assert "no k-means ran" in summary.extra["semantic_note"]
    for eps in (0.01, 0.05):
        sel = rows[np.isclose(rows["eps"], eps)]
        assert len(sel) == 499 and set(sel["duplicate_of"]) == {"s006"}
        assert set(sel["similar_to"]) == {"s006"} and (sel["similarity"] == 1.0).all()
    assert summary.extra["removed"]["semantic eps=0.01"] == 499


def test_nan_and_null_embeddings_are_skipped_and_counted(spark) -> None:
    x = _unit(np.random.default_rng(2), 20)
    x[1] = x[0] + 0.001  # a planted near duplicate of s00
    x[1] /= np.linalg.norm(x[1])
    emb = [(f"s{i:02d}", [float(v) for v in x[i]]) for i in range(20)]
    emb += [
        ("nan1", [float("nan")] * DIM),
        ("nan2", [0.5] * (DIM - 1) + [float("nan")]),
        ("null_elem", [0.5] * (DIM - 1) + [None]),
        ("null", None),
        ("empty", []),
    ]
    scores = {s: float(i) for i, (s, _) in enumerate(emb)}
    rows, _, summary = _run(spark, _cfg(), emb, scores)
    assert summary.extra["embeddings"] == 20 and summary.extra["embeddings_skipped"] == 5
    assert "5 scores rows have no usable embedding" in summary.extra["embeddings_note"]
    assert rows["sample_id"].tolist() == ["s00", "s00"]  # s01 ranks better (score 1 > 0)
    assert set(rows["duplicate_of"]) == {"s01"}


@pytest.mark.parametrize("element", ["float", "double", "int"])
def test_usable_embedding_finds_nan_and_null_elements_in_any_position(spark, element) -> None:
    nan = float("nan") if element != "int" else None  # an int array has no NaN: NULL only
    one, two = (1, 2) if element == "int" else (1.0, 2.0)
    rows = {
        "clean": [one, two], "nan_last": [one, nan], "nan_first": [nan, two],
        "null_elem": [one, None], "null_then_nan": [None, nan], "nan_then_null": [nan, None],
        "empty": [], "null": None,
    }  # fmt: skip
    ddl = f"sample_id STRING, embedding ARRAY<{element}>"
    frame = spark.createDataFrame(list(rows.items()), ddl)
    element_type = frame.schema["embedding"].dataType.elementType
    got = {r["sample_id"]: r["ok"] for r in frame.select(
        "sample_id", usable_embedding(element_type).alias("ok")).collect()}  # fmt: skip
    assert {k for k, ok in got.items() if ok} == {"clean"}
    assert all(ok is not None for ok in got.values())  # never NULL: F.when treats it as false


@pytest.mark.parametrize("keep", ["aesthetic", "farthest_from_centroid"])
def test_repeated_vector_above_max_cluster_size_matches_all_pairs(spark, keep: str) -> None:
    rng = np.random.default_rng(3)
    base = _unit(rng, 12)
    near = base[0] + rng.normal(0, 0.004, DIM).astype(np.float32)
    near /= np.linalg.norm(near)
    x = np.vstack([np.repeat(base[:1], 40, axis=0), near[None], base[1:]])  # 40 copies
    ids = np.array([f"s{i:02d}" for i in range(len(x))], dtype=object)
    score = rng.uniform(0, 10, len(x)).round(3)
    cfg = _cfg("dedup.max_cluster_size=20", f"dedup.keep={keep}")
    emb = [(s, [float(v) for v in x[i]]) for i, s in enumerate(ids)]
    rows, n_pairs, summary = _run(spark, cfg, emb, dict(zip(ids, score, strict=True)))
    assert summary.extra["identical_copies"] == 39
    assert summary.extra["largest_fine_cluster"] <= 20 and n_pairs < 3 * len(x)
    rank = pd.DataFrame({"sample_id": ids, "aesthetic_score": score})
    for eps in (0.01, 0.05):
        i, j, sim = pairs_above(ids, x, 1.0 - eps)
        assert len(i) >= 40 * 39 // 2  # the copies are all similar to each other
        ref = pd.DataFrame({"a": ids[i], "b": ids[j], "similarity": sim})
        if keep == "farthest_from_centroid":  # copies tie on distance: sample_id decides
            continue
        want = resolve_duplicates(ref, rank, order="aesthetic")
        got = rows[np.isclose(rows["eps"], eps)].reset_index(drop=True)
        assert got["sample_id"].tolist() == want["sample_id"].tolist()
        assert got["duplicate_of"].tolist() == want["duplicate_of"].tolist()
        assert got["similar_to"].tolist() == want["similar_to"].tolist()
        assert np.allclose(got["similarity"], want["similarity"], atol=1e-6)
    if keep == "farthest_from_centroid":
        copies = rows[rows["sample_id"].isin(ids[:40]) & np.isclose(rows["eps"], 0.01)]
        kept = set(ids[:40]) - set(copies["sample_id"])
        assert len(kept) <= 1 and (not kept or kept == {"s00"})  # smallest id of the copies


def test_job_with_an_empty_scores_table_notes_it(spark, make_cfg) -> None:
    cfg = make_cfg("dedup.methods=[exact, semantic]", "dedup.coarse_k=1")
    fake_images_and_scores(spark, cfg, 6)
    empty = spark.createDataFrame([], SCORES_DDL)  # the table exists, with no rows
    empty.write.format("delta").mode("overwrite").save(table_path(cfg, "scores"))
    summary = dedup.run(spark, cfg)
    assert summary.extra["scores_note"] == "the scores table is empty: no embeddings to compare"
    assert summary.extra["removed"]["semantic eps=0.01"] == 0
    assert summary.rows_in == 6 and summary.balanced
    sem = read_table(spark, cfg, "duplicates").where("method = 'semantic'").count()
    assert sem == 0


def test_coarse_sample_is_the_rows_of_smallest_seeded_hash(spark, monkeypatch) -> None:
    x = _unit(np.random.default_rng(5), 300)
    frame = spark.createDataFrame(
        [(f"s{i:03d}", [float(v) for v in x[i]]) for i in range(300)], EMB_DDL
    ).repartition(4)
    seen: list[pd.DataFrame] = []
    fit = dedup_semantic.fit_sample

    def fit_and_keep(pdf: pd.DataFrame, *args, **kwargs):  # the real fit, its input kept
        seen.append(pdf)
        return fit(pdf, *args, **kwargs)

    monkeypatch.setattr(dedup_semantic, "fit_sample", fit_and_keep)
    cfg = _cfg("dedup.sample_size=40", "dedup.seed=7", "dedup.coarse_k=3")
    centroids, _, k, sampled = dedup_semantic.coarse_centroids(frame, cfg, 300)
    expected = frame.orderBy(F.xxhash64("sample_id", F.lit(7)), "sample_id").limit(40)
    assert sampled == 40 and k == 3 and centroids.shape == (3, DIM)
    assert set(seen[0]["sample_id"]) == {r["sample_id"] for r in expected.collect()}
    got = np.stack(seen[0].sort_values("sample_id")["embedding"].to_numpy())
    want = x[sorted(int(s[1:]) for s in seen[0]["sample_id"])]
    np.testing.assert_array_equal(got.astype(np.float32), want)  # each row its own embedding
