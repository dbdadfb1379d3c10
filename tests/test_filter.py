"""The filter job on real Spark and Delta: curated rows, per-predicate counts, pushdown, CLI."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import filter as filter_job
from spark_jobs import ingest
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError
from spark_jobs.dup_rule import DuplicateRule
from spark_jobs.tables import read_table, table_path
from spark_jobs.views import scored_model_id

SCORES_DDL = (
    "sample_id STRING, model STRING, embedding ARRAY<FLOAT>, embedding_dim INT, "
    "aesthetic_score DOUBLE, nsfw_score DOUBLE, error STRING, scored_at TIMESTAMP, run_id STRING"
)
DUPLICATES_DDL = (
    "sample_id STRING, duplicate_of STRING, similarity DOUBLE, method STRING, eps DOUBLE, "
    "cluster INT, run_id STRING"
)


def fake_scores(sample_id: str) -> tuple[float, float]:
    """Deterministic (aesthetic 0-10, nsfw 0-1) from the id, so tests know the answer."""
    return int(sample_id[:4], 16) % 1000 / 100.0, int(sample_id[4:8], 16) % 1000 / 1000.0


def ingest_and_score(spark, cfg: Config, shards_dir: Path, *, shards: int = 2, per_shard: int = 15,
                     seed: int = 7, model: str | None = None) -> dict:  # fmt: skip
    """Sample shards → images (the real ingest) → a `scores` table like the embed job's."""
    write_sample_shards(shards_dir, shards=shards, per_shard=per_shard, seed=seed)
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(shards_dir)])
    images = {r.sample_id: r for r in read_table(spark, cfg, "images").drop("image").collect()}
    _write_scores(spark, cfg, sorted(images), model)
    return images


def fake_images_and_scores(spark, cfg: Config, n: int, *, model: str | None = None,
                           other_model: bool = True) -> dict:  # fmt: skip
    """An `images` table written directly (no ingest: faster) plus `scores` like embed's
    (rows of `model`, default the configured one, and a few of "other-model")."""
    from spark_jobs.tables import IMAGES

    at = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        sid = hashlib.sha256(f"s{i}".encode()).hexdigest()[:24]
        w, h = 64 + (i * 37) % 300, 64 + (i * 53) % 300
        img = bytes([i % 256]) * 100
        caption = f"caption {i}" if i % 3 == 0 else f"a photo of sample {i}"
        lang = "de" if i % 5 == 0 else "en"  # caption signals as ingest writes them
        rows.append((sid, f"{i:09d}", "file:///x/00000.tar", img, "JPEG", "jpg", w, h, 100,
                     hashlib.sha256(img).hexdigest(), caption, json.dumps({"i": i}), [],
                     at, "ingest-test", lang, 0.9, len(caption.split()), len(caption),
                     i, None))  # fmt: skip
    spark.createDataFrame(rows, IMAGES.schema).write.format("delta").save(table_path(cfg, "images"))
    images = {r.sample_id: r for r in read_table(spark, cfg, "images").drop("image").collect()}
    _write_scores(spark, cfg, sorted(images), model, other_model=other_model)
    return images


def _write_scores(spark, cfg: Config, ids: list[str], model: str | None = None, *,
                  other_model: bool = True) -> None:  # fmt: skip
    at = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        (sid, model or scored_model_id(cfg), [0.5, 0.5, 0.5, 0.5], 4, *fake_scores(sid), None,
         at, "embed-test")
        for sid in ids
    ]  # fmt: skip
    if other_model:  # a second model's rows must not leak into `scored`
        rows += [(sid, "other-model", [1.0], 1, 9.9, 0.0, None, at, "x") for sid in ids[:3]]
    spark.createDataFrame(rows, SCORES_DDL).write.format("delta").save(table_path(cfg, "scores"))
    register_tables(spark, cfg)


def write_duplicates(spark, cfg: Config, rows: list[tuple]) -> None:
    spark.createDataFrame(rows, DUPLICATES_DDL).write.format("delta").mode("overwrite").save(
        table_path(cfg, "duplicates")
    )


PREDICATES = ["aesthetic_score >= 3", "nsfw_score < 0.8", "width / height BETWEEN 0.5 AND 2"]


def cfg_like(base: Config, *sets: str) -> Config:
    """A config on the same warehouse and database as `base`, plus `--set` overrides."""
    from spark_jobs.config import load_config

    return load_config(
        sets=[f"database={base.database}", "spark.conf={spark.master: 'local[2]'}", *sets],
        warehouse=str(base.warehouse_path),
    )


@pytest.fixture(scope="module")
def scored_wh(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict]:
    """One ingested and scored warehouse for this module (ingest is the slow part)."""
    from spark_jobs.config import load_config

    base = tmp_path_factory.mktemp("filter")
    cfg = load_config(sets=["database=filt", "spark.conf={spark.master: 'local[2]'}"],
                      warehouse=str(base / "warehouse"))  # fmt: skip
    images = fake_images_and_scores(spark, cfg, 30)
    return cfg, images


def test_filter_writes_curated_counts_and_reruns(spark, scored_wh) -> None:
    base, images = scored_wh
    cfg = cfg_like(base, f"filter.predicates={json.dumps(PREDICATES)}", "dedup.eps=[0.05, 0.1]")
    ids = sorted(images)
    a, n = {s: fake_scores(s)[0] for s in ids}, {s: fake_scores(s)[1] for s in ids}
    checks = [
        lambda s: a[s] >= 3,
        lambda s: n[s] < 0.8,
        lambda s: 0.5 <= images[s].width / images[s].height <= 2,
    ]
    passing = [s for s in ids if all(c(s) for c in checks)]
    assert 3 <= len(passing) < len(ids)
    # exact dup of passing[0]; semantic at eps 0.05 (first of dedup.eps) of passing[1];
    # semantic at eps 0.1 only (another threshold: must not count) of passing[2]
    write_duplicates(spark, cfg, [
        (passing[0], ids[0], 1.0, "exact", None, None, "d"),
        (passing[1], ids[0], 0.96, "semantic", 0.05, 3, "d"),
        (passing[2], ids[0], 0.91, "semantic", 0.1, 3, "d"),
    ])  # fmt: skip
    summary = filter_job.run(spark, cfg)
    expected = set(passing) - {passing[0], passing[1]}
    curated = read_table(spark, cfg, "curated")
    assert {r.sample_id for r in curated.select("sample_id").collect()} == expected
    assert "image" not in curated.columns and "embedding" not in curated.columns
    assert {"aesthetic_score", "nsfw_score", "width", "caption", "model"} <= set(curated.columns)
    assert {r.model for r in curated.select("model").collect()} == {scored_model_id(cfg)}
    assert summary.extra["model"] == scored_model_id(cfg) and "model_note" not in summary.extra
    removed = {p: sum(not c(s) for s in ids) for p, c in zip(PREDICATES, checks, strict=False)}
    assert summary.extra["removed_by_predicate"] == removed
    assert summary.extra["removed_as_duplicates"] == 2
    assert summary.rows_in == len(ids) and summary.rows_written == len(expected)
    assert summary.balanced
    this_run = read_table(spark, cfg, "filter_stats").where(f"run_id = '{summary.run_id}'")
    stats = {r.predicate: r for r in this_run.collect()}
    assert {p: stats[p].removed for p in PREDICATES} == removed
    dup_row = next(r for r in stats.values() if r.kind == "duplicates")
    assert dup_row.removed == 2 and "eps 0.05" in dup_row.predicate
    # the rule is recorded once, in the curated commit, as the dict lineage has always read
    last = spark.sql(f"DESCRIBE HISTORY delta.`{table_path(cfg, 'curated')}` LIMIT 1").first()
    meta = json.loads(last["userMetadata"])
    assert meta["dedup"] == {"exclude": True, "methods": ["exact", "perceptual", "semantic"],
                             "eps": 0.05}  # fmt: skip
    assert DuplicateRule.from_json(meta["dedup"]) == DuplicateRule.from_config(cfg)
    assert meta["model"] == scored_model_id(cfg)

    again = filter_job.run(spark, cfg)  # rerun: same rows, curated replaced (not appended)
    assert again.rows_written == len(expected) and curated.count() == len(expected)
    runs = read_table(spark, cfg, "filter_stats").select("run_id").distinct().collect()
    assert {summary.run_id, again.run_id} <= {r.run_id for r in runs}
    # the view and tables are visible by name, as `curator sql` / spark-sql see them
    n_scored = spark.sql(f"SELECT count(*) AS n FROM {cfg.database}.scored").first()["n"]
    assert n_scored == len(ids)
    assert f"{cfg.database}.scored" in (cfg.warehouse_path / "catalog.sql").read_text()


def test_pushdown_visible_in_plan_and_image_never_read(spark, scored_wh) -> None:
    cfg = cfg_like(scored_wh[0], f"filter.predicates={json.dumps(PREDICATES)}")
    write_duplicates(spark, cfg, [("x", "y", 1.0, "exact", None, None, "d")])
    _, _, curated, _ = filter_job.curated_frame(spark, cfg, filter_job.check_predicates(cfg))
    from spark_jobs.gpu_plan import physical_plan

    plan = physical_plan(curated, "formatted")
    scans = [s for s in plan.split("\n\n") if re.match(r"\s*\(\d+\) Scan parquet", s)]
    assert len(scans) >= 3, plan  # images, scores, duplicates
    scores_scan = next(s for s in scans if "aesthetic_score" in s and "ReadSchema" in s)
    pushed = next(line for line in scores_scan.splitlines() if "PushedFilters" in line)
    assert "GreaterThanOrEqual(aesthetic_score,3.0)" in pushed, pushed
    assert "LessThan(nsfw_score,0.8)" in pushed and "EqualTo(model," in pushed, pushed
    images_scan = next(s for s in scans if "image_sha256" in s)
    read_schema = next(line for line in images_scan.splitlines() if "ReadSchema" in line)
    assert "image:binary" not in read_schema and "width:int" in read_schema, read_schema
    assert "IsNotNull(width)" in images_scan, images_scan  # width/height pushed as not-null


def test_spark_analyzer_checks_what_sqlglot_cannot(spark, scored_wh) -> None:
    cfg = cfg_like(scored_wh[0], "classifiers=[{name: aesthetic}, {name: mood}]")
    scored = filter_job.scored_frame(spark, cfg)
    from curator_udfs.predicates import ValidPredicate

    with pytest.raises(ConfigError, match="mood_score.*Spark cannot resolve it"):
        filter_job.analyze_predicate(scored, ValidPredicate("mood_score > 1", ("mood_score",)))
    with pytest.raises(ConfigError, match="is not a boolean"):
        filter_job.analyze_predicate(
            scored, ValidPredicate("CASE WHEN width > 1 THEN 1 ELSE 0 END", ("width",))
        )
    with pytest.raises(ConfigError, match="non-deterministic"):  # if sqlglot were bypassed
        filter_job.analyze_predicate(scored, ValidPredicate("rand() < 2", ()))
    bad_model = cfg_like(cfg, "embed.model=some_other_model")
    with pytest.raises(ConfigError, match="no rows for model 'some_other_model'") as err:
        filter_job.run(spark, bad_model)
    # two models in scores, neither configured: no guess; the message names both and the key
    assert "`embed.model`" in str(err.value) and "'other-model'" in str(err.value)
    assert repr(scored_model_id(cfg)) in str(err.value)


def test_filter_falls_back_to_the_only_model_in_scores(spark, make_cfg) -> None:
    """The configured model has no scores but exactly one model does: that one is used, the
    summary says so, and lineage reads the same model's scores (spark_jobs.model_choice)."""
    from spark_jobs.lineage import fates_select, filter_record

    cfg = make_cfg(f"filter.predicates={json.dumps(PREDICATES[:1])}")
    images = fake_images_and_scores(spark, cfg, 12, model="only-model", other_model=False)
    assert scored_model_id(cfg) != "only-model"
    summary = filter_job.run(spark, cfg)
    expected = {s for s in images if fake_scores(s)[0] >= 3}
    assert 0 < len(expected) < len(images)
    curated = read_table(spark, cfg, "curated")
    assert {r.sample_id for r in curated.select("sample_id").collect()} == expected
    assert {r.model for r in curated.select("model").collect()} == {"only-model"}
    assert summary.extra["model"] == "only-model" and summary.rows_written == len(expected)
    note = summary.extra["model_note"]
    assert "'only-model'" in note and repr(scored_model_id(cfg)) in note
    assert filter_record(spark, cfg).model == "only-model"  # recorded with the rule
    select = fates_select(spark, cfg)
    assert select is not None
    fates = {r.sample_id: r.fate for r in spark.sql(select).collect()}
    assert {s for s, f in fates.items() if f == "curated"} == expected
    assert {f for s, f in fates.items() if s not in expected} == {"filtered"}


def test_cli_filter_explain_and_optimize(spark, scored_wh) -> None:
    """In-process CLI (the test session is reused): --explain prints plan + RAPIDS report."""
    from spark_jobs.cli import app

    cfg = scored_wh[0]
    common = ["--warehouse", str(cfg.warehouse_path), "--set", f"database={cfg.database}",
              "--set", "spark.conf={spark.master: 'local[2]'}"]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, ["filter", *common, "--set",
                              "filter.predicates=['aesthetic_score >= 2']", "--set",
                              "filter.presets=[datacomp_basic]", "--explain",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "datacomp_basic.english: caption_language = 'en'" in res.output  # the preset, named
    assert "datacomp_basic.max_aspect_ratio: aspect_ratio <= 3.0" in res.output
    assert "nothing written" in json.loads(res.output.strip().splitlines()[-1])["extra"]["explain"]
    assert "== Physical plan ==" in res.output and "PushedFilters" in res.output
    assert "*Exec <FilterExec> will run on GPU" in res.output, res.output
    bad = runner.invoke(app, ["filter", *common, "--set", "filter.predicates=['rand() < 0.5']"])
    assert bad.exit_code == 2 and "non-deterministic" in bad.output
    renamed = "classifiers=[{name: aesthetic, output_column: aesthetic_v2}]"
    none_yet = runner.invoke(app, ["optimize", *common, "--set", renamed])
    assert none_yet.exit_code == 2 and "no head column(s) ['aesthetic_v2']" in none_yet.output
    # a preset over a column the view lacks (no CLIP text tower here): a message, no crash;
    # --set changes the threshold the preset expands with
    clip = runner.invoke(app, ["filter", *common, "--set", "filter.presets=[clip_score_laion]",
                               "--set", "filter.clip_score_min=0.3"])  # fmt: skip
    assert clip.exit_code == 2, clip.output
    assert "clip_score_laion.clip_score (clip_score >= 0.3)" in clip.output
    assert "`filter.presets`" in clip.output
    opt = runner.invoke(app, ["optimize", *common, "--json"])
    assert opt.exit_code == 0, opt.output
    out = json.loads(opt.output.strip().splitlines()[-1])
    assert out["job"] == "optimize" and out["extra"]["zorder_by"] == "aesthetic_score, nsfw_score"
    history = spark.sql(f"DESCRIBE HISTORY delta.`{table_path(cfg, 'scores')}` LIMIT 1").first()
    assert history["operation"] == "OPTIMIZE"


def test_optimize_cluster_by_liquid_clustering(spark, make_cfg) -> None:
    """`optimize --cluster-by`: a liquid-clustered scores table that open readers still read;
    later runs cluster incrementally; Z-order and clustering never mix."""
    from deltalake import DeltaTable

    from spark_jobs.cli import app
    from spark_jobs.optimize import clustering_columns
    from tests.test_open_readers import delta_extension

    cfg = make_cfg()
    fake_images_and_scores(spark, cfg, 24)
    path = table_path(cfg, "scores")
    common = ["--warehouse", str(cfg.warehouse_path), "--set", f"database={cfg.database}",
              "--set", "spark.conf={spark.master: 'local[2]'}"]  # fmt: skip
    runner = CliRunner()

    def optimize(*flags: str) -> tuple[int, str]:
        res = runner.invoke(app, ["optimize", *common, *flags, "--json"])
        return res.exit_code, res.output

    code, out = optimize("--zorder", "aesthetic_score", "--cluster-by", "nsfw_score")
    assert code == 2 and "give one" in out
    code, out = optimize("--cluster-by", "aesthetic_score,no_such_column")
    assert code == 2 and "no column(s) ['no_such_column']" in out
    code, out = optimize("--cluster-by", "aesthetic_score, nsfw_score")
    assert code == 0, out
    first = json.loads(out.strip().splitlines()[-1])["extra"]
    assert first["cluster_by"] == "aesthetic_score, nsfw_score" and first["reclustered"]
    assert clustering_columns(spark, path) == ["aesthetic_score", "nsfw_score"]
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail["minReaderVersion"] == 1 and "clustering" in detail["tableFeatures"]
    n = read_table(spark, cfg, "scores").count()
    assert DeltaTable(path).to_pyarrow_table().num_rows == n  # readers stay at version 1
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute(f"LOAD '{delta_extension()}'")
    assert con.execute(f"SELECT count(*) FROM delta_scan('{path}')").fetchone() == (n,)

    code, out = optimize()  # no flag on a clustered table: incremental clustering
    assert code == 0, out
    again = json.loads(out.strip().splitlines()[-1])["extra"]
    assert again["cluster_by"] == "aesthetic_score, nsfw_score" and not again["reclustered"]
    assert "zorder_by" not in again
    code, out = optimize("--zorder", "aesthetic_score")
    assert code == 2 and "liquid-clustered by (aesthetic_score, nsfw_score)" in out
    code, out = optimize("--cluster-by", "nsfw_score")  # new keys: ALTER + OPTIMIZE FULL
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["extra"]["reclustered"]
    assert clustering_columns(spark, path) == ["nsfw_score"]
    assert read_table(spark, cfg, "scores").count() == n


def test_presets_named_in_stats_why_and_costs(spark, scored_wh) -> None:
    """datacomp_basic over the scored view (caption signals, aspect_ratio): the right rows are
    kept, and filter_stats, `why` and `costs` name each preset predicate."""
    from spark_jobs import costs, why

    base, images = scored_wh
    cfg = cfg_like(base, "filter.predicates=[]", "filter.presets=[datacomp_basic]",
                   "filter.min_side=100", "filter.exclude_duplicates=false")  # fmt: skip
    scored = {r.sample_id: r for r in filter_job.scored_frame(spark, cfg).collect()}
    for sid, r in scored.items():  # aspect_ratio = long side / short side
        img = images[sid]
        assert r.aspect_ratio == max(img.width, img.height) / min(img.width, img.height)
    checks = {
        "datacomp_basic.english": lambda r: r.caption_language == "en",
        "datacomp_basic.min_words": lambda r: r.caption_words >= 3,
        "datacomp_basic.min_chars": lambda r: r.caption_chars >= 6,
        "datacomp_basic.min_side": lambda r: min(r.width, r.height) >= 100,
        "datacomp_basic.max_aspect_ratio": lambda r: r.aspect_ratio <= 3.0,
    }
    expected = {s for s, r in scored.items() if all(c(r) for c in checks.values())}
    assert 0 < len(expected) < len(scored)
    summary = filter_job.run(spark, cfg)
    curated = {r.sample_id for r in read_table(spark, cfg, "curated").select("sample_id").collect()}
    assert curated == expected
    stats = read_table(spark, cfg, "filter_stats").where(f"run_id = '{summary.run_id}'").collect()
    by_name = {r.predicate.split(":", 1)[0]: r for r in stats if r.kind == "preset"}
    assert set(by_name) == set(checks)
    for name, check in checks.items():
        assert by_name[name].removed == sum(not check(r) for r in scored.values()), name
    assert by_name["datacomp_basic.min_side"].predicate == (
        "datacomp_basic.min_side: width >= 100 AND height >= 100"
    )
    # why: a sample the preset removed, each predicate under its preset name with its verdict
    loser = next(s for s in sorted(scored) if not checks["datacomp_basic.min_words"](scored[s]))
    story = why.explain(spark, cfg, loser)[0]
    assert story["fate"] == "filtered"
    verdicts = {p["predicate"].split(":", 1)[0]: p["verdict"] for p in story["predicates"]}
    assert set(verdicts) == set(checks) and verdicts["datacomp_basic.min_words"] == "fail"
    assert "datacomp_basic.min_words: caption_words >= 3" in story["reason"]
    assert "datacomp_basic.min_words: caption_words >= 3" in why.render(story)
    # costs: the recorded rule, by name; a what-if on a preset's predicate keeps the name
    out = costs.report(spark, cfg, ["caption_words >= 3 => caption_words >= 2"])
    names = [p["predicate"].split(":", 1)[0] for p in out["current"]["predicates"]]
    assert names == list(checks) and out["current"]["kept"] == len(expected)
    assert "datacomp_basic.min_words: caption_words >= 3" in costs.render(out)
    edited = out["what_if"]["predicates"]
    assert "caption_words >= 2" in edited and "datacomp_basic.english: caption_language = 'en'" \
        in edited  # fmt: skip
