"""The Databricks-style job file (Jobs API 2.1 JSON, conf/jobs/curation.json) read as steps.

`curator run --job FILE` runs a scheduled job's task graph locally, in dependency order, each
task's parameters parsed by the same `curator <stage>` command the cluster would run: a dry run
of the scheduled job on a laptop. This module only reads and plans; it runs nothing, and it is
handed the stage names (the pipeline owns them) and the CLI's app (cli.py owns the commands)
instead of importing either, so neither import comes back here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.paths import resolve_config_path

# Parameters every `curator <stage>` command takes; the others are keywords of the stage's run().
SHARED_PARAMS = frozenset({"config", "set_", "warehouse", "as_json"})


@dataclass
class Step:
    """One stage to run: its name, its config and keyword options of its run().

    A task of a job file, or one stage of `curator run`; `label` names it in progress lines.
    """

    stage: str
    cfg: Config
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""


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


def task_stage(task: dict[str, Any], stages: Sequence[str]) -> str:
    """The stage a task runs: the stem of `spark_python_task.python_file`, one of `stages`."""
    spt = task.get("spark_python_task") or {}
    stem = Path(str(spt.get("python_file", ""))).stem
    if stem not in stages:
        raise ConfigError(
            f"job task `{task.get('task_key')}`: python_file {spt.get('python_file')!r} is not "
            f"one of spark_jobs/<stage>.py with stage in {', '.join(stages)}"
        )
    return stem


def stage_command(stage: str, app: Any) -> Any:
    """The click command of `curator <stage>` alone (a broken other command cannot spoil it).

    `app` is the CLI's typer app, passed in so that this module never imports the CLI.
    """
    import typer

    for info in app.registered_commands:
        callback = info.callback
        assert callback is not None  # every command is registered with @app.command
        name = info.name or callback.__name__.replace("_", "-")
        if name == stage:
            single = typer.Typer()
            single.registered_commands.append(info)
            return typer.main.get_command(single)
    raise ConfigError(f"`curator {stage}` is not a command of this installation")


def parse_task_params(stage: str, params: list[str], app: Any) -> dict[str, Any]:
    """Parse a task's parameters with the `curator <stage>` command of `app`, running nothing."""
    command = stage_command(stage, app)
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
    job_path: str | Path,
    stages: Sequence[str],
    sets: list[str] | None = None,
    warehouse: str | None = None,
    *,
    app: Any,
) -> list[Step]:
    """The job file's tasks as steps in dependency order; outer --set/--warehouse win.

    `stages` are the stage names a task may run (the pipeline's STAGES); `app` is the CLI's
    typer app, whose `curator <stage>` commands parse the tasks' parameters.
    """
    job = load_job(job_path)
    root = project_root(Path(job_path), job)
    steps = []
    for task in task_order(job):
        stage = task_stage(task, stages)
        params = parse_task_params(stage, task["spark_python_task"].get("parameters", []), app)
        config = params.get("config")
        if config is not None and not Path(config).is_absolute() and not Path(config).is_file():
            # relative to the project the job file sits in, else the packaged conf/
            local = root / config
            config = local if local.is_file() else resolve_config_path(config)
        cfg = load_config(
            config,
            [*(params.get("set_") or []), *(sets or [])],
            warehouse if warehouse is not None else params.get("warehouse"),
        )
        kwargs = {k: v for k, v in params.items() if k not in SHARED_PARAMS}
        steps.append(Step(stage, cfg, kwargs, label=f"{task['task_key']} ({stage})"))
    return steps
