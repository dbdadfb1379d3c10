"""`curator`: the command-line contract (see README). Parses arguments and calls a job's run().

Exit codes: 0 done (quarantined samples are still success), 2 bad usage or configuration,
1 the job failed. Messages go to stderr; `--json` puts one JSON object on stdout's last line.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from spark_jobs.cli_options import ConfigOpt, JsonOpt, SetOpt, WarehouseOpt
from spark_jobs.config import Config, ConfigError, load_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Image-data curation on Spark + Delta Lake: ingest → embed → filter → dedup → export.",
    pretty_exceptions_enable=False,
)


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _debug() -> bool:
    return os.environ.get("CURATOR_DEBUG", "") not in ("", "0")


def resolve_config(
    config: Path | None,
    sets: list[str] | None,
    warehouse: str | None,
    validate: Callable[[Config], Any] | None = None,
) -> Config:
    """Load (and `validate`) the configuration or exit 2 with the message, before Spark starts."""
    try:
        cfg = load_config(config, sets or [], warehouse)
        if validate is not None:
            validate(cfg)
        return cfg
    except ConfigError as exc:
        err(f"configuration error:\n{exc}")
        raise typer.Exit(2) from None


def run_job(job: str, cfg: Config, as_json: bool, call: Callable[[Any, Config], Any]) -> None:
    """Build the session, run the job, print its summary; map failures to exit codes."""
    from spark_jobs.session import build_session

    try:
        spark = build_session(cfg, app_name=f"curator-{job}")
        summary = call(spark, cfg)
    except ConfigError as exc:
        err(f"configuration error:\n{exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err(f"curator {job}: interrupted; rerun the same command to continue where it stopped")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one message instead of a traceback
        if _debug():
            traceback.print_exc()
        from spark_jobs.errors import failure_line

        err(
            f"curator {job} failed: {failure_line(exc)}\n"
            "(rerun with CURATOR_DEBUG=1 for the traceback)"
        )
        raise typer.Exit(1) from None
    summaries = summary if isinstance(summary, list) else [summary]
    if as_json:
        for s in summaries:
            s.render(_stderr_console())
        print(
            json.dumps(
                [s.to_dict() for s in summaries] if len(summaries) > 1 else summaries[0].to_dict(),
                default=str,
            )
        )
    else:
        for s in summaries:
            s.render()


def add_job_command(
    app: typer.Typer, name: str, call: Callable[[Any, Config], Any], doc: str
) -> None:
    """Register `curator NAME` for a job that takes only the shared options."""

    def command(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        warehouse: WarehouseOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        run_job(name, resolve_config(config, set_, warehouse), as_json, call)

    command.__doc__ = doc
    app.command(name)(command)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)


@app.command()
def ingest(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
    input_: Annotated[
        list[str] | None, typer.Option("--input", help="GLOB_OR_DIR of shards; repeatable")
    ] = None,
) -> None:
    """Ingest WebDataset shards into the images, quarantine and shards tables."""
    cfg = resolve_config(config, set_, warehouse)
    from spark_jobs import ingest as job

    try:
        files = job.list_inputs(cfg, input_ or [])
    except ConfigError as exc:
        err(f"configuration error:\n{exc}")
        raise typer.Exit(2) from None
    run_job("ingest", cfg, as_json, lambda spark, c: job.run(spark, c, files=files))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one SQL statement over the warehouse's tables")],
    warehouse: WarehouseOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
) -> None:
    """Run SQL over the tables (by name, e.g. curator.images) and print the result."""
    if fmt not in ("table", "json", "csv"):
        err(f"--format {fmt!r}: use table, json or csv")
        raise typer.Exit(2)
    from spark_jobs.sql_output import print_rows

    def call(spark: Any, cfg: Config) -> tuple[list[str], list[Any]]:
        df = spark.sql(query)
        return df.columns, df.collect()

    columns, rows = query_command("sql", config, set_, warehouse, call)
    print_rows(columns, rows, fmt)


def query_command(
    name: str,
    config: Path | None,
    sets: list[str] | None,
    warehouse: str | None,
    call: Callable[[Any, Config], Any],
) -> Any:
    """Run a read-only command's `call(spark, cfg)`: exit 2 on configuration errors, 1 on
    failures, each as one line on stderr (CURATOR_DEBUG=1 for the traceback)."""
    cfg = resolve_config(config, sets, warehouse)
    from spark_jobs.session import build_session

    try:
        spark = build_session(cfg, app_name=f"curator-{name}")
        return call(spark, cfg)
    except ConfigError as exc:
        err(f"configuration error:\n{exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001
        if _debug():
            traceback.print_exc()
        from spark_jobs.errors import failure_line

        err(f"curator {name} failed: {failure_line(exc)}")
        raise typer.Exit(1) from None


@app.command("sample-shards")
def sample_shards(
    out: Annotated[Path, typer.Option("--out", help="directory to write the shards to")],
    shards: Annotated[int, typer.Option("--shards", min=1, help="number of shards")] = 4,
    per_shard: Annotated[int, typer.Option("--per-shard", min=1, help="samples per shard")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same bytes)")] = 0,
) -> None:
    """Write realistic synthetic WebDataset shards (img2dataset layout, planted duplicates)."""
    from curator_udfs.sample_shards import write_sample_shards

    report = write_sample_shards(out, shards=shards, per_shard=per_shard, seed=seed)
    err(
        f"wrote {len(report.paths)} shards, {report.samples} samples "
        f"({report.exact_pairs} exact and {report.near_pairs} near duplicates planted) to {out}"
    )


def main_for(job: str, argv: list[str]) -> None:
    """Entry point of `spark-submit spark_jobs/<job>.py ...`: the same CLI, job fixed."""
    try:
        app([job, *argv], prog_name=f"spark_jobs/{job}.py", standalone_mode=True)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


# Job modules of later stages add their own commands: each defines `register(app)`.
STAGE_MODULES = (
    "embed",
    "classify",
    "dedup",
    "filter",
    "export",
    "pipeline",
    "report",
    "check",
    "why",
    "costs",
)


def _load_commands() -> None:
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f"spark_jobs.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"spark_jobs.{name}":
                raise
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_load_commands()
