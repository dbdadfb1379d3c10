"""`curator`: the command-line contract (see README), as one table of commands.

A row of `COMMANDS` names the job function (`module:function`, imported only when the command
runs, so `curator --help` starts fast), its options (each a keyword of that function), and a
preflight that checks the configuration before Spark starts (exit 2 with the key and the fix).
Every job command also takes the shared `--config/--set/--warehouse/--json`; read-only commands
(`show` set) print their result instead of a summary. `spark-submit spark_jobs/<job>.py ARGS`
ends up here too, through `main(job)`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from spark_jobs.cli_options import ConfigOpt, JsonOpt, SetOpt, WarehouseOpt
from spark_jobs.cli_runner import err, query_command, resolve_config, run_job, usage_error
from spark_jobs.config import Config, ConfigError

Options = dict[str, Any]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=(
        "Image-data curation on Spark + Delta Lake: "
        "ingest → embed → classify → dedup → filter → export."
    ),
    pretty_exceptions_enable=False,
)


@dataclass(frozen=True)
class Opt:
    """One option of a command (an argument when `flag` is None): a keyword of its function."""

    name: str
    type: Any
    default: Any
    flag: str | None
    help: str
    click: dict[str, Any] = field(default_factory=dict)  # e.g. {"min": 0}

    def parameter(self) -> inspect.Parameter:
        info = (
            typer.Option(self.flag, help=self.help, **self.click)
            if self.flag
            else typer.Argument(help=self.help, **self.click)
        )
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=self.default if self.flag else inspect.Parameter.empty,
            annotation=Annotated[self.type, info],
        )


@dataclass(frozen=True)
class Command:
    """One `curator` command: `run(spark, cfg, **options)`, checked by `preflight` first."""

    name: str
    run: str | Callable[..., Any]  # "module:function" or a function
    help: str
    options: tuple[Opt, ...] = ()
    preflight: str | None = None  # "module:function"(cfg, options) -> options, or ConfigError
    show: Callable[[Any, Options], None] | None = None  # read-only: print the result


STAGE = "stage"  # Command.run of a pipeline stage: its run and preflight are the Stage's


def _function(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"spark_jobs.{module}"), name)  # type: ignore[no-any-return]


def _run_and_preflight(cmd: Command) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
    if cmd.run == STAGE:
        from spark_jobs.pipeline import stage

        st = stage(cmd.name)
        return st.run, st.preflight
    return _function(cmd.run), _function(cmd.preflight) if cmd.preflight else None


def _keyword(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)  # fmt: skip


_SHARED = (
    _keyword("config", None, ConfigOpt),
    _keyword("set_", None, SetOpt),
    _keyword("warehouse", None, WarehouseOpt),
)
_JSON = _keyword("as_json", False, JsonOpt)


def _callback(cmd: Command) -> Callable[..., None]:
    """The typer callback of `cmd`: shared options, then the command's own."""

    def command(*, config: Path | None, set_: list[str] | None, warehouse: str | None,
                **options: Any) -> None:  # fmt: skip
        run, preflight = _run_and_preflight(cmd)
        as_json = options.pop("as_json") if cmd.show is None else False
        cfg = resolve_config(config, set_, warehouse)
        if preflight is not None:
            try:
                options = preflight(cfg, options)
            except ConfigError as exc:
                raise usage_error(exc) from None
        if cmd.show is None:
            run_job(cmd.name, cfg, as_json, lambda spark, c: run(spark, c, **options))
            return
        cmd.show(query_command(cmd.name, cfg, lambda spark, c: run(spark, c, **options)), options)

    own = [o.parameter() for o in cmd.options]
    args = [p for p in own if p.default is inspect.Parameter.empty]
    rest = [p for p in own if p.default is not inspect.Parameter.empty]
    shared = [*_SHARED] if cmd.show is not None else [*_SHARED, _JSON]
    command.__signature__ = inspect.Signature([*args, *shared, *rest])  # type: ignore[attr-defined]
    command.__doc__ = cmd.help
    return command


# ---- the read-only commands: what they compute and how they print -----------------------------
def _sql(spark: Any, cfg: Config, *, query: str, fmt: str) -> tuple[list[str], list[Any]]:
    df = spark.sql(query)
    return df.columns, df.collect()


def _show_sql(result: tuple[list[str], list[Any]], options: Options) -> None:
    from spark_jobs.sql_output import print_rows

    print_rows(*result, options["fmt"])


def _why(spark: Any, cfg: Config, *, ident: str, as_of: str | None, **_: Any) -> Any:
    from spark_jobs import why
    from spark_jobs.tables import resolve_as_of

    return why.explain(spark, cfg, ident, resolve_as_of(spark, cfg, as_of))


def _show_why(stories: list[dict[str, Any]], options: Options) -> None:
    from spark_jobs.why import render

    if not stories:
        err(f"no sample has sample_id or key {options['ident']!r}")
        if options["as_json"]:
            print("[]")
        raise typer.Exit(1)
    if options["as_json"]:
        print(json.dumps(stories if len(stories) > 1 else stories[0], default=str))
    else:
        print("\n\n".join(render(s) for s in stories))


def _costs(spark: Any, cfg: Config, *, what_if: list[str] | None, as_of: str | None,
           **_: Any) -> Any:  # fmt: skip
    from spark_jobs import costs
    from spark_jobs.tables import resolve_as_of

    return costs.report(spark, cfg, what_if or [], resolve_as_of(spark, cfg, as_of))


def _show_costs(out: dict[str, Any], options: Options) -> None:
    from spark_jobs.costs import render

    print(json.dumps(out, default=str) if options["as_json"] else render(out))


def _dedup_recall(spark: Any, cfg: Config, *, planted: Path, **_: Any) -> Any:
    from spark_jobs.planted import score_against

    return score_against(spark, cfg, planted)


def _show_recall(scores: list[dict[str, Any]], options: Options) -> None:
    from spark_jobs.planted import render

    print(json.dumps(scores) if options["as_json"] else render(scores))


def _planted_file(cfg: Config, options: Options) -> Options:
    if not options["planted"].is_file():
        raise ConfigError(f"{options['planted']}: no such file; `curator sample-shards` writes "
                          "_planted.json next to the shards")  # fmt: skip
    return options


# ---- preflights that need the options ------------------------------------------------------------
def _check_sql(cfg: Config, options: Options) -> Options:
    if options["fmt"] not in ("table", "json", "csv"):
        raise ConfigError(f"--format {options['fmt']!r}: use table, json or csv")
    return options


def _layout_columns(cfg: Config, options: Options) -> Options:
    def columns(flag: str) -> list[str] | None:
        given = options.pop(flag)
        return [c.strip() for c in given.split(",") if c.strip()] if given else None

    zorder, cluster_by = columns("zorder"), columns("cluster_by")
    if zorder and cluster_by:
        raise ConfigError("--zorder and --cluster-by: give one (a clustered table is not "
                          "Z-ordered)")  # fmt: skip
    return {"zorder": zorder, "cluster_by": cluster_by}


_AS_OF = Opt("as_of", str | None, None, "--as-of", "a version of `curated` (integer) or a "
             "timestamp: read the tables as they were then")  # fmt: skip
_AS_JSON = Opt("as_json", bool, False, "--json", "print the result as JSON")

COMMANDS: tuple[Command, ...] = (
    Command("ingest", STAGE, "Ingest WebDataset shards into the images, quarantine and "
            "shards tables.", (Opt("inputs", list[str] | None, None, "--input",
                                   "GLOB_OR_DIR of shards; repeatable"),)),
    Command("embed", STAGE, "Embed new images and score them with the heads (writes the "
            "scores table).", (Opt("retry_errors", bool, False, "--retry-errors",
                                   "re-embed images that failed to decode"),)),
    Command("classify", STAGE, "Re-score stored embeddings with the configured heads (no "
            "image is decoded).", (Opt("all_rows", bool, False, "--all",
                                       "re-score every row (e.g. after new head weights)"),)),
    Command("dedup", STAGE, "Find exact, perceptual and semantic duplicates (writes the "
            "duplicates table).", (Opt("full", bool, False, "--full", "semantic: refit the "
                                   "coarse centroids and recompute every coarse group"),)),
    Command("filter", STAGE, "Apply filter.predicates to the scored view and write the "
            "curated table.", (Opt("explain", bool, False, "--explain", "print the physical plan "
                                   "and the RAPIDS report; write nothing"),)),
    Command("export", STAGE, "Write the curated table as WebDataset shards plus "
            "manifest.json.", (Opt("output", str | None, None, "--output",
                                   "directory for the shards (export.output)"),)),
    Command("optimize", "optimize:run", "OPTIMIZE the scores table: ZORDER BY the head "
            "score columns, or liquid clustering.", (
                Opt("zorder", str | None, None, "--zorder", "comma-separated columns to Z-order "
                    "by (default: the head scores)"),
                Opt("cluster_by", str | None, None, "--cluster-by", "comma-separated columns: "
                    "liquid clustering instead of Z-order (ALTER TABLE ... CLUSTER BY)")),
            preflight="cli:_layout_columns"),
    Command("check", "check:run", "Verify that nothing was lost or duplicated across the tables "
            "(exit 1 if not)."),
    Command("report", "report:run", "Write a static HTML report: funnel, score histograms, "
            "duplicates, quarantine.",
            (Opt("out", Path, Path("report"), "--out", "directory for index.html"),
             Opt("max_groups", int, 12, "--max-groups", "duplicate groups shown as thumbnails",
                 {"min": 0}))),
    Command("sql", _sql, "Run SQL over the tables (by name, e.g. curator.images) and print the "
            "result.", (Opt("query", str, None, None, "one SQL statement over the warehouse's "
                            "tables"), Opt("fmt", str, "table", "--format", "table | json | csv")),
            preflight="cli:_check_sql", show=_show_sql),
    Command("dedup-recall", _dedup_recall, "Recall and precision of each dedup method against "
            "planted duplicates (sample-shards' _planted.json).", (Opt("planted", Path, None, None,
            "the _planted.json of the ingested sample shards"), _AS_JSON),
            preflight="cli:_planted_file", show=_show_recall),
    Command("why", _why, "Say what happened to a sample and why: shard, scores, predicates, "
            "duplicates, export.", (Opt("ident", str, None, None, "a sample_id or a key (all "
                                        "shards)"), _AS_JSON, _AS_OF), show=_show_why),
    Command("costs", _costs, "Rows each filter rule and dedup method removed; what a changed "
            "threshold would do.", (_AS_JSON, _AS_OF, Opt("what_if", list[str] | None, None,
            "--what-if", "'OLD => NEW' or a predicate replacing the one over the same columns; "
            "repeatable")), show=_show_costs),
)  # fmt: skip

for _cmd in COMMANDS:
    app.command(_cmd.name)(_callback(_cmd))


@app.command("run")
def run_pipeline(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="ingest: GLOB_OR_DIR; repeatable")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="export: directory for the shards")
    ] = None,
    stages: Annotated[
        str | None, typer.Option("--stages", help="comma list of the stages to run")
    ] = None,
    from_stage: Annotated[str | None, typer.Option("--from-stage", help="first stage")] = None,
    to_stage: Annotated[str | None, typer.Option("--to-stage", help="last stage")] = None,
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
    from spark_jobs import pipeline

    try:
        steps = pipeline.plan(
            config, set_, warehouse, inputs=inputs, output=output, stages=stages,
            from_stage=from_stage, to_stage=to_stage, job=job, app=app,
        )  # fmt: skip
    except ConfigError as exc:
        raise usage_error(exc) from None
    run_job("run", steps[0].cfg, as_json, lambda spark, _c: pipeline.run_steps(spark, steps))


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


def main(job: str) -> None:
    """Entry point of `spark-submit spark_jobs/<job>.py ARGS`: the same CLI, job fixed."""
    from spark_jobs.submit_streams import adopt_submit_streams

    adopt_submit_streams()  # messages to stderr, Spark's start-up logging at WARN
    try:
        app([job, *sys.argv[1:]], prog_name=f"spark_jobs/{job}.py", standalone_mode=True)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
