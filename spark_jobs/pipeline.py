"""Job 7, pipeline: `curator run` — every stage in order, from one config, in one session.

The order lives in `STAGES` and nowhere else (the scheduled job definition in
conf/jobs/curation.json is tested against it). Each stage is the stage module's own `run`,
which is incremental, so rerunning the pipeline after a crash continues where it stopped.
`curator run --job conf/jobs/curation.json` runs a Databricks-style job file's task graph
locally, in dependency order, parsing each task's parameters with the same CLI: a dry run of
the scheduled job on a laptop.
"""

import importlib
import inspect
import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from spark_jobs.cli_options import ConfigOpt, JsonOpt, SetOpt, WarehouseOpt
from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.summary import Summary

STAGES: tuple[str, ...] = ("ingest", "embed", "classify", "dedup", "filter", "export")

# CLI parameter name (a click param of `curator <stage>`) -> keyword of that stage's run().
_RUN_KWARGS = {
    "input_": "inputs",
    "output": "output",
    "retry_errors": "retry_errors",
    "all_rows": "all_rows",
    "explain": "explain",
}
# Checks a stage module offers that need no Spark: run before the session starts.
_PREFLIGHT = {"embed": "validate", "classify": "validate", "filter": "check_predicates"}


# ---- which stages -------------------------------------------------------------------------------
def _check_names(names: Iterable[str], what: str) -> list[str]:
    out = [n.strip() for n in names if n.strip()]
    bad = [n for n in out if n not in STAGES]
    if bad:
        raise ConfigError(f"{what}: unknown stage(s) {bad}; the stages are {', '.join(STAGES)}")
    return out


def select_stages(
    stages: str | list[str] | None = None,
    from_stage: str | None = None,
    to_stage: str | None = None,
) -> list[str]:
    """The stages to run, in pipeline order: `--stages a,b` or the `--from/--to-stage` range."""
    if stages and (from_stage or to_stage):
        raise ConfigError("--stages cannot be combined with --from-stage/--to-stage; use one")
    if stages:
        names = stages.split(",") if isinstance(stages, str) else stages
        wanted = set(_check_names(names, "--stages"))
        if not wanted:
            raise ConfigError("--stages: empty; name at least one of " + ", ".join(STAGES))
        return [s for s in STAGES if s in wanted]
    lo = STAGES.index(_check_names([from_stage], "--from-stage")[0]) if from_stage else 0
    hi = STAGES.index(_check_names([to_stage], "--to-stage")[0]) if to_stage else len(STAGES) - 1
    if lo > hi:
        raise ConfigError(f"--from-stage {from_stage} comes after --to-stage {to_stage}")
    return list(STAGES[lo : hi + 1])


def stage_module(stage: str) -> Any:
    """The module `spark_jobs.<stage>`, or a message when this installation lacks it."""
    try:
        return importlib.import_module(f"spark_jobs.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name != f"spark_jobs.{stage}":
            raise
        raise ConfigError(
            f"stage `{stage}` is not available (spark_jobs/{stage}.py is missing); run a subset "
            f"with --stages or --to-stage"
        ) from None


def preflight(cfg: Config, stages: list[str], output: str | None = None) -> None:
    """Configuration checks of the selected stages that need no Spark (ConfigError if bad)."""
    for stage in stages:
        module = stage_module(stage)
        check = getattr(module, _PREFLIGHT.get(stage, ""), None)
        if check is not None:
            check(cfg)
        if stage == "export" and hasattr(module, "output_dir"):
            module.output_dir(cfg, output)


# ---- progress -----------------------------------------------------------------------------------
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


def expected_work(spark: Any, step: "Step") -> tuple[int | None, str]:
    """How many rows the stage will go through, from a cheap count (None if not known)."""
    from pyspark.sql import functions as F

    from spark_jobs.tables import is_delta, read_table, table_path
    from spark_jobs.views import scored_model_id

    cfg = step.cfg
    try:
        if step.stage == "ingest":
            module = stage_module("ingest")
            files = step.kwargs.get("files") or module.list_inputs(cfg, step.kwargs.get("inputs"))
            return len(module.pending_shards(spark, cfg, files)), "shards"
        if step.stage == "embed":
            if is_delta(table_path(cfg, "scores")):
                todo = stage_module("embed").pending_images(spark, cfg, scored_model_id(cfg))
                return todo.count(), "images"
            return read_table(spark, cfg, "images").count(), "images"
        if step.stage == "classify":
            scores = read_table(spark, cfg, "scores")
            return scores.where(F.col("model") == scored_model_id(cfg)).count(), "embeddings"
        if step.stage in ("dedup", "filter"):
            return read_table(spark, cfg, "images").count(), "images"
        if step.stage == "export":
            return read_table(spark, cfg, "curated").count(), "samples"
    except Exception:  # noqa: BLE001 - progress is best effort; the stage reports real errors
        return None, "rows"
    return None, "rows"


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
            line = (
                f"stage {i}/{self.total} {stage}: done in {summary.seconds:.1f}s, "
                f"{summary.rows_in:,} {summary.unit} in, {summary.rows_written:,} written, "
                f"{summary.quarantined:,} quarantined, {summary.throughput:,.1f} {summary.unit}/s"
            )
        if self.rich:
            from rich.markup import escape

            mark = "[red]✗ " if error else "[green]✓ "
            self.console.print(mark + escape(line))
        else:
            self._log(line)


# ---- the run ------------------------------------------------------------------------------------
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
                s.job,
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


@dataclass
class Step:
    """One stage to run: its name, its config and keyword arguments of its run()."""

    stage: str
    cfg: Config
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage (the pipeline can be rerun to continue)."""


def _call_run(module: Any, spark: Any, step: Step) -> Summary:
    params = inspect.signature(module.run).parameters
    kwargs = {k: v for k, v in step.kwargs.items() if k in params and v not in (None, [], False)}
    return module.run(spark, step.cfg, **kwargs)


def run_steps(spark: Any, steps: list[Step], *, progress: Progress | None = None) -> PipelineResult:
    """Run the steps in order in one session; stop at the first failing stage."""
    from spark_jobs.tables import register_tables

    result = PipelineResult()
    progress = progress or Progress(len(steps), rich=False)
    registered: set[tuple[str, str]] = set()
    for i, step in enumerate(steps, 1):
        module = stage_module(step.stage)
        where = (str(step.cfg.warehouse_path), step.cfg.database)
        if where not in registered:  # a task may name another warehouse than the session's
            register_tables(spark, step.cfg)
            registered.add(where)
        rows_total, unit = expected_work(spark, step) if progress.spark is not None else (None, "")
        progress.start(i, step.label or step.stage, rows_total, unit or "rows")
        try:
            summary = _call_run(module, spark, step)
        except ConfigError as exc:
            progress.end(i, step.label or step.stage, None, error=str(exc).splitlines()[0])
            raise ConfigError(f"stage {step.stage}: {exc}") from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            progress.end(i, step.label or step.stage, None, error=first)
            if result.summaries:
                result.render(_stderr_console())
            raise StageFailed(
                f"stage {step.stage} ({i}/{len(steps)}) failed: {exc.__class__.__name__}: {first}; "
                f"stages before it are committed, rerun to continue"
            ) from exc
        progress.end(i, step.label or step.stage, summary)
        result.summaries.append(summary)
    return result


def run(
    spark: Any,
    cfg: Config,
    *,
    stages: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
    progress: Progress | None = None,
) -> PipelineResult:
    """Run `stages` (default: all of STAGES) in order with this config and session."""
    chosen = [s for s in STAGES if s in set(stages)] if stages else list(STAGES)
    kwargs = {"input_": inputs, "output": output}
    steps = [
        Step(s, cfg, {_RUN_KWARGS[k]: v for k, v in kwargs.items() if v is not None})
        for s in chosen
    ]
    return run_steps(spark, steps, progress=progress or Progress(len(steps), spark=spark))


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)


# ---- the job definition (Databricks Jobs API 2.1 shape) ----------------------------------------
def load_job(path: str | Path) -> dict[str, Any]:
    """Read a job JSON file; ConfigError with the fix when it is missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--job {path}: no such file; e.g. conf/jobs/curation.json")
    try:
        job = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"--job {path}: not valid JSON: {exc}") from None
    if not isinstance(job, dict) or not isinstance(job.get("tasks"), list) or not job["tasks"]:
        raise ConfigError(f"--job {path}: expected a Jobs API 2.1 object with a `tasks` list")
    return job


def task_order(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks in dependency order (Kahn's sort; ties keep the file's order)."""
    tasks = {t.get("task_key"): t for t in job["tasks"]}
    if None in tasks or len(tasks) != len(job["tasks"]):
        raise ConfigError("job: every task needs a unique `task_key`")
    deps = {}
    for key, t in tasks.items():
        deps[key] = [d.get("task_key") for d in t.get("depends_on", [])]
        unknown = [d for d in deps[key] if d not in tasks]
        if unknown:
            raise ConfigError(f"job task `{key}`: depends_on unknown task(s) {unknown}")
    order: list[dict[str, Any]] = []
    done: set[str] = set()
    while len(order) < len(tasks):
        ready = [k for k in tasks if k not in done and all(d in done for d in deps[k])]
        if not ready:
            cycle = sorted(k for k in tasks if k not in done)
            raise ConfigError(f"job: the depends_on edges form a cycle among {cycle}")
        order.append(tasks[ready[0]])
        done.add(ready[0])
    return order


def task_stage(task: dict[str, Any]) -> str:
    """The stage a task runs: the stem of `spark_python_task.python_file`."""
    spt = task.get("spark_python_task") or {}
    stem = Path(str(spt.get("python_file", ""))).stem
    if stem not in STAGES:
        raise ConfigError(
            f"job task `{task.get('task_key')}`: python_file {spt.get('python_file')!r} is not "
            f"one of spark_jobs/<stage>.py with stage in {', '.join(STAGES)}"
        )
    return stem


def stage_command(stage: str) -> Any:
    """The click command of `curator <stage>` alone (a broken other command cannot spoil it)."""
    import typer

    from spark_jobs.cli import app

    for info in app.registered_commands:
        callback = info.callback
        assert callback is not None  # every command is registered with @app.command
        name = info.name or callback.__name__.replace("_", "-")
        if name == stage:
            single = typer.Typer()
            single.registered_commands.append(info)
            return typer.main.get_command(single)
    raise ConfigError(f"`curator {stage}` is not a command of this installation")


def parse_task_params(stage: str, params: list[str]) -> dict[str, Any]:
    """Parse a task's parameters with the `curator <stage>` command, running nothing."""
    command = stage_command(stage)
    try:
        with command.make_context(stage, list(params)) as ctx:
            return dict(ctx.params)
    except Exception as exc:  # typer vendors click: its exceptions are not click's
        format_message = getattr(exc, "format_message", None)
        if format_message is None:
            raise ConfigError(f"job task {stage}: parameters {params}: stopped parsing") from None
        raise ConfigError(f"job task {stage}: parameters {params}: {format_message()}") from None


def project_root(job_path: Path, job: dict[str, Any]) -> Path:
    """The directory the job's python_file paths are relative to (found upward from the file)."""
    rel = (job["tasks"][0].get("spark_python_task") or {}).get("python_file", "")
    for base in [Path.cwd(), *job_path.resolve().parents]:
        if rel and (base / rel).is_file():
            return base
    return Path.cwd()


def job_steps(
    job_path: str | Path, sets: list[str] | None = None, warehouse: str | None = None
) -> list[Step]:
    """The job file's tasks as steps in dependency order; outer --set/--warehouse win."""
    job = load_job(job_path)
    root = project_root(Path(job_path), job)
    steps = []
    for task in task_order(job):
        stage = task_stage(task)
        params = parse_task_params(stage, task["spark_python_task"].get("parameters", []))
        config = params.get("config")
        if config is not None and not Path(config).is_absolute() and not Path(config).is_file():
            config = root / config
        cfg = load_config(
            config,
            [*(params.get("set_") or []), *(sets or [])],
            warehouse if warehouse is not None else params.get("warehouse"),
        )
        kwargs = {_RUN_KWARGS[k]: v for k, v in params.items() if k in _RUN_KWARGS}
        steps.append(Step(stage, cfg, kwargs, label=f"{task['task_key']} ({stage})"))
    return steps


# ---- command line -------------------------------------------------------------------------------
def register(app: Any) -> None:
    """Add `curator run` to the CLI."""
    from spark_jobs.cli import err, resolve_config, run_job

    def run_cmd(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        warehouse: WarehouseOpt = None,
        as_json: JsonOpt = False,
        input_: Annotated[
            list[str] | None, typer.Option("--input", help="ingest: GLOB_OR_DIR; repeatable")
        ] = None,
        output: Annotated[
            str | None, typer.Option("--output", help="export: directory for the shards")
        ] = None,
        stages: Annotated[
            str | None, typer.Option("--stages", help=f"comma list of {','.join(STAGES)}")
        ] = None,
        from_stage: Annotated[
            str | None, typer.Option("--from-stage", help="first stage to run")
        ] = None,
        to_stage: Annotated[
            str | None, typer.Option("--to-stage", help="last stage to run")
        ] = None,
        job: Annotated[
            Path | None,
            typer.Option(
                "--job",
                help="run a Jobs API job file's tasks locally, in dependency order; --set, "
                "--warehouse, --input and --output override the tasks' parameters",
            ),
        ] = None,
    ) -> None:
        """Run the stages in order: ingest → embed → classify → dedup → filter → export."""
        try:
            chosen = select_stages(stages, from_stage, to_stage)
            if job is not None:
                if config is not None:
                    raise ConfigError("--job takes each task's --config from the job file")
                steps = [s for s in job_steps(job, set_, warehouse) if s.stage in chosen]
                for s in steps:  # a laptop dry run points the cluster paths elsewhere
                    if input_ and s.stage == "ingest":
                        s.kwargs["inputs"] = list(input_)
                    if output and s.stage == "export":
                        s.kwargs["output"] = output
                if not steps:
                    raise ConfigError(f"--job {job}: no task runs one of the stages {chosen}")
                cfg = steps[0].cfg
            else:
                cfg = resolve_config(config, set_, warehouse)
                kw = {"input_": input_, "output": output}
                run_kw = {_RUN_KWARGS[k]: v for k, v in kw.items() if v}
                steps = [Step(s, cfg, run_kw) for s in chosen]
            for s in steps:
                preflight(s.cfg, [s.stage], s.kwargs.get("output"))
                if s.stage == "ingest":  # list the shards now: a wrong path is a usage error
                    files = stage_module("ingest").list_inputs(s.cfg, s.kwargs.pop("inputs", None))
                    s.kwargs["files"] = files
        except ConfigError as exc:
            err(f"configuration error:\n{exc}")
            raise typer.Exit(2) from None

        def call(spark: Any, _cfg: Config) -> PipelineResult:
            return run_steps(spark, steps, progress=Progress(len(steps), spark=spark))

        run_job("run", cfg, as_json, call)

    app.command("run")(run_cmd)


def main(argv: list[str] | None = None) -> None:
    """`spark-submit spark_jobs/pipeline.py --config FILE [...]`: all stages on a cluster."""
    from spark_jobs.cli import main_for

    main_for("run", argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
