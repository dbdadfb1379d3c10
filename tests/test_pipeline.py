"""`curator run`: every stage in order on tiny sample shards with a tiny random model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from spark_jobs import cli, job_file, pipeline, progress
from tests.tiny import TINY as BASE_TINY

ROOT = Path(__file__).resolve().parents[1]
TINY = (*BASE_TINY, "filter.predicates=['width >= 64']")


def test_job_file_runs_every_stage_in_order(spark, make_cfg: Callable, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The scheduled job's task graph run in-process (the `--job` dry run), tiny model."""
    from curator_udfs.sample_shards import write_sample_shards

    shards, out = tmp_path / "shards", tmp_path / "curated"
    write_sample_shards(shards, shards=2, per_shard=12, seed=1)
    base = make_cfg(*TINY)  # a fresh database and the local master, as every Spark test
    sets = [f"database={base.database}", "spark.conf={spark.master: 'local[2]'}", *TINY]
    job = ROOT / "conf/jobs/curation.json"
    steps = job_file.job_steps(job, pipeline.STAGES, sets, str(base.warehouse_path), app=cli.app)
    assert [s.stage for s in steps] == list(pipeline.STAGES)
    steps[0].kwargs["inputs"] = [str(shards)]  # the laptop paths instead of the cluster's
    steps[-1].kwargs["output"] = str(out)
    result = pipeline.run_steps(spark, steps, progress=progress.Progress(len(steps), rich=False))

    assert [s.job for s in result.summaries] == list(pipeline.STAGES)
    by = {s.job: s for s in result.summaries}
    assert by["ingest"].rows_written == 24 and by["ingest"].balanced
    assert by["embed"].rows_in == 24 and by["embed"].rows_written == 24
    assert by["filter"].rows_in == 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == by["filter"].rows_written == by["export"].rows_written
    assert 0 < manifest["samples"] <= 24
    doc = json.loads(json.dumps(result.to_dict(), default=str))
    assert [d["job"] for d in doc] == list(pipeline.STAGES)

    # incremental: a second pass over the same tables ingests and embeds nothing new
    again = pipeline.run(spark, steps[0].cfg, stages=["ingest", "embed"], inputs=[str(shards)])
    assert [s.rows_written for s in again.summaries] == [0, 0]


def test_progress_text_format() -> None:
    snap = progress.ProgressSnapshot(
        20.0, tasks_done=5, tasks_total=20, rows_total=1000, unit="images"
    )
    assert progress.progress_text(snap) == (
        "250/1,000 images (25%), 12.5 images/s, ETA 1m00s, Spark tasks 5/20, 20s elapsed"
    )
    unknown = progress.ProgressSnapshot(4.0, tasks_done=0, tasks_total=0)
    assert progress.progress_text(unknown) == "planning, 4s elapsed"
    assert progress.format_duration(3725) == "1h02m"


def test_progress_lines_without_a_terminal(
    spark, make_cfg: Callable, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Not a TTY: a log line every `interval` seconds on stderr, from a real (short) run."""
    import re

    from curator_udfs.sample_shards import write_sample_shards

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=1, per_shard=16, seed=2)
    cfg = make_cfg(*TINY)
    shown = progress.Progress(2, rich=False, spark=spark, interval=0.5)
    result = pipeline.run(
        spark, cfg, stages=["ingest", "embed"], inputs=[str(shards)], progress=shown
    )
    assert [s.rows_written for s in result.summaries] == [16, 16]

    stamp = r"^\d\d:\d\d:\d\d curator run: "
    lines = capsys.readouterr().err.splitlines()
    ours = [ln for ln in lines if re.match(stamp, ln)]
    assert re.match(stamp + r"stage 1/2 ingest: started \(1 shards to do\)$", ours[0])
    start = ours.index(next(ln for ln in ours if "stage 2/2 embed: started" in ln))
    assert ours[start].endswith("stage 2/2 embed: started (16 images to do)")
    end = next(i for i, ln in enumerate(ours) if "stage 2/2 embed: done in" in ln)
    assert re.search(
        r"done in [\d.]+s, 16 images in, 16 written, 0 quarantined, [\d.,]+ images/s$", ours[end]
    )
    live = ours[start + 1 : end]
    pattern = (
        stamp + r"stage 2/2 embed: (\d+/16 images \(\d+%\)|16 images to do)"
        r"(, [\d.,]+ (images|tasks)/s, ETA \S+)?, (Spark tasks \d+/\d+|planning), \S+ elapsed$"
    )
    assert live and all(re.match(pattern, ln) for ln in live), "\n".join(live)
    # some tasks were done before the end: a rate and an ETA were shown
    assert any("images/s, ETA" in ln for ln in live), "\n".join(live)


def test_no_classifier_heads_skips_classify_and_the_pipeline_goes_on(
    spark, make_cfg: Callable, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """`--set 'classifiers=[]'`: embed writes embeddings only, classify says it skipped (not a
    failure), dedup, filter and export still run; planned like `curator run` (preflight too)."""
    from curator_udfs.sample_shards import write_sample_shards

    shards, out = tmp_path / "shards", tmp_path / "curated"
    write_sample_shards(shards, shards=1, per_shard=12, seed=3)
    base = make_cfg(*TINY)
    sets = [f"database={base.database}", "spark.conf={spark.master: 'local[2]'}", *TINY]
    steps = pipeline.plan(
        None,
        [*sets, "classifiers=[]"],
        str(base.warehouse_path),
        inputs=[str(shards)],
        output=str(out),
    )
    assert [s.stage for s in steps] == list(pipeline.STAGES)
    assert steps[0].cfg.classifiers == []
    result = pipeline.run_steps(spark, steps, progress=progress.Progress(len(steps), rich=False))

    assert [s.job for s in result.summaries] == list(pipeline.STAGES)
    by = {s.job: s for s in result.summaries}
    assert by["embed"].rows_in == 12 and by["embed"].rows_written == 12
    assert by["embed"].extra["heads"] == ""
    classify = by["classify"]
    assert classify.skip_reason == "no classifier heads configured"
    assert classify.extra["skipped"] == "no classifier heads configured"
    assert classify.rows_in == classify.rows_written == 0 and classify.balanced
    assert classify.tables["scores"] == 12
    assert by["dedup"].rows_in == 12
    assert by["filter"].rows_in == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert 0 < manifest["samples"] == by["filter"].rows_written == by["export"].rows_written
    doc = json.loads(json.dumps(result.to_dict(), default=str))
    assert doc[2]["extra"]["skipped"] == "no classifier heads configured"

    err = capsys.readouterr().err
    assert "stage 3/6 classify: done in " in err
    assert "; skipped: no classifier heads configured" in err
    assert "FAILED" not in err

    # the scores rows carry embeddings and no head score (a head column, if any, is NULL)
    from spark_jobs.tables import read_table

    scores = read_table(spark, steps[0].cfg, "scores")
    heads = [c for c in ("aesthetic_score", "nsfw_score") if c in scores.columns]
    nulls = " AND ".join(["embedding IS NOT NULL", *(f"{c} IS NULL" for c in heads)])
    assert scores.count() == scores.where(nulls).count() == 12


def test_stage_options_are_keywords_of_their_run() -> None:
    """Each Stage declares only options its run() takes, and STAGES are its names in order."""
    import inspect

    assert pipeline.STAGES == tuple(s.name for s in pipeline.PIPELINE)
    assert pipeline.STAGES == ("ingest", "embed", "classify", "dedup", "filter", "export")
    for stage in pipeline.PIPELINE:
        params = inspect.signature(stage.run).parameters
        for option in stage.options:
            assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, (stage.name, option)


def test_stage_lookup_and_preflights(tmp_path: Path) -> None:
    """What `curator <stage>` uses: the Stage by name, its preflight resolving the options."""
    import pytest

    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs.config import ConfigError, load_config

    assert [pipeline.stage(n) for n in pipeline.STAGES] == list(pipeline.PIPELINE)
    with pytest.raises(ConfigError, match="unknown stage 'report'"):
        pipeline.stage("report")
    write_sample_shards(tmp_path / "s", shards=1, per_shard=2, seed=5)
    cfg = load_config(sets=list(TINY), warehouse=str(tmp_path / "wh"))
    ingest = pipeline.stage("ingest")
    assert ingest.preflight is not None
    (only,) = ingest.preflight(cfg, {"inputs": [str(tmp_path / "s")]})["files"]
    assert only.uri.endswith("00000.tar")
    assert pipeline.stage("dedup").preflight is None
    check_filter = pipeline.stage("filter").preflight
    assert check_filter is not None and not cfg.spark.with_rapids_jar
    assert check_filter(cfg, {"explain": False}) == {"explain": False}
    assert not cfg.spark.with_rapids_jar
    check_filter(cfg, {"explain": True})
    assert cfg.spark.with_rapids_jar  # the RAPIDS report needs the jar, never the plugin


def test_plan_checks_before_spark(tmp_path: Path) -> None:
    """`plan`: options go to the stages that take them, ingest lists its shards, and bad
    usage or configuration is a ConfigError (exit 2), all without a SparkSession."""
    import pytest

    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs.config import ConfigError

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=2, per_shard=2, seed=4)
    wh = str(tmp_path / "wh")
    steps = pipeline.plan(None, list(TINY), wh, inputs=[str(shards)], output=str(tmp_path / "o"))
    by = {s.stage: s for s in steps}
    assert [s.stage for s in steps] == list(pipeline.STAGES)
    assert sorted(f.uri.rsplit("/", 1)[-1] for f in by["ingest"].kwargs["files"]) == [
        "00000.tar",
        "00001.tar",
    ]
    assert "inputs" not in by["ingest"].kwargs
    assert by["export"].kwargs == {"output": str(tmp_path / "o")}
    assert all(not by[s].kwargs for s in ("embed", "classify", "dedup", "filter"))

    job = ROOT / "conf/jobs/curation.json"  # a dry run of the scheduled job: laptop paths win
    from spark_jobs.cli import app

    tasks = pipeline.plan(
        None, [], wh, inputs=[str(shards)], output="o", stages="ingest,export", job=job, app=app
    )
    assert [(s.stage, s.label) for s in tasks] == [
        ("ingest", "ingest (ingest)"),
        ("export", "export (export)"),
    ]
    assert len(tasks[0].kwargs["files"]) == 2 and tasks[1].kwargs["output"] == "o"
    assert {str(s.cfg.warehouse_path) for s in tasks} == {str(Path(wh).resolve())}

    part = pipeline.plan(None, list(TINY), wh, from_stage="dedup", output="x")
    assert [s.stage for s in part] == ["dedup", "filter", "export"]
    assert pipeline.plan(None, [*TINY, "classifiers=[]"], wh, stages="embed,classify")

    bad = {
        "unknown stage": {"stages": "embed,nope"},
        "missing shards": {"inputs": [str(tmp_path / "none")], "stages": "ingest"},
        "--job with --config": {"job": tmp_path / "job.json", "config": tmp_path / "c.yaml"},
        "no job file": {"job": tmp_path / "job.json"},
        "unsupported output": {"output": "gs://bucket/out", "stages": "export"},
        "output without a bucket": {"output": "s3://", "stages": "export"},
    }
    for what, kw in bad.items():
        config = kw.pop("config", None)
        try:
            pipeline.plan(config, list(TINY), wh, app=app, **kw)  # type: ignore[arg-type]
        except ConfigError:
            continue
        raise AssertionError(f"{what}: no ConfigError")
    with pytest.raises(ConfigError, match="filter.predicates|predicate"):
        pipeline.plan(None, [*TINY, "filter.predicates=['DROP TABLE x']"], wh, stages="filter")
