"""spark_jobs.progress without Spark: snapshots, text, task counts, stage lines, the run table."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import pytest
from rich.console import Console

from spark_jobs.progress import (
    PipelineResult,
    Progress,
    ProgressSnapshot,
    end_line,
    format_duration,
    progress_text,
    stage_tasks,
)
from spark_jobs.summary import Summary


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(42.4) == "42s"
    assert format_duration(59.6) == "1m00s"
    assert format_duration(192) == "3m12s"
    assert format_duration(3600) == "1h00m"
    assert format_duration(3725) == "1h02m"


def test_snapshot_estimates() -> None:
    snap = ProgressSnapshot(10.0, tasks_done=3, tasks_total=4, rows_total=10)
    assert snap.fraction == 0.75
    assert snap.rows_done == 8  # round(7.5), never above rows_total
    assert snap.rate == 0.8
    assert snap.eta == pytest.approx(2.5)
    # tasks only: the rate and ETA are in tasks
    tasks = ProgressSnapshot(10.0, tasks_done=5, tasks_total=20)
    assert tasks.rows_done is None and tasks.rate == 0.5 and tasks.eta == 30.0
    # nothing done yet, or nothing known: no rate, no ETA
    assert ProgressSnapshot(10.0, tasks_done=0, tasks_total=8).rate is None
    assert ProgressSnapshot(0.0, tasks_done=2, tasks_total=8).eta is None
    assert ProgressSnapshot(5.0).fraction is None


def test_progress_text_variants() -> None:
    assert progress_text(ProgressSnapshot(10.0, tasks_done=5, tasks_total=20)) == (
        "0.5 tasks/s, ETA 30s, Spark tasks 5/20, 10s elapsed"
    )
    assert progress_text(ProgressSnapshot(3.0, rows_total=1000, unit="shards")) == (
        "1,000 shards to do, planning, 3s elapsed"
    )
    done = ProgressSnapshot(8.0, tasks_done=4, tasks_total=4, rows_total=0, unit="images")
    assert progress_text(done).startswith("0/0 images (100%), ")


@dataclass
class _Job:
    status: str
    stageIds: list[int]  # noqa: N815 - the attribute name of pyspark's SparkJobInfo


@dataclass
class _Stage:
    numTasks: int  # noqa: N815 - pyspark's SparkStageInfo
    numCompletedTasks: int  # noqa: N815


@dataclass
class _Tracker:
    """The three calls of pyspark's StatusTracker that stage_tasks makes."""

    groups: dict[str, list[int]]
    jobs: dict[int, _Job]
    stages: dict[int, _Stage] = field(default_factory=dict)

    def getJobIdsForGroup(self, group: str) -> list[int]:  # noqa: N802
        return self.groups.get(group, [])

    def getJobInfo(self, job_id: int) -> _Job | None:  # noqa: N802
        return self.jobs.get(job_id)

    def getStageInfo(self, stage_id: int) -> _Stage | None:  # noqa: N802
        return self.stages.get(stage_id)


def test_stage_tasks_counts_finished_jobs_by_completed_tasks() -> None:
    tracker = _Tracker(
        groups={"g": [1, 2, 3]},
        jobs={1: _Job("SUCCEEDED", [10, 11]), 2: _Job("RUNNING", [20, 21])},  # job 3: gone
        stages={10: _Stage(4, 4), 11: _Stage(8, 0), 20: _Stage(6, 2)},  # 11: skipped, 21: unknown
    )
    assert stage_tasks(tracker, "g") == (6, 10)
    assert stage_tasks(tracker, "other") == (0, 0)


def _summary(job: str, **kw: object) -> Summary:
    s = Summary(job=job, run_id=f"{job}-1", unit="images", **kw)  # type: ignore[arg-type]
    s.seconds = 2.0
    return s


def test_end_line_says_why_a_stage_skipped() -> None:
    ran = _summary("embed", rows_in=16, rows_written=16)
    assert end_line(2, 6, "embed", ran) == (
        "stage 2/6 embed: done in 2.0s, 16 images in, 16 written, 0 quarantined, 8.0 images/s"
    )
    skipped = _summary("classify")
    skipped.skip("no classifier heads configured")
    assert skipped.skip_reason == "no classifier heads configured"
    assert end_line(3, 6, "classify", skipped).endswith(
        ", 0 quarantined, 0.0 images/s; skipped: no classifier heads configured"
    )


def test_plain_lines_without_spark(capsys: pytest.CaptureFixture[str]) -> None:
    shown = Progress(2, rich=False)
    shown.start(1, "ingest", 3, "shards")
    shown.end(1, "ingest", _summary("ingest", rows_in=4, rows_written=4))
    shown.start(2, "embed")
    shown.end(2, "embed", None, error="RuntimeError: boom")
    lines = capsys.readouterr().err.splitlines()
    stamp = r"^\d\d:\d\d:\d\d curator run: "
    assert len(lines) == 4 and all(re.match(stamp, ln) for ln in lines), lines
    assert lines[0].endswith("stage 1/2 ingest: started (3 shards to do)")
    assert lines[1].endswith("stage 1/2 ingest: done in 2.0s, 4 images in, 4 written, "
                             "0 quarantined, 2.0 images/s")  # fmt: skip
    assert lines[2].endswith("stage 2/2 embed: started")
    assert lines[3].endswith("stage 2/2 embed: FAILED: RuntimeError: boom")


def test_pipeline_result_table_and_json() -> None:
    skipped = _summary("classify")
    skipped.skip("no classifier heads configured")
    result = PipelineResult([_summary("embed", rows_in=16, rows_written=16), skipped])
    buf = io.StringIO()
    result.render(Console(file=buf, width=200, force_terminal=False))
    text = buf.getvalue()
    assert "curator run" in text and "embed" in text and "total" in text
    assert "classify (skipped: no classifier heads configured)" in text
    doc = result.to_dict()
    assert [d["job"] for d in doc] == ["embed", "classify"]
    assert doc[1]["extra"]["skipped"] == "no classifier heads configured"
    assert doc[1]["skipped"] == 0  # the row count keeps its meaning
