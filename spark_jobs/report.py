"""`curator report --out DIR`: a static HTML page of what the pipeline did (no server).

Only small aggregates leave Spark: counts per reason, binned score histograms, group sizes,
a few quarantine examples, and the image bytes of at most `max_groups` duplicate groups (for
thumbnails). Everything else is curator_udfs.report_html, which needs no Spark. A table that
does not exist yet makes its section say "not run yet".
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.report_html import render_report, thumbnail_data_uri, write_report
from spark_jobs.config import Config
from spark_jobs.redact import redact
from spark_jobs.references import image_bytes
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import is_delta, read_table, table_path
from spark_jobs.views import head_score_columns, scored_model_id

HIST_BINS = 30


def _table(spark: SparkSession, cfg: Config, logical: str) -> DataFrame | None:
    return read_table(spark, cfg, logical) if is_delta(table_path(cfg, logical)) else None


def score_histograms(
    scores: DataFrame, columns: list[str], bins: int = HIST_BINS
) -> dict[str, dict[str, Any] | None]:
    """Per column `{lo, hi, counts}` over the non-null values (binned in Spark)."""
    out: dict[str, dict[str, Any] | None] = {}
    for c in columns:
        if c not in scores.columns:
            out[c] = None
            continue
        v = scores.where(F.col(c).isNotNull() & ~F.isnan(c))
        row = v.agg(F.min(c).alias("lo"), F.max(c).alias("hi")).first()
        if row is None or row["lo"] is None:
            out[c] = None
            continue
        lo, hi = float(row["lo"]), float(row["hi"])
        hi = hi if hi > lo else lo + 1.0
        b = F.least(F.lit(bins - 1), F.floor((F.col(c) - lo) / (hi - lo) * bins).cast("int"))
        counts = [0] * bins
        for r in v.groupBy(b.alias("b")).count().collect():
            counts[int(r["b"])] += int(r["count"])
        out[c] = {"lo": lo, "hi": hi, "counts": counts}
    return out


def quarantine_reasons(q: DataFrame, examples: int = 3) -> list[dict[str, Any]]:
    """Reasons by count, each with a few example members."""
    counts = q.groupBy("reason").count().orderBy(F.desc("count"), "reason").collect()
    out = []
    for r in counts:
        ex = (
            q.where(F.col("reason") == r["reason"])
            .orderBy("shard_uri", "ordinal")
            .select("shard_uri", "key", "member", "detail")
            .limit(examples)
            .collect()
        )
        out.append(
            {
                "reason": r["reason"],
                "count": int(r["count"]),
                "examples": [
                    {
                        "shard": Path(str(e["shard_uri"])).name,
                        "key": e["key"],
                        "member": e["member"],
                        "detail": e["detail"],
                    }
                    for e in ex
                ],
            }
        )
    return out


def cluster_sizes(dups: DataFrame) -> dict[int, int]:
    """{group size: groups}: a group is a kept sample and its duplicates, per method (and eps)."""
    groups = dups.groupBy("method", "eps", "duplicate_of").agg(
        (F.countDistinct("sample_id") + 1).alias("size")
    )
    return {int(r["size"]): int(r["count"]) for r in groups.groupBy("size").count().collect()}


def duplicate_groups(
    images: DataFrame, dups: DataFrame, max_groups: int, per_group: int = 6
) -> list[dict[str, Any]]:
    """The largest `max_groups` groups with thumbnails (kept sample first)."""
    top = (
        dups.groupBy("method", "eps", "duplicate_of")
        .agg(F.count(F.lit(1)).alias("n"))
        .orderBy(F.desc("n"), "method", "duplicate_of")
        .limit(max_groups)
        .collect()
    )
    if not top:
        return []
    keys = [(r["method"], r["eps"], r["duplicate_of"]) for r in top]
    members: dict[tuple[Any, Any, str], list[Any]] = {k: [] for k in keys}
    wanted = set()
    heads = {k[2] for k in keys}
    rows = (
        dups.where(F.col("duplicate_of").isin(list(heads)))
        .select("method", "eps", "duplicate_of", "sample_id", "similarity")
        .orderBy("sample_id")
        .collect()
    )
    for r in rows:
        k = (r["method"], r["eps"], r["duplicate_of"])
        if k in members and len(members[k]) < per_group - 1:
            members[k].append(r)
            wanted.add(r["sample_id"])
    wanted |= heads
    thumbs = {
        sid: thumbnail_data_uri(data) for sid, data in image_bytes(images, sorted(wanted)).items()
    }
    out = []
    for method, eps, kept in keys:
        label = f"{method}" + (f" eps {eps:g}" if eps is not None else "")
        out.append(
            {
                "method": label,
                "kept": {"sample_id": kept, "thumb": thumbs.get(kept)},
                "duplicates": [
                    {
                        "sample_id": r["sample_id"],
                        "thumb": thumbs.get(r["sample_id"]),
                        "similarity": r["similarity"],
                    }
                    for r in members[(method, eps, kept)]
                ],
            }
        )
    return out


SIGNAL_COLUMNS = ("clip_score", "sharpness")  # histogrammed when the scores table has them


def weight_warnings(cfg: Config) -> list[str]:
    """What a reader must know before trusting the numbers: random weights mean noise."""
    out = []
    emb = cfg.embed
    if emb.embedder_class is None and not emb.pretrained and emb.weights is None:
        out.append(
            f"random weights: the embedding model {emb.model} is random-init, so semantic "
            "duplicates and CLIP scores are not meaningful"
        )
    random_heads = [h.name for h in cfg.classifiers if h.random_init]
    if random_heads:
        out.append(
            f"random weights: the heads {', '.join(random_heads)} are random-init, so their "
            "scores are not meaningful"
        )
    return out


def lowest_clip_scores(images: DataFrame, scores: DataFrame, n: int = 8) -> list[dict[str, Any]]:
    """The `n` pairs the CLIP-score filter removes first: thumbnail, caption, score."""
    low = (
        scores.where(F.col("clip_score").isNotNull() & ~F.isnan("clip_score"))
        .select("sample_id", "clip_score")
        .orderBy("clip_score", "sample_id")
        .limit(n)
    )
    rows = low.join(images.select("sample_id", "caption"), "sample_id").collect()
    data = image_bytes(images, [r["sample_id"] for r in rows])
    return [
        {
            "sample_id": r["sample_id"],
            "thumb": thumbnail_data_uri(data.get(r["sample_id"])),
            "caption": redact(str(r["caption"] or ""))[:200],
            "clip_score": float(r["clip_score"]),
        }
        for r in sorted(rows, key=lambda r: (r["clip_score"], r["sample_id"]))
    ]


def _filter_stats(spark: SparkSession, cfg: Config) -> list[Any] | None:
    stats = _table(spark, cfg, "filter_stats")
    if stats is None:
        return None
    last = stats.agg(F.max_by("run_id", "filtered_at").alias("r")).first()
    if last is None or last["r"] is None:
        return None
    return stats.where(F.col("run_id") == last["r"]).orderBy("position").collect()


def _export_manifest(cfg: Config, output: str | None) -> dict[str, Any] | None:
    path = Path((output or cfg.export.output).removeprefix("file://")).expanduser()
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        return None


def collect_report_data(
    spark: SparkSession, cfg: Config, *, max_groups: int = 12, export_dir: str | None = None
) -> dict[str, Any]:
    """Query the tables (small aggregates only) into the plain data report_html renders."""
    images, q = _table(spark, cfg, "images"), _table(spark, cfg, "quarantine")
    scores, dups = _table(spark, cfg, "scores"), _table(spark, cfg, "duplicates")
    curated = _table(spark, cfg, "curated")
    model = scored_model_id(cfg)
    if scores is not None and "model" in scores.columns:
        scores = scores.where(F.col("model") == model)
    n_images = images.count() if images is not None else None
    reasons = quarantine_reasons(q) if q is not None else None
    n_q = sum(r["count"] for r in reasons) if reasons is not None else None

    funnel: list[dict[str, Any]] = [
        {
            "stage": "ingested",
            "count": None if n_images is None else n_images + (n_q or 0),
            "note": "samples and members read from the shards",
        },
        {
            "stage": "not quarantined",
            "count": n_images,
            "breakdown": {r["reason"]: r["count"] for r in reasons or []},
        },
    ]
    if scores is not None:
        srow = scores.agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.when(F.col("error").isNotNull(), 1).otherwise(0)).alias("errors"),
        ).first()
        n_err = int(srow["errors"] or 0) if srow else 0
        scored = (int(srow["n"]) if srow else 0) - n_err
        funnel.append(
            {
                "stage": "scored",
                "count": scored,
                "breakdown": {"decode error at embed": n_err} if n_err else {},
                "note": f"model {model}",
            }
        )
    else:
        funnel.append({"stage": "scored", "count": None})
    stats = _filter_stats(spark, cfg)
    preds = [r for r in stats or [] if r["kind"] in ("predicate", "preset")]
    dedup_row = next((r for r in stats or [] if r["kind"] == "duplicates"), None)
    if stats:
        passed = int(stats[0]["rows_out"]) + (int(dedup_row["removed"]) if dedup_row else 0)
        funnel.append(
            {
                "stage": "filtered",
                "count": passed,
                "breakdown": {r["predicate"]: int(r["removed"]) for r in preds},
                "note": "removed by each predicate on its own (they overlap)",
            }
        )
    else:
        funnel.append({"stage": "filtered", "count": None})
    n_curated = curated.count() if curated is not None else None
    dup_breakdown: dict[str, int] = {}
    if dups is not None:
        for r in dups.groupBy("method").agg(F.countDistinct("sample_id").alias("n")).collect():
            dup_breakdown[f"{r['method']} duplicates (all samples)"] = int(r["n"])
    funnel.append(
        {
            "stage": "deduplicated",
            "count": n_curated,
            "breakdown": ({"removed as duplicates": int(dedup_row["removed"])} if dedup_row else {})
            | dup_breakdown,
            "note": "the curated table",
        }
    )
    manifest = _export_manifest(cfg, export_dir)
    funnel.append(
        {
            "stage": "exported",
            "count": int(manifest["samples"]) if manifest else None,
            "note": f"{manifest['shard_count']} shards" if manifest else "",
        }
    )
    columns = head_score_columns(cfg)
    if scores is not None:
        columns += [c for c in SIGNAL_COLUMNS if c in scores.columns]
    histograms = (
        score_histograms(scores, columns) if scores is not None else dict.fromkeys(columns)
    )
    low_clip = (
        lowest_clip_scores(images, scores)
        if scores is not None and images is not None and "clip_score" in scores.columns
        else None
    )
    return {
        "title": "Curation report",
        "subtitle": redact(
            f"warehouse {cfg.warehouse_path} · database {cfg.database} · "
            f"generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        ),
        "warnings": weight_warnings(cfg),
        "funnel": funnel,
        "histograms": histograms,
        "lowest_clip_scores": low_clip,
        "predicates": [redact(p) for p in cfg.filter.predicates],
        "cluster_sizes": cluster_sizes(dups) if dups is not None else None,
        "duplicate_groups": (
            duplicate_groups(images, dups, max_groups)
            if dups is not None and images is not None
            else None
        ),
        "quarantine": reasons,
    }


def run(
    spark: SparkSession, cfg: Config, *, out: str | Path = "report", max_groups: int = 12
) -> Summary:
    """Write `<out>/index.html` from the warehouse's tables."""
    summary = Summary(job="report", run_id=new_run_id("report"), unit="sections")
    data = collect_report_data(spark, cfg, max_groups=max_groups)
    path = write_report(out, render_report(data))
    summary.rows_in = summary.rows_written = 5
    summary.extra["report"] = str(path.resolve())
    return summary.finish()


if __name__ == "__main__":  # spark-submit spark_jobs/report.py ARGS
    from spark_jobs.cli import main

    main("report")
