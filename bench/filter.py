"""Bytes read by a selective score query, with and without Z-ordering the scores table.

A `scores`-shaped Delta table of N rows (default 1M) is generated in Spark (random scores;
random 64-d float embeddings instead of 768-d to keep it quick: the embedding column makes up
most of the bytes either way, as in the real table), written as F files with rows in random
order, so every file spans the whole score range. The query
`aesthetic_score >= 9.5 AND nsfw_score < 0.05` (about 0.25 % of rows) runs twice: on the table
as written, then after `OPTIMIZE ... ZORDER BY (aesthetic_score, nsfw_score)` (with
`optimize.maxFileSize` set so the file count stays about the same). Bytes read are the scan's
own metrics after Delta's data skipping (`filesSize` / `numFiles` of the executed
FileSourceScanExec, AQE off so the plan is final); table bytes are `DESCRIBE DETAIL`'s
sizeInBytes. Printed side by side in one run.

    .venv/bin/python bench/filter.py [--rows 1000000] [--dim 64] [--files 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUERY = "aesthetic_score >= 9.5 AND nsfw_score < 0.05"


def _scan_metrics(spark, df) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Run `df` and return numFiles / filesSize / numOutputRows of its file scan."""
    df.collect()
    plan = df._jdf.queryExecution().executedPlan()
    leaves = plan.collectLeaves()
    for i in range(leaves.size()):
        leaf = leaves.apply(i)
        if "Scan" in str(leaf.nodeName()):
            metrics = leaf.metrics()
            return {
                k: int(metrics.apply(k).value())
                for k in ("numFiles", "filesSize", "numOutputRows")
                if metrics.contains(k)
            }
    raise RuntimeError("no file scan in the plan")


def _detail(spark, path: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    row = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    return int(row["numFiles"]), int(row["sizeInBytes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--files", type=int, default=64)
    args = ap.parse_args()

    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    work = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    cfg = load_config(
        sets=["spark.conf={spark.sql.adaptive.enabled: false, spark.sql.shuffle.partitions: 8}"],
        warehouse=str(work / "warehouse"),
    )
    spark = build_session(cfg, app_name="bench-filter")
    path = str(work / "scores")
    t0 = time.perf_counter()
    df = spark.range(args.rows).selectExpr(
        "lpad(hex(id), 24, '0') AS sample_id",
        "'bench-model' AS model",
        f"transform(sequence(1, {args.dim}), x -> cast(rand() AS float)) AS embedding",
        f"{args.dim} AS embedding_dim",
        "rand(1) * 10 AS aesthetic_score",
        "rand(2) AS nsfw_score",
        "CAST(NULL AS STRING) AS error",
        "current_timestamp() AS scored_at",
        "'bench' AS run_id",
    )
    df.repartition(args.files).write.format("delta").save(path)
    gen_s = time.perf_counter() - t0

    def measure() -> dict[str, float]:
        files, size = _detail(spark, path)
        q = spark.read.format("delta").load(path).where(QUERY).select("sample_id")
        m = _scan_metrics(spark, q)
        return {"table_files": files, "table_bytes": size, **m, "fraction": m["filesSize"] / size}

    before = measure()
    t1 = time.perf_counter()
    spark.conf.set(
        "spark.databricks.delta.optimize.maxFileSize", str(before["table_bytes"] // args.files)
    )
    spark.sql(f"OPTIMIZE delta.`{path}` ZORDER BY (aesthetic_score, nsfw_score)")
    opt_s = time.perf_counter() - t1
    after = measure()
    print(f"\nscores table: {args.rows:,} rows, {args.dim}-d embeddings; query: {QUERY}")
    print(f"generated in {gen_s:.0f} s; OPTIMIZE ZORDER BY took {opt_s:.0f} s\n")
    print(f"{'':28}{'as written':>16}{'Z-ordered':>16}")
    rows = [
        ("table files", "table_files", "{:,.0f}"),
        ("table bytes", "table_bytes", "{:,.0f}"),
        ("files read", "numFiles", "{:,.0f}"),
        ("bytes read", "filesSize", "{:,.0f}"),
        ("rows out of the scan", "numOutputRows", "{:,.0f}"),
        ("bytes read / table bytes", "fraction", "{:.2%}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:28}{fmt.format(before[key]):>16}{fmt.format(after[key]):>16}")
    spark.stop()


if __name__ == "__main__":
    main()
