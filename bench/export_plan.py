"""Export's shard plan: made in Spark (one range, then ranges) against the driver-side plan it
replaced (every sample's sizes collected, packed as Python lists, the assignment sent back
with createDataFrame), side by side on the same N-row size table.

A curated-shaped table of N rows (default 2M: sample_id, image_bytes, caption, meta; no image
bytes, only their sizes, which is all a plan reads) is generated in Spark and written as
Parquet. Each way then runs in a child process of its own with a fresh session, so the peak
RSS of the driver's Python process (`ru_maxrss`) is that way's alone: the Spark plan persisted
and counted (what export does before writing), the driver plan collected, packed and turned
back into a DataFrame (counted). The Spark plan runs twice: as one range (one task, the plan
export makes up to 2M samples) and in ranges of `--rows-per-range` sample_id prefixes packed
side by side (what it makes above). Session start-up is timed apart. `--no-old` skips the
driver plan (at 10^8 rows it would not fit this machine).

    .venv/bin/python bench/export_plan.py [--rows 2000000] [--samples-per-shard 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARD_BYTES = 1_000_000_000


def _session(work: Path, name: str):  # type: ignore[no-untyped-def]
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    cfg = load_config(sets=[], warehouse=str(work / f"warehouse-{name}"))
    return build_session(cfg, app_name=f"bench-export-plan-{name}")


def child(way: str, data: str, samples_per_shard: int, rows_per_range: int) -> None:
    """Run one way over the table at `data`; print JSON (seconds, shards, peak RSS)."""
    t0 = time.perf_counter()
    spark = _session(Path(data).parent, way)
    session_s = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    df = spark.read.parquet(data)
    t1 = time.perf_counter()
    if way.startswith("spark"):
        from spark_jobs.export import shard_plan

        plan = shard_plan(df, samples_per_shard, SHARD_BYTES, rows_per_range=rows_per_range)
        rows, shards = plan.rows.count(), plan.shards
    else:  # the driver-side plan export used before (stop 37 and earlier)
        from pyspark.sql import functions as F

        from curator_udfs.export_shards import sample_tar_estimate, task_of_shard
        from curator_udfs.wds_writer import plan_shards

        sizes = (
            df.select(
                "sample_id",
                F.coalesce("image_bytes", F.lit(0)).alias("img"),
                F.coalesce(F.octet_length("caption"), F.lit(0)).alias("txt"),
                F.coalesce(F.octet_length("meta"), F.lit(0)).alias("meta"),
            )
            .orderBy("sample_id")
            .collect()
        )
        est = [sample_tar_estimate(r["img"], r["txt"], r["meta"]) for r in sizes]
        shard_of = plan_shards(est, samples_per_shard, SHARD_BYTES)
        shards = shard_of[-1] + 1 if shard_of else 0
        assign = spark.createDataFrame(
            [
                (r["sample_id"], s, task_of_shard(s, shards, 2))
                for r, s in zip(sizes, shard_of, strict=True)
            ],
            "sample_id STRING, _shard INT, _task INT",
        )
        rows = assign.count()
    seconds = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"way": way, "session_s": session_s, "seconds": seconds, "rows": rows,
                      "shards": shards, "rss_before_mb": rss0 / 1024,
                      "peak_rss_mb": peak / 1024}))  # fmt: skip
    spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--samples-per-shard", type=int, default=10_000)
    ap.add_argument("--rows-per-range", type=int, default=250_000,
                    help="planning range size of the ranged run (export's: 2,000,000)")  # fmt: skip
    ap.add_argument("--old", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the driver-side plan it replaced")  # fmt: skip
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        per_range = args.rows if args.child[0] == "spark-one" else args.rows_per_range
        child(args.child[0], args.child[1], args.samples_per_shard, per_range)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-export-plan-"))
    data = work / "sizes"
    spark = _session(work, "gen")
    t0 = time.perf_counter()
    spark.range(args.rows, numPartitions=8).selectExpr(
        "lpad(lower(hex(xxhash64(id))), 24, '0') AS sample_id",
        "CAST(1000 + pmod(xxhash64(id, 1), 90000) AS BIGINT) AS image_bytes",
        "repeat('c', CAST(pmod(id, 120) AS INT)) AS caption",
        '\'{"key": "k"}\' AS meta',
    ).write.parquet(str(data))
    spark.stop()
    print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    results = []
    ways = ("spark-one", "spark-ranges", "driver") if args.old else ("spark-one", "spark-ranges")
    for way in ways:
        cmd = [sys.executable, __file__, "--child", way, str(data), "--rows", str(args.rows),
               "--rows-per-range", str(args.rows_per_range),
               "--samples-per-shard", str(args.samples_per_shard)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(f"{way}: failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
            continue
        results.append(json.loads(lines[-1]))
    print(f"\nexport plan of {args.rows:,} samples, {args.samples_per_shard:,} per shard")
    print(f"{'':34}{'session s':>10}{'plan s':>10}{'shards':>8}{'driver Python peak RSS':>24}")
    for r in results:
        label = {
            "spark-one": "Spark, one range (one task)",
            "spark-ranges": f"Spark, ranges of ~{args.rows_per_range:,}",
            "driver": "driver (collect, lists)",
        }[r["way"]]
        rss = f"{r['peak_rss_mb']:,.0f} MB (+{r['peak_rss_mb'] - r['rss_before_mb']:,.0f})"
        print(f"{label:34}{r['session_s']:>10.1f}{r['seconds']:>10.1f}{r['shards']:>8}{rss:>24}")
    counts = {r["way"]: r["shards"] for r in results}
    if "driver" in counts and counts["driver"] != counts.get("spark-one"):
        raise SystemExit("the one-range plan and the driver's disagree on the shard count")


if __name__ == "__main__":
    main()
