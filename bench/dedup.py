"""Semantic dedup benchmark: the Spark job against an exact all-pairs search, in one run.

Part 1 (default n = 100k) runs the real job, ``spark_jobs.dedup.run`` with
``dedup.methods=[semantic]``, on local Spark over a Delta ``scores`` table of synthetic
CLIP-like 768-d embeddings with planted near-duplicates (``bench.synthetic``), twice: nearest
coarse centroid only (no border margins), and with the defaults (up to three coarse centroids
within ``dedup.second_margin``, ``dedup.fine_margin`` at fine borders). The pairs it writes to
``duplicate_pairs`` are compared with an exact blocked all-pairs search (``pairs_above``, the
same threshold, measured in this process): recall, precision, planted-pair recall, speed-up.
Before those two full runs (``full=True``), the incremental path: the job on a seeded 90 % of
the rows, the other 10 % appended, the job again (stored centroids, touched groups only); its
wall time against the full run's is the incremental cost. The JVM keeps getting faster run
after run, so the incremental run is timed twice, once before the full runs and once after
them (on a copy of the tables as they were before the first), and their mean is compared.

Part 2 (default n = 1M) runs ``bench/dedup_core.py`` (the same functions, in process, no
Spark) in a subprocess: time, peak memory and planted recall, exact cost extrapolated as n^2.
1M x 768 through local Spark on a 2-core machine (3 GB of embeddings through Arrow twice, plus
writing them to Delta) does not fit the ~10 minutes this benchmark is meant to take, so the
1M numbers are the in-process pipeline's, as its output says.

Above ``--exact-max`` rows the exact search covers every pair touching ``--exact-sample``
seeded rows (recall and precision over those pairs; the all-pairs time extrapolated from it),
so the job can be measured at 1M without an n^2 search of hours:

    .venv/bin/python bench/dedup.py                      # 100k via Spark, then 1M in process
    .venv/bin/python bench/dedup.py --n 1000000 --large-n 0 --defaults-only
    .venv/bin/python bench/dedup.py --n 20000 --large-n 0
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import mixture_embeddings  # noqa: E402
from curator_udfs.similarity import pairs_above  # noqa: E402


def _keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return np.unique(lo * n + hi)


def sampled_exact(
    x: np.ndarray, threshold: float, rows: np.ndarray, block: int = 2048
) -> tuple[np.ndarray, float]:
    """Exact pairs (keys) with at least one end in `rows`, and the seconds the full exact
    search would take, extrapolated from this one: `len(rows) x n` dot products of the
    `n^2 / 2` an all-pairs search computes (the same float32 blocked tiles as pairs_above)."""
    n = x.shape[0]
    thr = np.float32(threshold)
    t = time.perf_counter()
    found_i, found_j = [], []
    for start in range(0, rows.size, block):
        r = rows[start : start + block]
        xr = x[r]  # gathered once per row block, not once per tile
        for bj in range(0, n, 8192):
            ii, jj = np.nonzero(xr @ x[bj : bj + 8192].T >= thr)
            jj = jj + bj
            keep = r[ii] != jj
            found_i.append(r[ii][keep])
            found_j.append(jj[keep])
    seconds = time.perf_counter() - t
    keys = _keys(np.concatenate(found_i), np.concatenate(found_j), n)
    return keys, seconds * n / (2 * rows.size)


def touching(keys: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The pair keys with at least one end in `rows`."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return keys[mask[keys // n] | mask[keys % n]]


def write_tables(spark, cfg, x: np.ndarray, ids: np.ndarray, mode: str = "overwrite") -> None:  # noqa: ANN001
    """Write `scores` (model "bench") and a minimal `images` table with pyarrow → Delta
    (`mode` "append": new rows into the existing tables)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_jobs.catalog import register_tables
    from spark_jobs.tables import table_path

    n, d = x.shape
    tmp = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    atexit.register(shutil.rmtree, tmp, True)  # the staged parquet (3 GB at 1M)
    emb = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)), pa.array(x.reshape(-1))
    )
    at = datetime(2024, 1, 1, tzinfo=UTC)
    scores = pa.table(
        {
            "sample_id": pa.array(ids.tolist(), pa.string()),
            "model": pa.array(["bench"] * n, pa.string()),
            "embedding": emb,
            "embedding_dim": pa.array(np.full(n, d, np.int32)),
            "aesthetic_score": pa.array(np.random.default_rng(1).uniform(0, 10, n)),
            "nsfw_score": pa.array(np.zeros(n)),
            "error": pa.array([None] * n, pa.string()),
            "scored_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
            "run_id": pa.array(["bench"] * n, pa.string()),
        }
    )
    pq.write_table(scores, tmp / "scores.parquet")
    images = pa.table(
        {
            "sample_id": pa.array(ids.tolist(), pa.string()),
            "image_sha256": pa.array(ids.tolist(), pa.string()),
            "width": pa.array(np.full(n, 256, np.int32)),
            "height": pa.array(np.full(n, 256, np.int32)),
            # what the `fates` view reads of images (register_tables builds it)
            "shard_uri": pa.array(["bench.tar"] * n, pa.string()),
            "key": pa.array(ids.tolist(), pa.string()),
            "run_id": pa.array(["bench"] * n, pa.string()),
        }
    )
    pq.write_table(images, tmp / "images.parquet")
    for name in ("scores", "images"):
        spark.read.parquet(str(tmp / f"{name}.parquet")).write.format("delta").mode(mode).save(
            table_path(cfg, name)
        )
    register_tables(spark, cfg)


class Increment:
    """The incremental run's numbers (its line is formatted once the full run's wall is in):
    `walls` and `sems` of its two timings, before and after the full runs; `wall` and `sem`
    their means."""

    def __init__(self, first: float, walls: list[float], sems: list[float], extra: dict,
                 keys: np.ndarray):  # fmt: skip
        self.first, self.walls, self.sems, self.extra = first, walls, sems, extra
        self.wall, self.sem = float(np.mean(walls)), float(np.mean(sems))
        self.keys = keys  # the pairs it wrote, as keys: its recall is measured like a full run's

    def format(self, *, full_wall: float, ratio: float) -> str:
        e = self.extra
        runs = " and ".join(f"{w:.1f}s" for w in self.walls)
        return (
            f"incremental: first run on 90 % {self.first:.1f}s; + 10 % new rows {self.wall:.1f}s "
            f"(mean of {runs}, before and after the full runs; "
            f"semantic {self.sem:.1f}s, coarse groups touched {e.get('coarse_groups_touched')}"
            f"/{e.get('coarse_groups_total')}, representatives compared "
            f"{e.get('representatives_compared')}, centroids {e.get('centroids')}) = "
            f"{ratio:.2f} x the full run on all rows ({full_wall:.1f}s)"
        )


def _incremental(spark, cfg, x: np.ndarray, ids: np.ndarray, new: np.ndarray) -> tuple:  # noqa: ANN001
    """The job on the first 90 %, then the 10 % appended and the job again (incremental):
    (first wall, its wall, its summary, the config of a copy of the tables as they were
    before it, for a second timing later)."""
    from spark_jobs import dedup
    from spark_jobs.tables import db_dir

    t = time.perf_counter()
    dedup.run(spark, cfg)
    first = time.perf_counter() - t
    write_tables(spark, cfg, x[new], ids[new], mode="append")
    again = cfg.model_copy(update={"database": f"{cfg.database}_again"})
    shutil.copytree(db_dir(cfg), db_dir(again))
    t = time.perf_counter()
    summary = dedup.run(spark, cfg)
    wall = time.perf_counter() - t
    print(f"  incremental: first {first:.0f}s, +10 % {wall:.0f}s", flush=True)
    return first, wall, summary, again


def _incremental_again(spark, again, first: float, wall: float, summary, n: int) -> Increment:  # noqa: ANN001
    """The incremental run once more, on the copy (after the full runs), and both timings."""
    from spark_jobs import dedup
    from spark_jobs.catalog import register_tables
    from spark_jobs.tables import db_dir

    register_tables(spark, again)
    t = time.perf_counter()
    second = dedup.run(spark, again)
    wall2 = time.perf_counter() - t
    print(f"  incremental again: {wall2:.0f}s", flush=True)
    sems = [s.extra["method_seconds"]["semantic"] for s in (summary, second)]
    keys = _pair_keys(spark, again, n)  # the full runs replaced the first one's pairs
    spark.sql(f"DROP SCHEMA IF EXISTS {again.database} CASCADE")  # (its tables are external)
    shutil.rmtree(db_dir(again), ignore_errors=True)  # gigabytes at 1M, before part 2 runs
    return Increment(first, [wall, wall2], sems, dict(second.extra), keys)


def _pair_keys(spark, cfg, n: int) -> np.ndarray:  # noqa: ANN001
    """The semantic pairs in `duplicate_pairs`, as keys (`_keys`)."""
    from spark_jobs.tables import read_table

    pairs = (
        read_table(spark, cfg, "duplicate_pairs")
        .where("method = 'semantic'")
        .select("a", "b")
        .toPandas()
    )
    ia = pairs["a"].str.slice(1).astype(np.int64).to_numpy()
    ib = pairs["b"].str.slice(1).astype(np.int64).to_numpy()
    return _keys(ia, ib, n)


def spark_part(args: argparse.Namespace) -> list[str]:
    """Part 1: the job twice (nearest only, then the border defaults) vs exact search."""
    from spark_jobs import dedup
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    n = args.n
    t0 = time.perf_counter()
    x, planted = mixture_embeddings(n, args.d, seed=args.seed, planted_fraction=0.02)
    ids = np.array([f"s{i:09d}" for i in range(n)], dtype=object)
    gen_s = time.perf_counter() - t0
    coarse_k = max(1, n // 5000)
    sample = max(256 * coarse_k, 10_000)
    eps = round(1.0 - args.threshold, 6)
    warehouse = Path(tempfile.mkdtemp(prefix="bench-dedup-wh-"))
    atexit.register(shutil.rmtree, warehouse, True)  # also when a run fails
    common = [
        "database=bench",
        f"spark.conf={{spark.master: 'local[{args.cores}]', spark.sql.shuffle.partitions: 8}}",
        "dedup.methods=[semantic]",
        f"dedup.eps=[{eps}]",
        f"dedup.coarse_k={coarse_k}",
        f"dedup.sample_size={sample}",
        f"dedup.max_cluster_size={args.max_cluster_size}",
        "dedup.write_pairs=true",
        "embed.model=bench",
    ]
    cfg = load_config(sets=common, warehouse=str(warehouse))
    spark = build_session(cfg, app_name="bench-dedup")
    # 10 % of the rows (seeded, spread over the data) arrive in a second increment
    new = np.zeros(n, dtype=bool)
    new[np.random.default_rng(args.seed + 1).choice(n, size=n // 10, replace=False)] = True
    t1 = time.perf_counter()
    write_tables(spark, cfg, x[~new], ids[~new])
    write_s = time.perf_counter() - t1
    print(
        f"part 1: n={n} d={args.d} planted={len(planted)} threshold={args.threshold} "
        f"coarse_k={coarse_k} coarse_sample={sample} max_cluster_size={args.max_cluster_size} "
        f"local[{args.cores}] (generate {gen_s:.0f}s, write Delta {write_s:.0f}s)",
        flush=True,
    )
    inc_first, inc_wall, inc_summary, again = _incremental(spark, cfg, x, ids, new)
    results = {}
    variants = (
        ("spark nearest only", ["dedup.second_margin=null", "dedup.fine_margin=null"]),
        ("spark defaults", []),
    )
    for label, sets in variants[1:] if args.defaults_only else variants:
        run_cfg = load_config(sets=[*common, *sets], warehouse=str(warehouse))
        t = time.perf_counter()
        summary = dedup.run(spark, run_cfg, full=True)
        wall = time.perf_counter() - t
        results[label] = (_pair_keys(spark, run_cfg, n), summary, wall)
        print(f"  {label}: {wall:.0f}s", flush=True)
    incremental = _incremental_again(spark, again, inc_first, inc_wall, inc_summary, n)
    spark.stop()

    planted_keys = _keys(planted[:, 0], planted[:, 1], n)
    if n <= args.exact_max:
        t = time.perf_counter()
        i, j, _ = pairs_above(ids, x, args.threshold)
        exact_s = time.perf_counter() - t
        exact_keys = _keys(i, j, n)
        exact_label = "exact all-pairs (1 proc)"
        sampled: np.ndarray | None = None
    else:  # every pair touching a seeded sample of rows, exact time extrapolated from it
        sampled = np.sort(
            np.random.default_rng(args.seed + 2).choice(n, size=args.exact_sample, replace=False)
        )
        exact_keys, exact_s = sampled_exact(x, args.threshold, sampled)
        exact_label = "exact (extrapolated)"
        print(
            f"  exact search: every pair touching {args.exact_sample:,} sampled rows "
            f"({exact_keys.size:,} pairs); all pairs would take ~{exact_s:.0f}s",
            flush=True,
        )
    lines = []
    inc_summary = SimpleNamespace(
        extra={**incremental.extra, "method_seconds": {"semantic": incremental.sem}}
    )
    results["spark incremental +10 %"] = (incremental.keys, inc_summary, incremental.wall)
    for label, (keys, summary, wall) in results.items():
        sem_s = summary.extra["method_seconds"]["semantic"]
        planted_recall = np.isin(planted_keys, keys).mean()  # every planted pair is known
        if sampled is not None:
            keys = touching(keys, sampled, n)
        hit = np.intersect1d(keys, exact_keys).size
        lines.append(
            f"{label:<26}{n:>9}{wall:>9.1f}{sem_s:>9.1f}{exact_s / sem_s:>9.1f}{keys.size:>9}"
            f"{hit / max(exact_keys.size, 1):>9.4f}{hit / max(keys.size, 1):>11.4f}"
            f"{planted_recall:>9.4f}"
            f"{summary.extra['fine_clusters']:>7}/{summary.extra['largest_fine_cluster']:<6}"
        )
    full_wall = results["spark defaults"][2]  # the incremental row's speed-up: its own time
    lines.append(incremental.format(full_wall=full_wall, ratio=incremental.wall / full_wall))
    known = planted_keys if sampled is None else touching(planted_keys, sampled, n)
    planted_exact = np.isin(known, exact_keys).mean()  # above the threshold: not every one
    lines.append(
        f"{exact_label:<26}{n:>9}{exact_s:>9.1f}{exact_s:>9.1f}{1.0:>9.1f}"
        f"{exact_keys.size:>9}{1.0:>9.4f}{1.0:>11.4f}{planted_exact:>9.4f}"
    )
    if sampled is not None:
        lines.append(
            f"(n > --exact-max {args.exact_max:,}: recall, precision and pairs count only pairs "
            f"touching the {sampled.size:,} sampled rows; planted recall is over every planted "
            "pair, the exact row's over those touching the sample)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows through the Spark job (0 = skip)")
    p.add_argument("--large-n", type=int, default=1_000_000, help="rows in process (0 = skip)")
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--max-cluster-size", type=int, default=2000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exact-max",
        type=int,
        default=300_000,
        help="above this n the exact search covers only the pairs touching --exact-sample rows",
    )
    p.add_argument("--exact-sample", type=int, default=20_000)
    p.add_argument(
        "--defaults-only",
        action="store_true",
        help="skip the nearest-only run (one job run less at large n)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if args.n:
        lines = spark_part(args)
        print()
        print(
            f"{'method':<26}{'n':>9}{'wall s':>9}{'dedup s':>9}{'speed-up':>9}{'pairs':>9}"
            f"{'recall':>9}{'precision':>11}{'planted':>9}  fine/largest"
        )
        print("\n".join(lines))
        print(
            "wall s = whole job (Delta reads, coarse fit, assign, fine, resolve, writes); "
            "dedup s = its semantic stage; speed-up = exact s / dedup s; recall and precision "
            "of the job's pairs against the exact search at the same threshold"
        )
    if args.large_n:
        print(f"\npart 2: n={args.large_n} in process (bench/dedup_core.py, no Spark)", flush=True)
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "dedup_core.py"),
            "--n",
            str(args.large_n),
            "--d",
            str(args.d),
            "--threshold",
            str(args.threshold),
            "--max-cluster-size",
            str(args.max_cluster_size),
            "--seed",
            str(args.seed),
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
