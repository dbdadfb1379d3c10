"""Job 4, filter: the `scored` view → SQL predicates (ANDed) minus duplicates → `curated`.

Predicates are validated before Spark starts (curator_udfs.predicates) and once more by
Spark's analyzer (resolved columns, boolean type, deterministic, no subquery or UDF). They
are applied with `DataFrame.where` over the view, so Catalyst pushes them into the Delta scans
(data skipping on file statistics, Parquet row-group filters) and only the columns they need
are read; the image bytes never are. Samples listed in `duplicates` are removed with an anti
join: rows of the methods in `dedup.methods`, and of semantic dedup only those at
`filter.dedup_eps` (default: the first of `dedup.eps`), because a duplicates table may hold
the results of several thresholds (spark_jobs.dup_rule.DuplicateRule, recorded in the curated
commit). Whose scores: the configured model's, or the only model in `scores` when the
configured one has none (spark_jobs.model_choice, the rule dedup and the API apply too).

`curated` is a Delta table (the export's input), overwritten in one transaction, so a rerun
replaces it whole. Each run appends to `filter_stats` how many rows each predicate removed
on its own (rows for which it is false or NULL) and how many duplicates were removed.

Presets (`filter.presets`, curator_udfs.presets) add named predicates after
`filter.predicates`: filter_stats rows of kind `preset` and the recorded rule
(`predicate_names` in the curated commit) carry their names, e.g. `datacomp_basic.min_side`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from functools import reduce
from operator import and_
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.predicates import (
    PredicateError,
    ValidPredicate,
    validate_predicate,
    validate_predicates,
)
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError, filter_predicates, preset_predicates
from spark_jobs.dup_rule import DuplicateRule
from spark_jobs.model_choice import model_choice
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import FILTER_STATS, is_delta, read_table, table_name, table_path
from spark_jobs.views import known_scored_columns, scored_select

_BANNED_EXPRESSIONS = ("UDF", "Subquery", "ListQuery", "Exists", "LambdaFunction")


def check_predicates(cfg: Config) -> list[ValidPredicate]:
    """Validate `filter.predicates` and the predicates of `filter.presets` without Spark; a
    ConfigError names the key, the predicate and the offending part."""
    preds = filter_predicates(cfg)
    if not preds:
        return []
    known = known_scored_columns(cfg)
    try:
        hand = validate_predicates([t for t, n in preds if n is None], known)
    except PredicateError as exc:
        raise ConfigError(f"config key `filter.predicates`:\n{exc}") from None
    # a preset may read a column the view gains later (clip_score): checked against the view
    # itself in curated_frame, with a message naming the preset
    preset_cols = known + [c for p in preset_predicates(cfg) for c in p.columns]
    try:
        named = [
            replace(validate_predicate(t, preset_cols), name=n) for t, n in preds if n is not None
        ]
    except PredicateError as exc:
        raise ConfigError(f"config key `filter.presets`: {exc}") from None
    return hand + named


def check_preset_columns(scored: DataFrame, preds: list[ValidPredicate]) -> None:
    """A preset predicate reading a column `scored` lacks is a ConfigError naming the preset."""
    have = {c.lower() for c in scored.columns}
    for p in preds:
        missing = [c for c in p.columns if c.lower() not in have]
        if p.name and missing:
            preset = p.name.split(".", 1)[0]
            raise ConfigError(
                f"config key `filter.presets`: preset predicate {p.name} ({p.text}) reads "
                f"{', '.join(missing)}, which the scored view does not have"
                + (
                    " (clip_score is written by the embed job with a CLIP model that has a "
                    "text tower)"
                    if "clip_score" in missing
                    else " (an `images` table from before the caption signals: run `curator "
                    "ingest` once to add the columns)"
                )
                + f"; remove {preset!r} from filter.presets or produce the column first"
            )


def _walk(jexpr: Any) -> list[str]:
    names = [str(jexpr.getClass().getSimpleName())]
    children = jexpr.children()
    for i in range(children.size()):
        names.extend(_walk(children.apply(i)))
    return names


def analyze_predicate(df: DataFrame, pred: ValidPredicate) -> DataFrame:
    """`df.where(pred)`, checked by Spark's analyzer: resolvable, boolean, deterministic."""
    key = "filter.presets" if pred.name else "filter.predicates"
    where = f"config key `{key}`: filter predicate {pred.label!r}"
    try:
        out = df.where(pred.text)
    except AnalysisException as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{where}: Spark cannot resolve it: {first}") from None
    plan = out._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() != "Filter":
        raise ConfigError(f"{where}: Spark did not read it as a row filter")
    cond = plan.condition()
    if str(cond.dataType().typeName()) != "boolean":
        raise ConfigError(f"{where}: is of type {cond.dataType().simpleString()}, not boolean")
    if not cond.deterministic():
        raise ConfigError(f"{where}: Spark reports it as non-deterministic")
    banned = [n for n in _walk(cond) if any(b in n for b in _BANNED_EXPRESSIONS)]
    if banned:
        raise ConfigError(f"{where}: contains {', '.join(sorted(set(banned)))}")
    return out


def scored_frame(spark: SparkSession, cfg: Config, model: str | None = None) -> DataFrame:
    """The `scored` view's rows for `model` (default: the configured one, as in the view),
    registering the warehouse's tables and views first.

    The view's own SELECT with the model the job chose (spark_jobs.model_choice), so the
    filter and the view never disagree about whose scores they read.
    """
    register_tables(spark, cfg)
    select = scored_select(spark, cfg, model=model)
    if select is None:
        raise ConfigError(
            f"the warehouse {cfg.warehouse_path} has no `images` and `scores` tables yet; "
            "run `curator ingest` and `curator embed` first"
        )
    return spark.sql(select)


def duplicate_ids(
    spark: SparkSession, cfg: Config, rule: DuplicateRule | None = None
) -> tuple[DataFrame | None, str]:
    """The sample_ids `rule` (default: the config's) leaves out as duplicates, and the rule's
    text; (None, "none") when it excludes nothing or there is no duplicates table."""
    rule = rule or DuplicateRule.from_config(cfg)
    if not rule.exclude or not is_delta(table_path(cfg, "duplicates")):
        return None, "none"
    dups = read_table(spark, cfg, "duplicates").where(rule.condition())
    return dups.select("sample_id").distinct(), rule.text


def decodable(scored: DataFrame) -> DataFrame:
    """The scored rows with an embedding: an image the embedder could not decode (score_error)
    is quarantined at embed and never curated, whatever the predicates say."""
    return scored.where("score_error IS NULL")


def curated_frame(
    spark: SparkSession,
    cfg: Config,
    preds: list[ValidPredicate],
    *,
    model: str | None = None,
    rule: DuplicateRule | None = None,
) -> tuple[DataFrame, DataFrame, DataFrame, str]:
    """(scored, passing the predicates, curated = passing minus duplicates, dedup rule text)
    over `model`'s scores (default: the configured model) and `rule` (default: the config's)."""
    scored = scored_frame(spark, cfg, model)
    passing = decodable(scored)
    check_preset_columns(scored, preds)
    for p in preds:
        analyze_predicate(scored, p)
        passing = passing.where(p.text)
    dups, text = duplicate_ids(spark, cfg, rule)
    curated = passing if dups is None else passing.join(dups, "sample_id", "left_anti")
    return scored, passing, curated, text


def removed_counts(scored: DataFrame, preds: list[str]) -> dict[str, Any]:
    """Rule costs in one scan of `scored`: all rows, rows with an embedding (embed errors are
    never curated), and among those the rows each predicate removes alone (false or NULL),
    rows only it removes (every other predicate passes), and rows passing all of them."""
    usable = F.col("score_error").isNull()
    ok = [F.coalesce(F.expr(p), F.lit(False)) for p in preds]

    def count_if(cond: Column) -> Column:
        return F.sum(F.when(usable & cond, 1).otherwise(0))

    aggs = [F.count(F.lit(1)).alias("all"), count_if(F.lit(True)).alias("n")]
    aggs.append(count_if(reduce(and_, ok, F.lit(True))).alias("passed"))
    for i, c in enumerate(ok):
        others = reduce(and_, [o for j, o in enumerate(ok) if j != i], F.lit(True))
        aggs.append(count_if(~c).alias(f"r{i}"))
        aggs.append(count_if(~c & others).alias(f"u{i}"))
    row = scored.agg(*aggs).first()

    def get(name: str) -> int:
        return int((row[name] if row else 0) or 0)

    return {
        "rows_all": get("all"),
        "rows_in": get("n"),
        "removed_alone": [get(f"r{i}") for i in range(len(preds))],
        "removed_only_by": [get(f"u{i}") for i in range(len(preds))],
        "passed": get("passed"),
    }


def explain_text(df: DataFrame) -> str:
    """The physical plan (formatted) and the RAPIDS explain-only report for `df`."""
    from spark_jobs.gpu_plan import GpuPlanUnavailable, gpu_report, physical_plan

    parts = ["== Physical plan ==", physical_plan(df, "formatted")]
    try:
        report = gpu_report(df)
        parts += ["== RAPIDS Accelerator: would it run on GPU? ==", report.text.rstrip()]
        parts += ["== Operators ==", *report.summary_lines()]
    except GpuPlanUnavailable as exc:
        parts += ["== RAPIDS Accelerator report unavailable ==", str(exc)]
    return "\n".join(parts)


def run(spark: SparkSession, cfg: Config, *, explain: bool = False) -> Summary:
    """Write `curated` from `scored`, the predicates and `duplicates`; record filter_stats."""
    summary = Summary(job="filter", run_id=new_run_id("filter"), unit="samples")
    preds = check_predicates(cfg)
    choice = model_choice(spark, cfg)  # a ConfigError when it is ambiguous
    model = choice.model or choice.configured
    summary.extra["model"] = model
    if choice.note:  # the configured model has no scores: say whose are used
        summary.extra["model_note"] = choice.note
    dedup = DuplicateRule.from_config(cfg)
    scored, passing, curated, rule = curated_frame(spark, cfg, preds, model=model, rule=dedup)
    if explain:
        listed = [f"  {p.label}" for p in preds] or ["  (none)"]
        print("\n".join(["== Predicates (ANDed) ==", *listed, explain_text(curated)]), flush=True)
        summary.extra["explain"] = "plan and RAPIDS report printed; nothing written"
        return summary.finish()
    at = datetime.now(UTC)
    costs = removed_counts(scored, [p.text for p in preds])
    removed, passed = costs["removed_alone"], costs["passed"]
    rows_in = costs["rows_all"]
    embed_errors = rows_in - costs["rows_in"]
    out = curated.withColumn("curated_at", F.lit(at)).withColumn("run_id", F.lit(summary.run_id))
    record = {
        "job": "filter",
        "run_id": summary.run_id,
        "model": model,
        "predicates": [p.text for p in preds],
        "predicate_names": {p.text: p.name for p in preds if p.name},  # preset predicates
        "dedup": dedup.to_dict(),
    }
    (
        out.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", json.dumps(record))  # the rule, for lineage and time travel
        .save(table_path(cfg, "curated"))
    )
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table_name(cfg, 'curated')} USING delta "
        f"LOCATION '{table_path(cfg, 'curated')}'"
    )
    written = read_table(spark, cfg, "curated").count()
    stats = [
        (summary.run_id, i, "preset" if p.name else "predicate", p.label, removed[i], rows_in,
         written, at)
        for i, p in enumerate(preds)
    ]
    stats.append(
        (summary.run_id, len(preds), "duplicates", f"not a duplicate ({rule})",
         passed - written, rows_in, written, at)
    )  # fmt: skip
    spark.createDataFrame(stats, FILTER_STATS.schema).write.format("delta").mode("append").save(
        table_path(cfg, "filter_stats")
    )
    register_tables(spark, cfg)
    summary.rows_in, summary.rows_written = rows_in, written
    summary.quarantined = embed_errors
    summary.skipped = rows_in - embed_errors - written
    summary.extra.update(
        model=model,
        removed_by_predicate={p.label: removed[i] for i, p in enumerate(preds)},
        removed_only_by_predicate={
            p.label: costs["removed_only_by"][i] for i, p in enumerate(preds)
        },
        removed_by_predicates=costs["rows_in"] - passed,
        embed_errors_left_out=embed_errors,
        passed_predicates=passed,
        removed_as_duplicates=passed - written,
        duplicates_rule=rule,
    )
    summary.finish()
    summary.tables["curated"] = written
    return summary


if __name__ == "__main__":  # spark-submit spark_jobs/filter.py ARGS
    from spark_jobs.cli import main

    main("filter")
