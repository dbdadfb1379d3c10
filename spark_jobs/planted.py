"""`curator dedup-recall PLANTED`: how well each dedup method found the planted duplicates.

For sample shards (`curator sample-shards`, whose `_planted.json` lists the copies it made):
the duplicates table, keyed back to the shards' keys, scored by curator_udfs.planted_eval.
The duplicates of those shards are collected to the driver: a check for test and demo data,
not for a production lake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from curator_udfs.planted_eval import score_methods
from spark_jobs.config import Config, ConfigError
from spark_jobs.tables import is_delta, read_table, table_path


def score_against(spark: SparkSession, cfg: Config, planted_file: Path) -> list[dict[str, Any]]:
    """One row per (method, eps): planted and found pairs, recall and precision."""
    planted = json.loads(Path(planted_file).read_text())
    for table in ("images", "duplicates"):
        if not is_delta(table_path(cfg, table)):
            raise ConfigError(f"no {table} table in {cfg.warehouse_path}; run `curator run` first")
    keys = read_table(spark, cfg, "images").select("sample_id", "key")
    dups = read_table(spark, cfg, "duplicates").select("sample_id", "duplicate_of", "method", "eps")
    rows = (
        dups.join(keys, "sample_id")
        .join(keys.withColumnRenamed("sample_id", "duplicate_of").withColumnRenamed("key", "of"),
              "duplicate_of")  # fmt: skip
        .select("key", "of", "method", F.col("eps").cast("double").alias("eps"))
        .collect()
    )
    found = [(r["key"], r["of"], r["method"], r["eps"]) for r in rows]
    runs: list[tuple[str, float | None]] = [(m, None) for m in cfg.dedup.methods if m != "semantic"]
    if "semantic" in cfg.dedup.methods:
        runs += [("semantic", float(e)) for e in cfg.dedup.eps]
    return [s.as_dict() for s in score_methods(planted, found, runs)]


def render(scores: list[dict[str, Any]]) -> str:
    """A small table: method, eps, pairs planted / found / correct, recall, precision."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"{'method':<11}{'eps':>6}{'planted':>9}{'found':>7}{'correct':>9}"
             f"{'recall':>8}{'precision':>11}"]  # fmt: skip
    for s in scores:
        eps = "" if s["eps"] is None else f"{s['eps']:g}"
        lines.append(
            f"{s['method']:<11}{eps:>6}{s['true_pairs']:>9}{s['found_pairs']:>7}"
            f"{s['correct_pairs']:>9}{pct(s['recall']):>8}{pct(s['precision']):>11}"
        )
    if not scores:
        lines.append("(no duplicates found by any method)")
    return "\n".join(lines)
