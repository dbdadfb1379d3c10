"""Job 7, pipeline: `curator run` — every stage in order, from one config, in one session.

The order lives in `PIPELINE` (a tuple of `Stage`s; `STAGES` is their names) and nowhere else:
the scheduled job definition in conf/jobs/curation.json is tested against it. Each stage runs
the stage module's own `run`, which is incremental, so rerunning the pipeline after a crash
continues where it stopped. `plan` turns the command line (or a job file, see job_file.py) into
checked `Step`s before Spark starts; `run_steps` runs them with a progress display (progress.py).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_jobs import classify, dedup, embed, export, ingest, job_file
from spark_jobs import filter as filter_job
from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.job_file import Step
from spark_jobs.job_file import task_order as task_order  # re-exported: job-definition checks
from spark_jobs.progress import PipelineResult, Progress, expected_work, stderr_console
from spark_jobs.summary import Summary

Options = dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once.

    `run(spark, cfg, **options) -> Summary` is the job module's own run(); `options` are the
    keyword options it takes (others a step carries are not passed). `preflight(cfg, options)`
    checks the config without Spark, so a bad config fails before the session starts, and
    returns the options run() gets (ingest lists its shards there); None: nothing to check.
    """

    name: str
    preflight: Callable[[Config, Options], Options] | None
    run: Callable[..., Summary]
    options: tuple[str, ...] = ()


def config_check(check: Callable[[Config], object]) -> Callable[[Config, Options], Options]:
    """A preflight from a config-only check (e.g. embed.validate); options pass unchanged."""

    def preflight(cfg: Config, options: Options) -> Options:
        check(cfg)
        return options

    return preflight


def _list_shards(cfg: Config, options: Options) -> Options:
    """Ingest: list the shards now (a wrong path is a usage error) and hand run() the list."""
    rest = {k: v for k, v in options.items() if k != "inputs"}
    return {**rest, "files": ingest.list_inputs(cfg, options.get("inputs"))}


def _check_filter(cfg: Config, options: Options) -> Options:
    """Filter: the predicates; `--explain` needs the RAPIDS jar (not the plugin) for its report."""
    filter_job.check_predicates(cfg)
    if options.get("explain"):
        cfg.spark.with_rapids_jar = True
    return options


def _check_output(cfg: Config, options: Options) -> Options:
    export.output_dir(cfg, options.get("output"))  # ConfigError for an unsupported URI
    return options


PIPELINE: tuple[Stage, ...] = (
    Stage("ingest", _list_shards, ingest.run, ("inputs", "files")),
    Stage("embed", config_check(embed.validate), embed.run, ("retry_errors",)),
    Stage("classify", config_check(embed.validate), classify.run, ("all_rows",)),
    Stage("dedup", None, dedup.run, ("full",)),
    Stage("filter", _check_filter, filter_job.run, ("explain",)),
    Stage("export", _check_output, export.run, ("output",)),
)
STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
_BY_NAME = {s.name: s for s in PIPELINE}


def stage(name: str) -> Stage:
    """The stage called `name` (ConfigError naming the stages otherwise)."""
    if name not in _BY_NAME:
        raise ConfigError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
    return _BY_NAME[name]


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


def task_stage(task: dict[str, Any]) -> str:
    """The stage a job-file task runs, one of STAGES (ConfigError otherwise)."""
    return job_file.task_stage(task, STAGES)


def parse_task_params(stage: str, params: list[str], app: Any) -> dict[str, Any]:
    """A job task's parameters parsed by `curator <stage>` of `app` (the CLI's typer app)."""
    return job_file.parse_task_params(stage, params, app)


def _set_options(step: Step, inputs: list[str] | None, output: str | None) -> Step:
    """`--input`/`--output` into the steps whose stage takes them (they win over a task's)."""
    given = {"inputs": list(inputs) if inputs else None, "output": output}
    options = _BY_NAME[step.stage].options
    step.kwargs.update({k: v for k, v in given.items() if v and k in options})
    return step


def plan(
    config: Path | None,
    sets: list[str] | None,
    warehouse: str | None,
    *,
    inputs: list[str] | None = None,
    output: str | None = None,
    stages: str | None = None,
    from_stage: str | None = None,
    to_stage: str | None = None,
    job: Path | None = None,
    app: Any = None,
) -> list[Step]:
    """`curator run`'s steps, checked without Spark: ConfigError for any usage/config error.

    From one config (`config`, `sets`, `warehouse`), or with `job` from a job file's tasks
    (each with its own --config; `sets`/`warehouse`/`inputs`/`output` override theirs),
    their parameters parsed by the commands of `app` (the CLI's typer app).
    """
    chosen = select_stages(stages, from_stage, to_stage)
    if job is not None:
        if config is not None:
            raise ConfigError("--job takes each task's --config from the job file")
        if app is None:
            raise ValueError("plan(job=...) needs the CLI's typer app to parse task parameters")
        tasks = job_file.job_steps(job, STAGES, sets, warehouse, app=app)
        steps = [s for s in tasks if s.stage in chosen]
        if not steps:
            raise ConfigError(f"--job {job}: no task runs one of the stages {chosen}")
    else:
        cfg = load_config(config, sets or [], warehouse)
        steps = [Step(s, cfg) for s in chosen]
    for step in steps:
        _set_options(step, inputs, output)
        check = _BY_NAME[step.stage].preflight
        if check is not None:
            step.kwargs = check(step.cfg, step.kwargs)
    return steps


# ---- the run ------------------------------------------------------------------------------------
class StageFailed(RuntimeError):
    """A stage raised; the message names the stage (the pipeline can be rerun to continue)."""


def _call_run(stage: Stage, spark: Any, step: Step) -> Summary:
    kwargs = {
        k: v for k, v in step.kwargs.items() if k in stage.options and v not in (None, [], False)
    }
    return stage.run(spark, step.cfg, **kwargs)


def run_steps(spark: Any, steps: list[Step], *, progress: Progress | None = None) -> PipelineResult:
    """Run the steps in order in one session; stop at the first failing stage.

    Progress is live by default (a bar on a terminal, else a line on stderr every 10 s).
    """
    from spark_jobs.catalog import register_tables

    result = PipelineResult()
    progress = progress or Progress(len(steps), spark=spark)
    registered: set[tuple[str, str]] = set()
    for i, step in enumerate(steps, 1):
        label = step.label or step.stage
        where = (str(step.cfg.warehouse_path), step.cfg.database)
        if where not in registered:  # a task may name another warehouse than the session's
            register_tables(spark, step.cfg)
            registered.add(where)
        rows_total, unit = (
            expected_work(spark, step.stage, step.cfg, step.kwargs)
            if progress.spark is not None
            else (None, "")
        )
        progress.start(i, label, rows_total, unit or "rows")
        try:
            summary = _call_run(_BY_NAME[step.stage], spark, step)
        except ConfigError as exc:
            progress.end(i, label, None, error=str(exc).splitlines()[0])
            raise ConfigError(f"stage {step.stage}: {exc}") from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            progress.end(i, label, None, error=first)
            if result.summaries:
                result.render(stderr_console())
            raise StageFailed(
                f"stage {step.stage} ({i}/{len(steps)}) failed: {exc.__class__.__name__}: {first}; "
                f"stages before it are committed, rerun to continue"
            ) from exc
        progress.end(i, label, summary)
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
    steps = [_set_options(Step(s, cfg), inputs, output) for s in chosen]
    return run_steps(spark, steps, progress=progress)


if __name__ == "__main__":  # spark-submit spark_jobs/pipeline.py ARGS: every stage
    from spark_jobs.cli import main

    main("run")
