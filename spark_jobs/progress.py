"""Progress of `curator run`: per stage, rows done/total, rate, ETA and Spark task counts,
and the one table of stage summaries at the end (`PipelineResult`).

Kept apart from the pipeline so the display (a rich bar on a terminal, timestamped lines on
stderr otherwise) can change without touching what runs. Live numbers come from Spark's status
tracker for the job group a stage's Spark jobs are tagged with; no accumulators.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spark_jobs.config import Config
from spark_jobs.summary import Summary


@dataclass
class ProgressSnapshot:
    """Where a stage is: Spark tasks of its jobs done/total, and the expected rows if known.

    Rows done are estimated without accumulators: expected rows × the fraction of the stage's
    Spark tasks completed so far (tasks of jobs not submitted yet are not known, so the estimate
    runs ahead when a stage submits several jobs).
    """

    elapsed: float
    tasks_done: int = 0
    tasks_total: int = 0
    rows_total: int | None = None
    unit: str = "rows"

    @property
    def fraction(self) -> float | None:
        return self.tasks_done / self.tasks_total if self.tasks_total else None

    @property
    def rows_done(self) -> int | None:
        if self.rows_total is None or self.fraction is None:
            return None
        return min(self.rows_total, round(self.rows_total * self.fraction))

    @property
    def rate(self) -> float | None:
        """Rows (else tasks) per second so far."""
        done = self.rows_done if self.rows_done is not None else self.tasks_done
        return done / self.elapsed if self.elapsed > 0 and done else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far, None until something is done."""
        if self.rate is None:
            return None
        if self.rows_done is not None and self.rows_total is not None:
            return (self.rows_total - self.rows_done) / self.rate
        return (self.tasks_total - self.tasks_done) / self.rate


def format_duration(seconds: float) -> str:
    """42s, 3m12s, 1h05m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(snap: ProgressSnapshot) -> str:
    """`1,234/10,000 images (12%), 45.6 images/s, ETA 3m12s, Spark tasks 5/40, 27s elapsed`."""
    parts = []
    if snap.rows_done is not None and snap.rows_total is not None:
        pct = 100.0 * snap.rows_done / snap.rows_total if snap.rows_total else 100.0
        parts.append(f"{snap.rows_done:,}/{snap.rows_total:,} {snap.unit} ({pct:.0f}%)")
    elif snap.rows_total is not None:
        parts.append(f"{snap.rows_total:,} {snap.unit} to do")
    rate = snap.rate
    if rate is not None:
        per = snap.unit if snap.rows_done is not None else "tasks"
        parts.append(f"{rate:,.1f} {per}/s")
        eta = snap.eta
        parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
    parts.append(
        f"Spark tasks {snap.tasks_done}/{snap.tasks_total}" if snap.tasks_total else "planning"
    )
    parts.append(f"{format_duration(snap.elapsed)} elapsed")
    return ", ".join(parts)


def stage_tasks(tracker: Any, group: str) -> tuple[int, int]:
    """(tasks done, tasks known) over the Spark jobs of job group `group` so far.

    Finished jobs count their completed tasks only (a skipped stage, e.g. a reused shuffle,
    never completes and would otherwise count forever).
    """
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        finished = str(job.status) in ("SUCCEEDED", "FAILED")
        for stage_id in job.stageIds:
            info = tracker.getStageInfo(stage_id)
            if info is None:
                continue
            done += info.numCompletedTasks
            total += info.numCompletedTasks if finished else info.numTasks
    return done, total


def expected_work(
    spark: Any, stage: str, cfg: Config, options: Mapping[str, Any]
) -> tuple[int | None, str]:
    """How many rows `stage` will go through, from a cheap count (None if not known).

    `options` are the keyword options the stage's run() gets (ingest's `files` or `inputs`).
    """
    from pyspark.sql import functions as F

    from spark_jobs import embed, ingest
    from spark_jobs.tables import is_delta, read_table, table_path
    from spark_jobs.views import scored_model_id

    try:
        if stage == "ingest":
            files = options.get("files") or ingest.list_inputs(cfg, options.get("inputs"))
            recorded = ingest.recorded_shards(spark, cfg)
            todo = ingest.pending_shards(files, recorded, retry_failed=cfg.ingest.retry_failed)
            return len(todo), "shards"
        if stage == "embed":
            if is_delta(table_path(cfg, "scores")):
                return embed.pending_images(spark, cfg, scored_model_id(cfg)).count(), "images"
            return read_table(spark, cfg, "images").count(), "images"
        if stage == "classify":
            scores = read_table(spark, cfg, "scores")
            return scores.where(F.col("model") == scored_model_id(cfg)).count(), "embeddings"
        if stage in ("dedup", "filter"):
            return read_table(spark, cfg, "images").count(), "images"
        if stage == "export":
            return read_table(spark, cfg, "curated").count(), "samples"
    except Exception:  # noqa: BLE001 - progress is best effort; the stage reports real errors
        return None, "rows"
    return None, "rows"


def end_line(i: int, total: int, stage: str, summary: Summary) -> str:
    """`stage 2/6 embed: done in 3.1s, 16 images in, 16 written, ...` (or why it was skipped)."""
    line = (
        f"stage {i}/{total} {stage}: done in {summary.seconds:.1f}s, "
        f"{summary.rows_in:,} {summary.unit} in, {summary.rows_written:,} written, "
        f"{summary.quarantined:,} quarantined, {summary.throughput:,.1f} {summary.unit}/s"
    )
    reason = summary.skip_reason
    return f"{line}; skipped: {reason}" if reason else line


class Progress:
    """Per-stage progress: rows done/total, rate, ETA and Spark task counts while a stage runs.

    On a terminal a rich progress bar; otherwise plain lines on stderr, one every `interval`
    seconds, plus a start and an end line per stage. Live progress needs `spark` (the status
    tracker); without it only the start/end lines are printed.
    """

    def __init__(
        self,
        total: int,
        *,
        rich: bool | None = None,
        spark: Any = None,
        interval: float = 10.0,
    ) -> None:
        self.total = total
        self.rich = sys.stdout.isatty() if rich is None else rich
        self.spark = spark
        self.interval = interval
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group: str | None = None
        if self.rich:
            from rich.console import Console

            self.console = Console(file=sys.stdout)

    def _log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} curator run: {text}", file=sys.stderr, flush=True)

    def start(self, i: int, stage: str, rows_total: int | None = None, unit: str = "rows") -> None:
        """A stage begins; its Spark jobs are tagged with a job group the tracker follows."""
        label = f"stage {i}/{self.total} {stage}"
        if not self.rich:
            todo = f" ({rows_total:,} {unit} to do)" if rows_total is not None else ""
            self._log(f"{label}: started{todo}")
        else:
            from rich.progress import BarColumn, SpinnerColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
                transient=True,
            )
            self._task = self._bar.add_task(label, total=None, detail="starting")
            self._bar.start()
        if self.spark is not None:
            sc = self.spark.sparkContext
            self._group = f"curator-run-{id(self)}-{i}"
            sc.setJobGroup(self._group, f"curator run: {label}", interruptOnCancel=False)
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._poll, args=(label, rows_total, unit), daemon=True
            )
            self._thread.start()

    def _poll(self, label: str, rows_total: int | None, unit: str) -> None:
        t0 = time.perf_counter()
        tracker = self.spark.sparkContext.statusTracker()
        last_line = t0
        while not self._stop.wait(0.5 if self.rich else min(self.interval, 0.5)):
            try:
                done, total = stage_tasks(tracker, self._group or "")
            except Exception:  # noqa: BLE001 - progress is best effort
                continue
            now = time.perf_counter()
            snap = ProgressSnapshot(now - t0, done, total, rows_total, unit)
            if self.rich:
                fraction = snap.fraction
                self._bar.update(
                    self._task,
                    total=1.0 if fraction is not None else None,
                    completed=fraction or 0.0,
                    detail=progress_text(snap),
                )
            elif now - last_line >= self.interval:
                self._log(f"{label}: {progress_text(snap)}")
                last_line = now

    def end(self, i: int, stage: str, summary: Summary | None, error: str | None = None) -> None:
        """A stage ended: stop polling, clear its job group, print its one-line outcome."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._group is not None:
            sc = self.spark.sparkContext
            for key in (
                "spark.jobGroup.id",
                "spark.job.description",
                "spark.job.interruptOnCancel",
            ):
                sc.setLocalProperty(key, None)  # type: ignore[arg-type]  # None = remove
            self._group = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if error is not None:
            line = f"stage {i}/{self.total} {stage}: FAILED: {error}"
        else:
            assert summary is not None
            line = end_line(i, self.total, stage, summary)
        if self.rich:
            from rich.markup import escape

            mark = "[red]✗ " if error else "[green]✓ "
            self.console.print(mark + escape(line))
        else:
            self._log(line)


@dataclass
class PipelineResult:
    """Per-stage summaries; renders one table, and `--json` is the list of stage summaries."""

    summaries: list[Summary] = field(default_factory=list)

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.summaries]

    def render(self, console: Any = None) -> None:
        """One screen: a row per stage (rows in, written, quarantined, seconds, rows/s)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console(file=sys.stdout, soft_wrap=True)
        t = Table(title="curator run")
        for col in ("stage", "rows in", "written", "quarantined", "skipped", "seconds", "rows/s"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for s in self.summaries:
            t.add_row(
                f"{s.job} (skipped: {s.skip_reason})" if s.skip_reason else s.job,
                f"{s.rows_in:,}",
                f"{s.rows_written:,}",
                f"{s.quarantined:,}",
                f"{s.skipped:,}",
                f"{s.seconds:,.1f}",
                f"{s.throughput:,.1f}",
            )
        total = sum(s.seconds for s in self.summaries)
        t.add_row("total", "", "", "", "", f"{total:,.1f}", "", style="bold")
        console.print(t)


def stderr_console() -> Any:
    """A rich console on stderr (with --json, stdout carries only the JSON line)."""
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)
