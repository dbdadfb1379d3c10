"""`curator costs`: what each rule of the last filter run cost, and what a changed rule would do.

Rule costs come from the stored scores, never from a model: rows each predicate removes on
its own, rows only it removes, rows all predicates remove together, rows each dedup method
and eps would remove among those passing, and the curated count. `--what-if` edits the
recorded predicates (see curator_udfs.predicates.apply_what_if) and says how many samples
would come back and how many would go, against the `curated` table as it is. `--as-of` asks
the same of an earlier version of the tables.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import Config, ConfigError
from spark_jobs.lineage import FilterRecord, filter_record
from spark_jobs.tables import AsOf, read_table, table_exists
from spark_jobs.views import scored_select


def _passing(scored: DataFrame, predicates: list[str]) -> DataFrame:
    cond = " AND ".join(f"coalesce(({p}), false)" for p in predicates) or "true"
    return scored.where(cond)


def _rule_duplicates(
    spark: SparkSession, cfg: Config, rec: FilterRecord, as_of: AsOf | None
) -> tuple[DataFrame | None, DataFrame | None]:
    """(every duplicates row, the sample_ids the recorded rule removes), None without a table."""
    if not table_exists(spark, cfg, "duplicates", as_of=as_of):
        return None, None
    dups = read_table(spark, cfg, "duplicates", as_of=as_of)
    if not rec.dedup.active:
        return dups, None
    return dups, dups.where(rec.dedup.condition()).select("sample_id").distinct()


def rule_costs(
    spark: SparkSession,
    cfg: Config,
    predicates: list[str],
    rec: FilterRecord,
    as_of: AsOf | None = None,
) -> tuple[dict[str, Any], DataFrame]:
    """The costs of `predicates` plus the recorded duplicate rule, and the sample_ids kept."""
    from spark_jobs.filter import decodable, removed_counts

    select = scored_select(spark, cfg, as_of, model=rec.model)
    if select is None:
        raise ConfigError("no `images` and `scores` tables yet; run ingest and embed first")
    all_scored = spark.sql(select)
    c = removed_counts(all_scored, predicates)
    scored = decodable(all_scored)
    passing = _passing(scored, predicates).select("sample_id")
    dups, rule_ids = _rule_duplicates(spark, cfg, rec, as_of)
    by_method = []
    if dups is not None:
        per = (
            passing.join(dups.select("sample_id", "method", "eps"), "sample_id")
            .groupBy("method", "eps")
            .agg(F.countDistinct("sample_id").alias("removed"))
            .orderBy("method", "eps")
            .collect()
        )
        by_method = [{"method": r["method"], "eps": r["eps"], "removed": r["removed"]} for r in per]
    kept = passing if rule_ids is None else passing.join(rule_ids, "sample_id", "left_anti")
    n_kept = kept.count()
    costs = {
        "rows_in": c["rows_in"],  # scored rows with an embedding (embed errors left out)
        "predicates": [
            {
                "predicate": rec.label(p),
                "removed_alone": c["removed_alone"][i],
                "removed_only_by": c["removed_only_by"][i],
            }
            for i, p in enumerate(predicates)
        ],  # fmt: skip
        "removed_by_predicates": c["rows_in"] - c["passed"],
        "passed_predicates": c["passed"],
        "duplicates_by_method": by_method,
        "duplicate_rule": rec.dedup.to_dict(),  # JSON-ready: `curator costs --json` prints it
        "removed_as_duplicates": c["passed"] - n_kept,
        "kept": n_kept,
    }
    return costs, kept


def report(
    spark: SparkSession, cfg: Config, what_if: list[str] | None = None, as_of: AsOf | None = None
) -> dict[str, Any]:
    """Costs of the recorded rule and, with `what_if` edits, of the edited one (see module)."""
    from curator_udfs.predicates import PredicateError, apply_what_if

    rec = filter_record(spark, cfg, as_of)
    base, base_kept = rule_costs(spark, cfg, rec.predicates, rec, as_of)
    out: dict[str, Any] = {
        "as_of": as_of.label if as_of else "latest",
        "curated_version": rec.version,
        "rule_recorded": rec.recorded,
        "current": base,
    }
    curated = (
        read_table(spark, cfg, "curated", as_of=as_of).select("sample_id")
        if rec.version is not None
        else None
    )
    out["curated_rows"] = curated.count() if curated is not None else None
    if what_if:
        select = scored_select(spark, cfg, as_of, model=rec.model)
        columns = spark.sql(f"SELECT * FROM ({select}) LIMIT 0").columns
        try:
            preds = apply_what_if(rec.predicates, what_if, columns)
        except PredicateError as exc:
            raise ConfigError(f"--what-if: {exc}") from None
        new, new_kept = rule_costs(spark, cfg, preds, rec, as_of)
        ref = curated if curated is not None else base_kept
        out["what_if"] = {
            "changes": list(what_if),
            "predicates": [rec.label(p) for p in preds],
            "costs": new,
            "would_come_back": new_kept.join(ref, "sample_id", "left_anti").count(),
            "would_be_dropped": ref.join(new_kept, "sample_id", "left_anti").count(),
        }
    return out


def render(out: dict[str, Any]) -> str:
    """The report as the lines `curator costs` prints."""

    def block(title: str, c: dict[str, Any]) -> list[str]:
        lines = [title, f"  rows in (embedded)              {c['rows_in']:>10,}"]
        for p in c["predicates"]:
            lines.append(
                f"  {p['predicate']:<32}{p['removed_alone']:>10,} removed alone, "
                f"{p['removed_only_by']:,} only by it"
            )
        lines.append(f"  all predicates together         {c['removed_by_predicates']:>10,} removed")
        for d in c["duplicates_by_method"]:
            eps = f" eps {d['eps']}" if d["eps"] is not None else ""
            lines.append(f"  {d['method'] + eps:<32}{d['removed']:>10,} duplicates among passing")
        rule = c["duplicate_rule"]
        lines.append(
            f"  duplicate rule {rule.get('methods')} eps {rule.get('eps')}"
            f"{c['removed_as_duplicates']:>10,} removed"
        )
        lines.append(f"  kept                            {c['kept']:>10,}")
        return lines

    head = f"rule costs [{out['as_of']}], curated version {out['curated_version']}"
    if not out["rule_recorded"]:
        head += " (rule not recorded: the configuration's)"
    lines = block(head, out["current"])
    if out["curated_rows"] is not None:
        lines.append(f"  curated table now               {out['curated_rows']:>10,}")
    if "what_if" in out:
        w = out["what_if"]
        lines += [""] + block("what if: " + " ; ".join(w["changes"]), w["costs"])
        lines.append(
            f"  would come back {w['would_come_back']:,}, would be dropped "
            f"{w['would_be_dropped']:,} (against the curated table)"
        )
    return "\n".join(lines)
