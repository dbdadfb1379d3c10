"""`curator why KEY_OR_SAMPLE_ID`: one sample's path through the pipeline, and why it ended there.

Everything comes from the `fates` view (spark_jobs/lineage.py) and the tables it reads: the
source shard and key, size and format, scores, each recorded filter predicate with the values
it read and its verdict, the duplicate group (the kept sample and the similarity, or the
samples this one outranked) and where it was exported. `--as-of` asks the same of an earlier
version of the tables (Delta time travel).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.config import Config, ConfigError
from spark_jobs.lineage import FilterRecord, fates_select, filter_record
from spark_jobs.sql_output import plain
from spark_jobs.tables import AsOf, sql_list, table_exists, table_ref
from spark_jobs.views import head_score_columns, scored_select

_IMAGE_FIELDS = ("image_format", "width", "height", "image_bytes", "image_sha256", "caption",
                 "warnings", "ingested_at")  # fmt: skip
_GROUP_LIMIT = 10


def _first_line(text: Any, limit: int = 120) -> Any:
    if not isinstance(text, str):
        return text
    line = text.splitlines()[0] if text else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _predicate_verdicts(
    spark: SparkSession, scored: str, columns: list[str], sample_id: str, rec: FilterRecord
) -> list[dict[str, Any]]:
    """Each predicate (a preset's under its name) with the values of the columns it reads and
    its verdict for the sample."""
    from curator_udfs.predicates import validate_predicate

    predicates = rec.predicates
    if not predicates:
        return []
    reads = [validate_predicate(p, columns).columns for p in predicates]
    used = list(dict.fromkeys(c for cols in reads for c in cols))
    select = [f"({p}) AS `_v{i}`" for i, p in enumerate(predicates)]
    select += [f"`{c}`" for c in used]
    row = spark.sql(
        f"SELECT {', '.join(select)} FROM ({scored}) WHERE sample_id = {sql_list([sample_id])}"
    ).first()
    if row is None:
        return []
    out = []
    for i, p in enumerate(predicates):
        v = row[f"_v{i}"]
        out.append(
            {
                "predicate": rec.label(p),
                "values": {c: _first_line(plain(row[c]), 40) for c in reads[i]},
                "verdict": "pass" if v is True else ("fail" if v is False else "null (fails)"),
            }
        )
    return out


def _duplicates_of(
    spark: SparkSession, cfg: Config, sample_id: str, rec: FilterRecord, as_of: AsOf | None
) -> dict[str, Any] | None:
    """The samples this one was kept over (duplicate_of = it), under the recorded rule."""
    if not table_exists(spark, cfg, "duplicates", as_of=as_of) or not rec.dedup.methods:
        return None
    dups = table_ref(cfg, "duplicates", as_of, spark)
    df = spark.sql(
        f"SELECT sample_id, method, eps, similarity FROM {dups} "
        f"WHERE duplicate_of = {sql_list([sample_id])} AND sample_id <> duplicate_of "
        f"AND {rec.dedup.condition()} ORDER BY similarity DESC, sample_id"
    )
    rows = df.collect()
    if not rows:
        return None
    members = list(dict.fromkeys(r["sample_id"] for r in rows))
    return {
        "kept": sample_id,
        "duplicates": len(members),
        "examples": [
            {"sample_id": r["sample_id"], "method": r["method"], "eps": r["eps"],
             "similarity": r["similarity"]}
            for r in rows[:_GROUP_LIMIT]
        ],
    }  # fmt: skip


def explain(
    spark: SparkSession, cfg: Config, ident: str, as_of: AsOf | None = None
) -> list[dict[str, Any]]:
    """Every sample whose sample_id or key is `ident`, with its full story (see module doc)."""
    rec = filter_record(spark, cfg, as_of)
    fates = fates_select(spark, cfg, as_of, rec)
    if fates is None:
        raise ConfigError(
            f"the warehouse {cfg.warehouse_path} has no `images` table"
            + (f" at {as_of.label}" if as_of else "")
            + "; run `curator ingest` first"
        )
    lit = sql_list([ident])
    rows = spark.sql(
        f"SELECT * FROM ({fates}) WHERE sample_id = {lit} OR key = {lit} "
        "ORDER BY shard_uri, key, ordinal"
    ).collect()
    scored = scored_select(spark, cfg, as_of, model=rec.model)
    scored_cols = spark.sql(f"SELECT * FROM ({scored}) LIMIT 0").columns if scored else []
    heads = [h for h in head_score_columns(cfg) if h in scored_cols]
    images = table_ref(cfg, "images", as_of, spark)
    stories = []
    for r in rows:
        story: dict[str, Any] = {
            "sample_id": r["sample_id"],
            "shard_uri": r["shard_uri"],
            "key": r["key"],
            "fate": r["fate"],
            "stage": r["stage"],
            "reason": r["reason"],
            "decided_by": r["decided_by"],
            "runs": {k: r[f"{k}_run"] for k in ("ingest", "dedup", "filter", "export")},
            "as_of": as_of.label if as_of else "latest",
        }
        if r["ordinal"] is not None:  # a quarantined member, never an image row
            story["ordinal"] = r["ordinal"]
            stories.append(story)
            continue
        img = spark.sql(
            f"SELECT {', '.join(_IMAGE_FIELDS)} FROM {images} "
            f"WHERE sample_id = {sql_list([r['sample_id']])}"
        ).first()
        if img is not None:
            story["image"] = {k: plain(img[k]) for k in _IMAGE_FIELDS}
            story["image"]["caption"] = _first_line(story["image"]["caption"])
        if scored is not None:
            srow = spark.sql(
                f"SELECT model, score_error, scored_at{''.join(f', `{h}`' for h in heads)} "
                f"FROM ({scored}) WHERE sample_id = {sql_list([r['sample_id']])}"
            ).first()
            if srow is not None:
                story["scores"] = {k: plain(srow[k]) for k in ["model", *heads, "score_error"]}
                story["scores"]["scored_at"] = plain(srow["scored_at"])
                story["predicates"] = _predicate_verdicts(
                    spark, scored, scored_cols, r["sample_id"], rec
                )
        story["filter_rule"] = {
            "curated_version": rec.version,
            "predicates": [rec.label(p) for p in rec.predicates],
            "dedup": rec.dedup.to_dict(),
            "recorded": rec.recorded,
        }
        if r["duplicate_of"] is not None:
            story["duplicate"] = {
                "duplicate_of": r["duplicate_of"],
                "similar_to": r["similar_to"],
                "similarity": r["similarity"],
                "method": r["duplicate_method"],
                "eps": r["duplicate_eps"],
                "cluster": r["duplicate_cluster"],
            }
        group = _duplicates_of(spark, cfg, r["sample_id"], rec, as_of)
        if group is not None:
            story["kept_over"] = group
        if r["export_shard"] is not None:
            story["export"] = {
                "shard": r["export_shard"],
                "position": r["export_position"],
                "output": r["export_output"],
            }
        stories.append(story)
    return stories


def render(story: dict[str, Any]) -> str:
    """A sample's story as the lines `curator why` prints."""
    lines = [
        f"sample {story['sample_id'] or '(no id)'}  key {story['key']!r}  [{story['as_of']}]",
        f"  source     {story['shard_uri']}"
        + (f"  (member #{story['ordinal']})" if "ordinal" in story else ""),
        f"  FATE       {story['fate'].upper()} at {story['stage']}: {story['reason']}",
        f"  decided by run {story['decided_by']}",
    ]
    if "image" in story:
        im = story["image"]
        lines.append(
            f"  image      {im['image_format']} {im['width']}x{im['height']}, "
            f"{im['image_bytes']:,} bytes, sha256 {str(im['image_sha256'])[:16]}…"
        )
        if im.get("caption"):
            lines.append(f"  caption    {im['caption']!r}")
        if im.get("warnings"):
            lines.append(f"  warnings   {', '.join(im['warnings'])}")
    if "scores" in story:
        sc = story["scores"]
        vals = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in sc.items()
            if k not in ("model", "score_error", "scored_at")
        )
        lines.append(f"  scores     {vals}  (model {sc['model']})")
        if sc.get("score_error"):
            lines.append(f"  embed error {sc['score_error']}")
    rule = story.get("filter_rule", {})
    if story.get("predicates"):
        lines.append(
            f"  filter     curated version {rule.get('curated_version')}"
            + ("" if rule.get("recorded") else " (rule not recorded: the configuration's)")
        )
        for p in story["predicates"]:
            vals = ", ".join(f"{k}={v}" for k, v in p["values"].items())
            lines.append(f"    {p['verdict']:<13} {p['predicate']}    [{vals}]")
    if "duplicate" in story:
        d = story["duplicate"]
        eps = f" eps {d['eps']}" if d["eps"] is not None else ""
        lines.append(
            f"  duplicate  {d['method']}{eps}: kept sample {d['duplicate_of']}"
            f" (similar to {d['similar_to']}, similarity {d['similarity']:.4f})"
        )
    if "kept_over" in story:
        g = story["kept_over"]
        ids = ", ".join(e["sample_id"] for e in g["examples"])
        lines.append(f"  kept over  {g['duplicates']} duplicate(s): {ids}")
    if "export" in story:
        e = story["export"]
        lines.append(f"  exported   {e['output']}/{e['shard']} position {e['position']}")
    return "\n".join(lines)
