"""Incremental semantic dedup: stored coarse centroids, touched coarse groups only.

Each test writes a small `images` + `scores` table directly (no ingest), runs the job in
process on the session Spark, adds and removes rows, and compares the incremental result
with a from-scratch run on a fresh warehouse.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from bench.synthetic import mixture_embeddings
from curator_udfs.coarse_reuse import StoredCentroids, refit_reason, touched_groups
from spark_jobs import dedup, dedup_state
from spark_jobs.catalog import register_tables
from spark_jobs.dedup_state import SemanticState
from spark_jobs.summary import Summary
from spark_jobs.tables import IMAGES, read_table, table_path

SCORES_DDL = (
    "sample_id STRING, model STRING, embedding ARRAY<FLOAT>, embedding_dim INT, "
    "aesthetic_score DOUBLE, nsfw_score DOUBLE, error STRING, scored_at TIMESTAMP, run_id STRING"
)
DIM = 16
SETS = (
    "dedup.methods=[semantic]",
    "dedup.eps=[0.01, 0.03]",
    "dedup.second_margin=0.05",
)
COMPARED = ["method", "eps", "sample_id", "duplicate_of", "similar_to"]
AT = datetime(2024, 1, 1, tzinfo=UTC)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _append(spark, cfg, ids: list[str], x: np.ndarray, aesthetic: np.ndarray) -> None:
    """Append images (metadata only) and scores rows of model "test"."""
    images = [(s, s, "file:///x.tar", None, "JPEG", "jpg", 64, 64, 1, None, None, None, [],
               AT, "t", None, None, None, None, None, None) for s in ids]  # fmt: skip
    spark.createDataFrame(images, IMAGES.schema).write.format("delta").mode("append").save(
        table_path(cfg, "images")
    )
    scores = [(s, "test", [float(v) for v in x[i]], DIM, float(aesthetic[i]), 0.1, None, AT, "e")
              for i, s in enumerate(ids)]  # fmt: skip
    spark.createDataFrame(scores, SCORES_DDL).write.format("delta").mode("append").save(
        table_path(cfg, "scores")
    )
    register_tables(spark, cfg)


def _remove(spark, cfg, ids: list[str]) -> None:
    cond = "sample_id IN (" + ", ".join(f"'{s}'" for s in ids) + ")"
    for table in ("images", "scores"):
        DeltaTable.forPath(spark, table_path(cfg, table)).delete(cond)


def _dups(spark, cfg) -> pd.DataFrame:
    df = read_table(spark, cfg, "duplicates").select(*COMPARED).toPandas()
    return df.sort_values(COMPARED).reset_index(drop=True)


def _state(spark, cfg, table: str, cols: list[str]) -> pd.DataFrame:
    df = read_table(spark, cfg, table).select(*cols).toPandas()
    return df.sort_values(cols).reset_index(drop=True)


def _pairs(spark, cfg) -> set[tuple[str, str]]:
    """The (a, b) of every stored candidate pair."""
    df = _state(spark, cfg, "dedup_group_pairs", ["a", "b"]).dropna()
    return set(zip(df["a"], df["b"], strict=True))


def _new_pairs(new_ids: list[str], pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {p for p in pairs if p[0] in new_ids or p[1] in new_ids}


def _copy_table(src_cfg, dest_cfg, logical: str) -> None:
    shutil.copytree(table_path(src_cfg, logical), table_path(dest_cfg, logical))


def _data(seed: int, n: int, clusters: int, intra: tuple[float, float]) -> np.ndarray:
    x, _ = mixture_embeddings(n, DIM, clusters=clusters, seed=seed, planted_fraction=0.1,
                              sims=(0.975, 0.999), intra_cos=intra)  # fmt: skip
    return x


def _increment(rng: np.random.Generator, old: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """New rows: near copies of 8 old samples, 4 fresh points with a near copy each (pairs
    of new samples), and the other fresh points alone."""
    picked = old[rng.choice(len(old), 8, replace=len(old) < 8)]
    near_old = _unit(picked + rng.normal(0, 0.02, (8, DIM)))
    base = fresh[:4]
    pairs = np.vstack([base, _unit(base + rng.normal(0, 0.02, base.shape))])
    return np.vstack([near_old, pairs, fresh[4:]]).astype(np.float32)


def _separated(spark, make_cfg, rng: np.random.Generator, data_seed: int, n: int):
    """Three tight, far-apart clusters of `n` rows in a fresh warehouse, deduplicated once:
    (cfg, its --set overrides, ids, embeddings, aesthetic scores)."""
    x = _data(data_seed, n, 3, (0.93, 0.97))
    ids = [f"s{i:04d}" for i in range(len(x))]
    score = rng.uniform(0, 10, len(x))
    sets = (*SETS, "dedup.coarse_k=3", "dedup.max_cluster_size=1000")
    cfg = make_cfg(*sets)
    _append(spark, cfg, ids, x, score)
    dedup.run(spark, cfg)
    return cfg, sets, ids, x, score


def test_incremental_equals_from_scratch_with_the_same_centroids(
    spark, make_cfg, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    x = _data(1, 240, 6, (0.5, 0.8))
    ids = [f"s{i:04d}" for i in range(len(x))]
    score = rng.uniform(0, 10, len(x))
    cfg = make_cfg(*SETS, "dedup.coarse_k=8", "dedup.max_cluster_size=40")
    _append(spark, cfg, ids, x, score)
    first = dedup.run(spark, cfg)
    assert first.extra["centroids"] == "refitted: no stored centroids for this model"
    assert first.extra["coarse_groups_touched"] == first.extra["coarse_groups_total"]

    # ~10 % new rows around one coarse group's members, three of its members removed
    members = read_table(spark, cfg, "dedup_members").toPandas()
    group = members.groupby("coarse")["sample_id"].apply(set)
    only = {c: sorted(v - set().union(*[w for d, w in group.items() if d != c]))
            for c, v in group.items()}  # fmt: skip
    c = max(only, key=lambda g: len(only[g]))
    src = x[[ids.index(s) for s in only[c]]]
    new = _increment(rng, src, _unit(src[rng.integers(len(src), size=12)]
                                     + rng.normal(0, 0.1, (12, DIM))))  # fmt: skip
    new_ids = [f"n{i:04d}" for i in range(len(new))]
    new_score = rng.uniform(0, 10, len(new))
    _append(spark, cfg, new_ids, new, new_score)
    gone = only[c][-3:]  # removed samples must leave the state too
    _remove(spark, cfg, gone)
    inc = dedup.run(spark, cfg)
    assert inc.extra["centroids"] == "reused" and inc.extra["group_state"] == "incremental"
    touched, total = inc.extra["coarse_groups_touched"], inc.extra["coarse_groups_total"]
    assert 0 < touched < total, (touched, total)
    print({k: inc.extra[k] for k in ("coarse_groups_touched", "coarse_groups_total",
                                     "representatives_compared", "distinct_embeddings")},
          {"first_s": first.seconds, "incremental_s": inc.seconds})  # fmt: skip
    assert inc.extra["representatives_compared"] < inc.extra["distinct_embeddings"]

    # from scratch on a fresh warehouse: the same rows, only the centroids copied over
    fresh = make_cfg(*SETS, "dedup.coarse_k=8", "dedup.max_cluster_size=40",
                     warehouse=tmp_path / "fresh")  # fmt: skip
    keep = [i for i, s in enumerate(ids) if s not in gone]
    _append(spark, fresh, [ids[i] for i in keep], x[keep], score[keep])
    _append(spark, fresh, new_ids, new, new_score)
    _copy_table(cfg, fresh, "dedup_centroids")
    scratch = dedup.run(spark, fresh)
    assert scratch.extra["centroids"] == "reused" and scratch.extra["group_state"] == "rebuilt"
    got, want = _dups(spark, cfg), _dups(spark, fresh)
    assert len(want) and set(new_ids) & set(want["sample_id"])  # new duplicates were found
    pd.testing.assert_frame_equal(got, want)
    members = ["model", "coarse", "sample_id"]
    assert not set(gone) & set(_state(spark, cfg, "dedup_members", members)["sample_id"])
    pd.testing.assert_frame_equal(_state(spark, cfg, "dedup_members", members),
                                  _state(spark, fresh, "dedup_members", members))  # fmt: skip
    # the touched group's fine clusters were extended, not split anew: the same pairs, under
    # the stored clusters' names; its stored pairs without the removed members are kept
    inc_pairs, scratch_pairs = _pairs(spark, cfg), _pairs(spark, fresh)
    assert inc_pairs == scratch_pairs and inc_pairs & _new_pairs(new_ids, inc_pairs)
    stored = read_table(spark, cfg, "dedup_group_pairs").select("a", "centroid").toPandas()
    assert stored["centroid"].notna().sum() == stored["a"].isna().sum() > 0  # stats rows only
    assert inc.extra["coarse_groups_split"] == 0
    assert inc.extra["representatives_compared"] == len(new_ids)  # only the new ones

    again = dedup.run(spark, cfg)  # nothing changed: no group recomputed, the same rows
    assert again.extra["coarse_groups_touched"] == 0
    assert again.extra["representatives_compared"] == 0
    pd.testing.assert_frame_equal(_dups(spark, cfg), got)

    # only removals, in another group: nothing to compare, its pairs without the removed
    dup_ids = set(got["sample_id"]) - set(new_ids)
    other = next(g for g in sorted(only) if g != c and set(only[g]) & dup_ids)
    gone2 = sorted(set(only[other]) & dup_ids)[:2]
    _remove(spark, cfg, gone2)
    fewer = dedup.run(spark, cfg)
    assert fewer.extra["coarse_groups_touched"] >= 1 and fewer.extra["coarse_groups_split"] == 0
    assert fewer.extra["representatives_compared"] == 0
    scratch2 = make_cfg(*SETS, "dedup.coarse_k=8", "dedup.max_cluster_size=40",
                        warehouse=tmp_path / "fresh2")  # fmt: skip
    keep2 = [i for i in keep if ids[i] not in gone2]
    _append(spark, scratch2, [ids[i] for i in keep2], x[keep2], score[keep2])
    _append(spark, scratch2, new_ids, new, new_score)
    _copy_table(cfg, scratch2, "dedup_centroids")
    dedup.run(spark, scratch2)
    pd.testing.assert_frame_equal(_dups(spark, cfg), _dups(spark, scratch2))
    assert not set(gone2) & set().union(*_pairs(spark, cfg))


def test_well_separated_data_incremental_equals_a_full_refit(
    spark, make_cfg, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    cfg, sets, ids, x, score = _separated(spark, make_cfg, rng, 4, 150)
    new = _increment(rng, x, _data(4, 20, 3, (0.93, 0.97))[:10])  # same seed: same clusters
    new_ids = [f"n{i:04d}" for i in range(len(new))]
    new_score = rng.uniform(0, 10, len(new))
    _append(spark, cfg, new_ids, new, new_score)
    inc = dedup.run(spark, cfg)
    assert inc.extra["centroids"] == "reused" and inc.extra["group_state"] == "incremental"
    # new rows in every group: the state is replaced whole, by the model alone (a list of
    # coarse groups would have Delta rewrite the files it cannot tell are all in it)
    assert inc.extra["coarse_groups_touched"] == inc.extra["coarse_groups_total"] == 3
    for table in ("dedup_group_pairs", "dedup_members"):
        last = DeltaTable.forPath(spark, table_path(cfg, table)).history(1).first()
        assert "coarse" not in last["operationParameters"]["predicate"], last
    members = _state(spark, cfg, "dedup_members", ["coarse", "sample_id"])
    assert not members.duplicated().any() and set(new_ids) <= set(members["sample_id"])
    assert dedup.run(spark, cfg).extra["coarse_groups_touched"] == 0
    # every frame the runs persisted is dropped again (SemanticPairs.unpersist)
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()
    fresh = make_cfg(*sets, warehouse=tmp_path / "fresh")
    _append(spark, fresh, ids, x, score)
    _append(spark, fresh, new_ids, new, new_score)
    full = dedup.run(spark, fresh, full=True)
    assert full.extra["centroids"] == "refitted: --full asked for a refit"
    want = _dups(spark, fresh)
    assert len(want) and set(new_ids) & set(want["sample_id"])
    pd.testing.assert_frame_equal(_dups(spark, cfg), want)


def test_state_of_an_older_layout_is_rebuilt_and_an_emptied_group_leaves_the_state(
    spark, make_cfg
) -> None:
    """Group state written before fine clusters carried centroids (no `centroid` column, an
    older basis) is rebuilt, the column added; a coarse group whose every member is removed
    is dropped from both state tables in one run, so the next run finds nothing split."""
    rng = np.random.default_rng(5)
    cfg, _, ids, x, _ = _separated(spark, make_cfg, rng, 4, 150)
    for table in ("dedup_group_pairs", "dedup_members"):
        old = read_table(spark, cfg, table).withColumn("basis", F.lit("fit=r;t=0.97"))
        old = old.drop("centroid").localCheckpoint()
        old.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
            table_path(cfg, table)
        )
    assert "centroid" not in read_table(spark, cfg, "dedup_group_pairs").columns
    rebuilt = dedup.run(spark, cfg)
    assert rebuilt.extra["group_state"] == "rebuilt" and rebuilt.extra["centroids"] == "reused"
    stats = read_table(spark, cfg, "dedup_group_pairs").where("a IS NULL").toPandas()
    assert len(stats) and stats["centroid"].map(len).eq(DIM).all()

    members = _state(spark, cfg, "dedup_members", ["coarse", "sample_id"])
    per_sample = members.groupby("sample_id")["coarse"].nunique()
    alone = members[members["sample_id"].map(per_sample) == 1]
    c = int(alone["coarse"].mode()[0])
    emptied = sorted(set(members.loc[members["coarse"] == c, "sample_id"]))
    _remove(spark, cfg, emptied)
    run = dedup.run(spark, cfg)
    assert run.extra["group_state"] == "incremental" and run.extra["coarse_groups_split"] >= 1
    for table in ("dedup_group_pairs", "dedup_members"):
        assert read_table(spark, cfg, table).where(F.col("coarse") == c).count() == 0
    again = dedup.run(spark, cfg)
    assert again.extra["coarse_groups_touched"] == 0 and again.extra["coarse_groups_split"] == 0
    assert not set(emptied) & set(_dups(spark, cfg)["sample_id"])


def _cached_plans(spark) -> list[str]:
    """The logical plans of every frame cached in the session now (a Delta scan shows as
    `Relation [columns] parquet`, without its path)."""
    cached = spark._jsparkSession.sharedState().cacheManager().cachedData()
    return [cached.apply(i).plan().toString() for i in range(cached.size())]


def test_every_group_touched_with_one_emptied_replaces_the_state_whole(
    spark, make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One group loses every member while the two others gain some: the whole model's state
    is replaced in one write (no per-group predicate), the emptied group leaves it, and the
    duplicates are those of a from-scratch run with the same centroids. When the state is
    written, no cached frame reads a state table (Delta would re-plan each one after the
    write)."""
    rng = np.random.default_rng(9)
    cfg, sets, ids, x, score = _separated(spark, make_cfg, rng, 4, 150)
    members = _state(spark, cfg, "dedup_members", ["coarse", "sample_id"])
    groups = members.groupby("coarse")["sample_id"].apply(set)
    c = int(members["coarse"].mode()[0])
    emptied = sorted(groups[c])
    _remove(spark, cfg, emptied)
    kept = [i for i, s in enumerate(ids) if s not in groups[c]]
    picked = rng.choice(kept, 6, replace=False)
    new = _unit(x[picked] + rng.normal(0, 0.02, (6, DIM))).astype(np.float32)
    new_ids = [f"n{i:04d}" for i in range(len(new))]
    new_score = rng.uniform(0, 10, len(new))
    _append(spark, cfg, new_ids, new, new_score)
    real, writes = dedup_state.replace_where, []

    def recording(spark_, cfg_, table, df, where):  # type: ignore[no-untyped-def]
        reading = [p for p in _cached_plans(spark) if "basis#" in p]  # only state tables have it
        writes.append((table.logical, len(reading)))
        return real(spark_, cfg_, table, df, where)

    monkeypatch.setattr(dedup_state, "replace_where", recording)
    run = dedup.run(spark, cfg)
    monkeypatch.setattr(dedup_state, "replace_where", real)
    assert writes == [("dedup_group_pairs", 0), ("dedup_members", 0)]
    assert run.extra["group_state"] == "incremental"
    assert run.extra["coarse_groups_touched"] == len(groups) == 3, run.extra
    for table in ("dedup_group_pairs", "dedup_members"):
        last = DeltaTable.forPath(spark, table_path(cfg, table)).history(1).first()
        assert "coarse" not in last["operationParameters"]["predicate"], last
        assert read_table(spark, cfg, table).where(F.col("coarse") == c).count() == 0
    assert dedup.run(spark, cfg).extra["coarse_groups_touched"] == 0
    scratch = make_cfg(*sets, warehouse=tmp_path / "scratch")
    _append(spark, scratch, [ids[i] for i in kept], x[kept], score[kept])
    _append(spark, scratch, new_ids, new, new_score)
    _copy_table(cfg, scratch, "dedup_centroids")
    dedup.run(spark, scratch)
    want = _dups(spark, scratch)
    assert set(new_ids) & set(want["sample_id"]) or set(new_ids) & set(want["duplicate_of"])
    pd.testing.assert_frame_equal(_dups(spark, cfg), want)


def test_a_crash_between_the_state_writes_is_recomputed(
    spark, make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after writing its groups' pairs but before their members, whose new
    samples are then removed again: the members match the stored ones once more, but the
    pairs are the crashed run's, so those groups are recomputed, not reused (the result is a
    from-scratch run's with the same centroids, and no pair names a removed sample)."""
    rng = np.random.default_rng(7)
    cfg, sets, ids, x, score = _separated(spark, make_cfg, rng, 4, 150)
    new = _increment(rng, x, _data(4, 20, 3, (0.93, 0.97))[:10])
    new_ids = [f"n{i:04d}" for i in range(len(new))]
    _append(spark, cfg, new_ids, new, rng.uniform(0, 10, len(new)))
    real = dedup_state.replace_where

    def members_write_fails(spark_, cfg_, table, df, where):  # type: ignore[no-untyped-def]
        if table.logical == "dedup_members":
            raise RuntimeError("injected crash before the members write")
        return real(spark_, cfg_, table, df, where)

    monkeypatch.setattr(dedup_state, "replace_where", members_write_fails)
    with pytest.raises(RuntimeError, match="injected crash"):
        dedup.run(spark, cfg)
    monkeypatch.setattr(dedup_state, "replace_where", real)
    stored = set(_state(spark, cfg, "dedup_group_pairs", ["a"])["a"].dropna())
    assert stored & set(new_ids)  # the crashed run's pairs are in the state
    _remove(spark, cfg, new_ids)
    again = dedup.run(spark, cfg)
    assert again.extra["group_state"] == "incremental" and again.extra["coarse_groups_touched"]

    fresh = make_cfg(*sets, warehouse=tmp_path / "fresh")
    _append(spark, fresh, ids, x, score)
    _copy_table(cfg, fresh, "dedup_centroids")
    dedup.run(spark, fresh)
    pd.testing.assert_frame_equal(_dups(spark, cfg), _dups(spark, fresh))
    pairs = ["coarse", "a", "b", "cluster", "cluster_size"]
    got = _state(spark, cfg, "dedup_group_pairs", pairs)
    assert not set(new_ids) & (set(got["a"].dropna()) | set(got["b"].dropna()))
    pd.testing.assert_frame_equal(got, _state(spark, fresh, "dedup_group_pairs", pairs))


def test_a_changed_fine_parameter_rebuilds_the_group_state(spark, make_cfg) -> None:
    """The centroids stay, but state written under another basis is not reused: a changed
    block_size (float32 rounding of the similarity tiles) or fine_margin rebuilds every group;
    the same parameters again reuse it all."""
    cfg, sets, *_ = _separated(spark, make_cfg, np.random.default_rng(11), 5, 120)
    want = _dups(spark, cfg)
    wh, db = cfg.warehouse_path, cfg.database
    for change in ("dedup.block_size=7", "dedup.fine_margin=0.03"):
        changed = make_cfg(*sets, change, warehouse=wh, database=db)
        run = dedup.run(spark, changed)
        assert run.extra["centroids"] == "reused" and run.extra["group_state"] == "rebuilt"
        assert run.extra["coarse_groups_touched"] == run.extra["coarse_groups_total"] > 0
        pd.testing.assert_frame_equal(_dups(spark, changed), want)  # well separated: the same
        again = dedup.run(spark, changed)
        assert again.extra["group_state"] == "incremental"
        assert again.extra["coarse_groups_touched"] == 0


def test_a_changed_seed_or_coarse_k_refits(spark, make_cfg) -> None:
    """The stored set is reused only under the same seed, coarse_k and dimension; a refit
    replaces it and invalidates the group state (the job's own runs are in the tests above)."""
    cfg = make_cfg(*SETS, "dedup.coarse_k=2")
    register_tables(spark, cfg)
    fits: list[int] = []

    def centroids(cfg, n: int = 60, dim: int = DIM) -> tuple[Summary, SemanticState]:
        def fit() -> tuple[np.ndarray, str, int, int]:
            fits.append(1)
            k = cfg.dedup.coarse_k
            return _unit(np.random.default_rng(len(fits)).normal(size=(k, dim))), "faiss", k, n

        summary = Summary(job="t", run_id=f"run{len(fits)}")
        state = SemanticState(spark, cfg, "test", summary.run_id)
        state.centroids(n, dim, fit, summary)
        return summary, state

    first, _ = centroids(cfg)
    assert first.extra["centroids"] == "refitted: no stored centroids for this model"
    same, state = centroids(cfg)
    assert same.extra["centroids"] == "reused" and not state.reset and len(fits) == 1
    wh, db = cfg.warehouse_path, cfg.database
    seed, state = centroids(make_cfg(*SETS, "dedup.coarse_k=2", "dedup.seed=7",
                                     warehouse=wh, database=db))  # fmt: skip
    assert seed.extra["centroids"] == "refitted: dedup.seed changed (0 -> 7)" and state.reset
    k3, _ = centroids(make_cfg(*SETS, "dedup.coarse_k=3", "dedup.seed=7",
                               warehouse=wh, database=db))  # fmt: skip
    assert k3.extra["centroids"] == "refitted: dedup.coarse_k changed (2 -> 3)"
    cent = read_table(spark, cfg, "dedup_centroids").toPandas()
    assert len(cent) == 3 and set(cent["k"]) == {3} and set(cent["seed"]) == {7}
    assert sorted(cent["centroid_id"]) == [0, 1, 2] and set(cent["dim"]) == {DIM}
    assert set(cent["model"]) == {"test"} and len(fits) == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"seed": 1}, "dedup.seed changed (0 -> 1)"),
        ({"k": 5}, "dedup.coarse_k changed (4 -> 5)"),
        ({"dim": 8}, "embedding dimension changed (16 -> 8)"),
        ({"backend": "sklearn"}, "dedup.backend changed (faiss -> sklearn)"),
        ({"full": True}, "--full asked for a refit"),
        ({"auto_k": True, "k": 7}, None),  # automatic k: reused within 2x
        ({"auto_k": True, "k": 9}, "automatic coarse k moved from 4 to 9 (more than 2x)"),
    ],
)
def test_refit_reason(change: dict, reason: str | None) -> None:
    stored = StoredCentroids(seed=0, k=4, dim=16, backend="faiss", rows=4, fit_id="r")
    args = {"seed": 0, "k": 4, "auto_k": False, "dim": 16, "backend": "auto", **change}
    assert refit_reason(stored, **args) == reason
    assert refit_reason(None, **args) in ("no stored centroids for this model", reason)


def test_touched_groups() -> None:
    assert touched_groups([3, 1, 3], [0, 1, 2, 3], [], reset=False) == [1, 3]
    assert touched_groups([], [0, 2], [5], reset=True) == [0, 2, 5]
