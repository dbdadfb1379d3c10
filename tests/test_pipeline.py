"""`curator run`: every stage in order on tiny sample shards with a tiny random model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from spark_jobs import pipeline
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
    steps = pipeline.job_steps(
        ROOT / "conf/jobs/curation.json", sets, warehouse=str(base.warehouse_path)
    )
    assert [s.stage for s in steps] == list(pipeline.STAGES)
    steps[0].kwargs["inputs"] = [str(shards)]  # the laptop paths instead of the cluster's
    steps[-1].kwargs["output"] = str(out)
    result = pipeline.run_steps(spark, steps, progress=pipeline.Progress(len(steps), rich=False))

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
    snap = pipeline.ProgressSnapshot(
        20.0, tasks_done=5, tasks_total=20, rows_total=1000, unit="images"
    )
    assert pipeline.progress_text(snap) == (
        "250/1,000 images (25%), 12.5 images/s, ETA 1m00s, Spark tasks 5/20, 20s elapsed"
    )
    unknown = pipeline.ProgressSnapshot(4.0, tasks_done=0, tasks_total=0)
    assert pipeline.progress_text(unknown) == "planning, 4s elapsed"
    assert pipeline.format_duration(3725) == "1h02m"


def test_progress_lines_without_a_terminal(
    spark, make_cfg: Callable, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Not a TTY: a log line every `interval` seconds on stderr, from a real (short) run."""
    import re

    from curator_udfs.sample_shards import write_sample_shards

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=1, per_shard=16, seed=2)
    cfg = make_cfg(*TINY)
    progress = pipeline.Progress(2, rich=False, spark=spark, interval=0.5)
    result = pipeline.run(
        spark, cfg, stages=["ingest", "embed"], inputs=[str(shards)], progress=progress
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
