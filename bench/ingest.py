"""Ingest throughput beside a bare `webdataset` iteration over the same shards, in one run.

    python bench/ingest.py [--shards 4] [--per-shard 1000]

Prints samples/s and MB/s of both and their ratio (goal: >= 0.8 on a 2-core machine for
shards of ~1,000 samples). The Spark session starts before the clock: the ratio is about the
job, not the JVM's start-up.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def bare_webdataset(paths: list[str]) -> tuple[int, int, float]:
    """Iterate every sample with the webdataset library; return samples, bytes, seconds."""
    import webdataset as wds

    t0 = time.perf_counter()
    n = nbytes = 0
    for sample in wds.WebDataset(paths, shardshuffle=False):
        n += 1
        nbytes += sum(len(v) for k, v in sample.items() if isinstance(v, bytes))
    return n, nbytes, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import ingest
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        report = write_sample_shards(tmp / "shards", shards=args.shards, per_shard=args.per_shard)
        tars = sorted(str(p) for p in report.paths if str(p).endswith(".tar"))
        total_mb = sum(Path(p).stat().st_size for p in tars) / 1e6
        cfg = load_config(warehouse=str(tmp / "warehouse"), sets=[f"input.shards={tars}"])
        spark = build_session(cfg, app_name="bench-ingest")
        bare_n, _bare_bytes, bare_s = bare_webdataset(tars)
        t0 = time.perf_counter()
        summary = ingest.run(spark, cfg)
        job_s = time.perf_counter() - t0
        assert summary.rows_in == bare_n == report.samples, (summary.rows_in, bare_n)
        rows = [
            ("bare webdataset iteration", bare_n / bare_s, total_mb / bare_s, bare_s),
            ("curator ingest job", summary.rows_in / job_s, total_mb / job_s, job_s),
        ]
        print(f"{len(tars)} shards x {args.per_shard} samples, {total_mb:.1f} MB")
        print(f"{'':28}{'samples/s':>12}{'MB/s':>10}{'seconds':>10}")
        for name, sps, mbps, secs in rows:
            print(f"{name:28}{sps:12.1f}{mbps:10.2f}{secs:10.1f}")
        print(f"ratio ingest / bare: {rows[1][1] / rows[0][1]:.3f}  (goal >= 0.8)")
        spark.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
