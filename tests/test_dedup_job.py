"""The dedup job on real Spark and Delta: exact, perceptual and semantic, reruns, increments.

One set of sample shards is ingested once per module (80 images with planted exact and near
duplicates) and given a `scores` table with planted near-duplicate embeddings; tests copy those
Delta tables into their own warehouse (Delta tables are relocatable) instead of re-ingesting.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.synthetic import mixture_embeddings
from curator_udfs.ids import normalize_shard_uri, sample_id
from curator_udfs.resolve import resolve_duplicates
from curator_udfs.sample_shards import write_sample_shards
from curator_udfs.similarity import pairs_above
from spark_jobs import dedup, ingest
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, load_config
from spark_jobs.tables import read_table, table_path
from tests import badshards

SCORES_DDL = (
    "sample_id STRING, model STRING, embedding ARRAY<FLOAT>, embedding_dim INT, "
    "aesthetic_score DOUBLE, nsfw_score DOUBLE, error STRING, scored_at TIMESTAMP, run_id STRING"
)
DIM = 32
EPS = [0.01, 0.03]
MAX_CLUSTER = 20
BASE_SETS = [
    f"dedup.eps={json.dumps(EPS)}",
    "dedup.coarse_k=2",
    f"dedup.max_cluster_size={MAX_CLUSTER}",
    "dedup.second_margin=0.05",
    "dedup.write_pairs=true",
]


def _cfg(warehouse: Path, database: str, *sets: str) -> Config:
    return load_config(
        sets=[f"database={database}", "spark.conf={spark.master: 'local[2]'}", *BASE_SETS, *sets],
        warehouse=str(warehouse),
    )


def _clone(spark, src: Config, dest: Path, *sets: str) -> Config:
    """A new warehouse holding copies of `src`'s Delta tables."""
    cfg = _cfg(dest, f"t_{uuid.uuid4().hex[:8]}", *sets)
    src_db = src.warehouse_path / f"{src.database}.db"
    dest_db = cfg.warehouse_path / f"{cfg.database}.db"
    for table in src_db.iterdir():
        if (table / "_delta_log").is_dir():
            shutil.copytree(table, dest_db / table.name)
    register_tables(spark, cfg)
    return cfg


def _write_scores(spark, cfg: Config, rows: list[tuple], mode: str = "append") -> None:
    spark.createDataFrame(rows, SCORES_DDL).write.format("delta").mode(mode).save(
        table_path(cfg, "scores")
    )


def _score_row(sid: str, emb: np.ndarray, aesthetic: float) -> tuple:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    return (
        sid,
        "test",
        [float(v) for v in emb],
        DIM,
        float(aesthetic),
        0.1,
        None,
        at,
        "embed-test",
    )


@pytest.fixture(scope="module")
def base(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ingested sample shards + a scores table (model "test") with planted near-duplicates."""
    root = tmp_path_factory.mktemp("dedup")
    report = write_sample_shards(root / "shards", shards=2, per_shard=40, seed=3)
    cfg = _cfg(root / "wh", "dedup_base")
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(root / "shards")])
    images = read_table(spark, cfg, "images").drop("image").toPandas()
    images = images.sort_values("sample_id").reset_index(drop=True)
    ids = images["sample_id"].to_numpy()
    x, planted = mixture_embeddings(
        len(ids), DIM, clusters=3, seed=5, planted_fraction=0.15, sims=(0.975, 0.999)
    )
    aesthetic = np.random.default_rng(11).uniform(0, 10, len(ids)).round(3)
    _write_scores(spark, cfg, [_score_row(s, x[i], aesthetic[i]) for i, s in enumerate(ids)])
    by_key = dict(zip(images["key"], images["sample_id"], strict=True))
    planted_json = json.loads(report.planted_path.read_text())
    images["aesthetic_score"] = aesthetic
    return {
        "cfg": cfg,
        "root": root,
        "images": images,
        "x": x,
        "ids": ids,
        "planted": planted,
        "by_key": by_key,
        "exact": [tuple(by_key[k] for k in pair) for pair in planted_json["exact"]],
        "near": [(by_key[a], by_key[b], kind) for a, b, kind in planted_json["near"]],
    }


def _rows(spark, cfg: Config, table: str = "duplicates") -> pd.DataFrame:
    df = read_table(spark, cfg, table).drop("run_id").toPandas()
    keys = [c for c in ("method", "eps", "sample_id", "a", "b") if c in df.columns]
    return df.sort_values(keys, na_position="first").reset_index(drop=True)


@pytest.fixture(scope="module")
def first(spark, base: dict) -> dict:
    """One dedup run with all three methods, two eps values, splitting and pairs written."""
    cfg = _clone(spark, base["cfg"], base["root"] / "first")
    summary = dedup.run(spark, cfg)
    return {"cfg": cfg, "summary": summary, "dups": _rows(spark, cfg)}


def _pairs(df: pd.DataFrame, method: str) -> set[tuple[str, str]]:
    sel = df[df["method"] == method]
    return set(zip(sel["a"], sel["b"], strict=True))


def test_all_methods_in_one_run(spark, base: dict, first: dict) -> None:
    cfg, summary, dups = first["cfg"], first["summary"], first["dups"]
    images = base["images"]
    pairs = _rows(spark, cfg, "duplicate_pairs")

    # exact: every sha256 group keeps its best sample by aesthetic score (ties by sample_id)
    exact = dups[dups["method"] == "exact"]
    expected = {}
    for _, group in images.groupby("image_sha256"):
        if len(group) > 1:
            best = group.sort_values(["aesthetic_score", "sample_id"], ascending=[False, True])
            for sid in best["sample_id"].iloc[1:]:
                expected[sid] = best["sample_id"].iloc[0]
    assert base["exact"] and all(b in expected or a in expected for a, b in base["exact"])
    assert dict(zip(exact["sample_id"], exact["duplicate_of"], strict=True)) == expected
    assert (exact["similarity"] == 1.0).all() and exact["eps"].isna().all()

    # perceptual: re-encoded and resized copies found; nothing outside the planted groups
    found = _pairs(pairs, "perceptual")
    near = [(a, b) for a, b, kind in base["near"] if kind in ("reencode", "resize")]
    assert near and all((min(a, b), max(a, b)) in found for a, b in near)
    group_of = {s: s for s in base["ids"]}

    def root(s: str) -> str:
        while group_of[s] != s:
            s = group_of[s]
        return s

    for a, b in [*base["exact"], *[(a, b) for a, b, _ in base["near"]]]:
        group_of[root(a)] = root(b)
    assert all(root(a) == root(b) for a, b in found), "a distinct image was called a duplicate"
    perceptual = dups[dups["method"] == "perceptual"]
    assert len(perceptual) >= len(near) and perceptual["eps"].isna().all()
    assert summary.extra["phashes_computed"] == len(images) and summary.extra["phash_errors"] == 0

    # semantic: recall and precision against an exact all-pairs search, per eps
    x, ids = base["x"], base["ids"]
    sem = pairs[pairs["method"] == "semantic"]
    rank = images[["sample_id", "aesthetic_score"]]
    for eps in EPS:
        i, j, sim = pairs_above(ids, x, 1.0 - eps)
        truth = {(ids[p], ids[q]) for p, q in zip(i, j, strict=True)}
        got = _pairs(sem[sem["similarity"].astype(np.float32) >= np.float32(1 - eps)], "semantic")
        assert truth, f"no planted pairs at eps {eps}"
        recall = len(truth & got) / len(truth)
        precision = len(truth & got) / max(len(got), 1)
        assert recall >= 0.9 and precision == 1.0, (eps, recall, precision)
        rows = dups[(dups["method"] == "semantic") & np.isclose(dups["eps"].astype(float), eps)]
        assert summary.extra["removed"][f"semantic eps={eps:g}"] == len(rows)
        if recall == 1.0:  # then the rows are exactly the all-pairs resolution
            ref = pd.DataFrame({"a": ids[i], "b": ids[j], "similarity": sim})
            want = resolve_duplicates(ref, rank, order="aesthetic")
            assert list(rows["sample_id"]) == list(want["sample_id"])
            assert list(rows["duplicate_of"]) == list(want["duplicate_of"])
    # several eps in one pass, each queryable; a larger eps removes a superset
    by_eps = {e: set(dups.loc[np.isclose(dups["eps"].astype(float), e), "sample_id"]) for e in EPS}
    assert by_eps[EPS[0]] and by_eps[EPS[0]] <= by_eps[EPS[1]]
    q = spark.sql(
        f"SELECT eps, count(*) AS n FROM {cfg.database}.duplicates "
        "WHERE method = 'semantic' GROUP BY eps ORDER BY eps"
    ).collect()
    assert [(r.eps, r.n) for r in q] == [(e, len(by_eps[e])) for e in EPS]

    # fine clusters are split below the bound although each coarse group exceeds it
    assert summary.extra["coarse_k"] == 2 and len(images) / 2 > MAX_CLUSTER
    assert 0 < summary.extra["largest_fine_cluster"] <= MAX_CLUSTER
    assert summary.extra["fine_clusters"] >= len(images) // MAX_CLUSTER
    assert summary.extra["kmeans_backend"] in ("faiss", "cuml", "sklearn")
    assert summary.extra["model"] == "test"  # the only model in scores
    assert set(summary.extra["pairs_found"]) == {"exact", "perceptual", "semantic"}
    assert summary.rows_in == len(images) and summary.balanced


def test_rerun_through_cli_gives_identical_rows(spark, first: dict) -> None:
    from spark_jobs.cli import app

    cfg = first["cfg"]
    sets = [f"database={cfg.database}", *BASE_SETS]
    args = ["dedup", "--warehouse", str(cfg.warehouse_path), "--json"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["job"] == "dedup" and out["run_id"] != first["summary"].run_id
    assert out["extra"]["phashes_computed"] == 0  # hashes are kept between runs
    again = _rows(spark, cfg)
    pd.testing.assert_frame_equal(again, first["dups"])
    runs = read_table(spark, cfg, "duplicates").select("run_id").distinct().collect()
    assert [r.run_id for r in runs] == [out["run_id"]]


def test_keep_order_resolution_vs_aesthetic(spark, base: dict, first: dict) -> None:
    cfg = _clone(
        spark, base["cfg"], base["root"] / "resolution",
        "dedup.keep=resolution", "dedup.methods=[semantic]", "dedup.eps=[0.03]",
    )  # fmt: skip
    dedup.run(spark, cfg)
    res = _rows(spark, cfg)
    aes = first["dups"]
    aes = aes[(aes["method"] == "semantic") & np.isclose(aes["eps"].astype(float), 0.03)]
    info = base["images"].assign(pixels=lambda d: d["width"] * d["height"])
    info = info.set_index("sample_id")
    for rows, col in ((res, "pixels"), (aes, "aesthetic_score")):
        assert len(rows)
        for s, kept in zip(rows["sample_id"], rows["similar_to"], strict=True):
            better = info.at[kept, col] > info.at[s, col]
            assert better or (info.at[kept, col] == info.at[s, col] and kept < s), (col, s)
    # the same pairs resolved under each order, as curator_udfs.resolve would
    p = _rows(spark, cfg, "duplicate_pairs")
    p = p[p["similarity"].astype(np.float32) >= np.float32(0.97)]
    want = resolve_duplicates(p, info.reset_index(), order="resolution")
    assert list(res["sample_id"]) == list(want["sample_id"])
    assert list(res["duplicate_of"]) == list(want["duplicate_of"])
    assert set(zip(res["sample_id"], res["duplicate_of"], strict=True)) != set(
        zip(aes["sample_id"], aes["duplicate_of"], strict=True)
    )


def _reencode(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_new_images_are_checked_against_old_kept(spark, base: dict, first: dict) -> None:
    cfg = _clone(spark, first["cfg"], base["root"] / "incremental")  # includes phashes
    # two old samples with no similar partner at all (so they stay kept whatever the clusters)
    ids = base["ids"]
    i, j, _ = pairs_above(ids, base["x"], 1.0 - max(EPS))
    pairs = _rows(spark, first["cfg"], "duplicate_pairs")
    paired = {*ids[i], *ids[j], *pairs["a"], *pairs["b"]}
    kept = [s for s in ids if s not in paired][:2]
    old = (
        read_table(spark, cfg, "images")
        .where(f"sample_id IN ('{kept[0]}', '{kept[1]}')")
        .select("sample_id", "image", "image_ext")
        .collect()
    )
    old = {r.sample_id: r for r in old}
    a, b = old[kept[0]], old[kept[1]]
    shard = badshards.write_tar(
        base["root"] / "new" / "new-00000.tar",
        [
            ("n1." + a.image_ext, bytes(a.image)),  # exact copy of an old kept image
            ("n1.txt", b"copy"),
            ("n2.jpg", _reencode(bytes(b.image), 60)),  # re-encoded copy of another
            ("n2.txt", b"re-encoded"),
        ],
    )
    ingest.run(spark, cfg, inputs=[str(shard)])
    uri = normalize_shard_uri(str(shard))
    n1, n2 = sample_id(uri, "n1"), sample_id(uri, "n2")
    # embeddings: each new one very close to its source's, with a worse aesthetic score
    x = dict(zip(base["ids"], base["x"], strict=True))
    rng = np.random.default_rng(0)
    new = {}
    for sid, src in ((n1, a.sample_id), (n2, b.sample_id)):
        v = x[src] + rng.normal(0, 0.01, DIM).astype(np.float32)
        new[sid] = v / np.linalg.norm(v)
    _write_scores(spark, cfg, [_score_row(s, v, -1.0) for s, v in new.items()])

    summary = dedup.run(spark, cfg)
    assert summary.extra["phashes_computed"] == 2
    got = _rows(spark, cfg)
    of = defaultdict(dict)
    for r in got.itertuples():
        of[(r.method, None if pd.isna(r.eps) else round(r.eps, 6))][r.sample_id] = r.duplicate_of
    assert of[("exact", None)][n1] == a.sample_id
    assert of[("perceptual", None)][n1] == a.sample_id
    assert of[("perceptual", None)][n2] == b.sample_id
    for eps in EPS:
        assert of[("semantic", eps)][n1] == a.sample_id
        assert of[("semantic", eps)][n2] == b.sample_id

    # exact and perceptual rows of the old images are unchanged (semantic ones may move
    # between fine clusters: the coarse sample and centroids change with the data)
    def old(df: pd.DataFrame) -> pd.DataFrame:
        sel = df["method"].isin(["exact", "perceptual"]) & ~df["sample_id"].isin([n1, n2])
        return df[sel].reset_index(drop=True)

    pd.testing.assert_frame_equal(old(got), old(first["dups"]))


def test_dedup_recall_scores_the_planted_copies(spark, base: dict, first: dict) -> None:
    """`curator dedup-recall`: the duplicates table keyed back to the shards' keys, per method."""
    from spark_jobs.planted import render, score_against

    cfg = first["cfg"]
    planted_file = base["root"] / "shards" / "_planted.json"
    scores = {(s["method"], s["eps"]): s for s in score_against(spark, cfg, planted_file)}
    assert set(scores) == {("exact", None), ("perceptual", None), *(("semantic", e) for e in EPS)}
    exact = scores["exact", None]
    assert exact["true_pairs"] == len(base["exact"]) and exact["recall"] == 1.0
    assert exact["precision"] == 1.0
    perceptual = scores["perceptual", None]  # re-encodes and resizes found, nothing false
    assert perceptual["precision"] == 1.0 and perceptual["recalled_pairs"] >= len(
        [k for *_, k in base["near"] if k in ("reencode", "resize")])  # fmt: skip
    # the scores table's embeddings are synthetic (not of these images): semantic groups are
    # not the planted images' copies, and the score says so rather than hiding it
    assert all(scores["semantic", e]["true_pairs"] == perceptual["true_pairs"] for e in EPS)
    table = render(list(scores.values()))
    assert table.splitlines()[0].split() == ["method", "eps", "planted", "found", "correct",
                                             "recall", "precision"]  # fmt: skip
    assert "exact" in table and "1.000" in table
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    common = ["--warehouse", str(cfg.warehouse_path), *[a for s in (f"database={cfg.database}",
              *BASE_SETS) for a in ("--set", s)]]  # fmt: skip
    res = CliRunner().invoke(app, ["dedup-recall", str(planted_file), *common, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == list(scores.values())
    missing = CliRunner().invoke(app, ["dedup-recall", str(base["root"] / "nope.json"), *common])
    assert missing.exit_code == 2 and "sample-shards" in missing.output
