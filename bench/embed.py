"""Embed throughput: the `embed` job (real local Spark + Delta) beside a bare PyTorch loop.

Same model, same images, same batch size and decode threads, decoding included, in one run.
The job number is end to end (pending-image anti join, shuffle of the image bytes, Python
workers loading the model, mapInPandas, Delta MERGE); the bare loop is one process calling
the same embedder on the same bytes, model loaded before timing starts (so the ratio is
conservative). The job runs one Python worker per core with one torch thread each (Spark sets
OMP_NUM_THREADS to spark.task.cpus); the bare loop gives torch all cores.

    .venv/bin/python bench/embed.py                       # test_vit, ~2000 sample images
    .venv/bin/python bench/embed.py --model vit_large_patch14_clip_quickgelu_224 --n 20

Models are random init (pretrained false): throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    """Parse options, prepare shards and tables, time both paths, print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="test_vit", help="timm model name (random init)")
    ap.add_argument("--n", type=int, default=2000, help="number of images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="decode threads per worker")
    ap.add_argument("--workdir", default=None, help="keep shards and warehouse here")
    args = ap.parse_args()

    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import embed, ingest
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session
    from spark_jobs.tables import read_table

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-embed-"))
    per_shard = min(500, args.n)
    shards = math.ceil(args.n / per_shard)
    write_sample_shards(work / "shards", shards=shards, per_shard=per_shard, seed=0)
    sets = [
        f"embed.model={args.model}",
        "embed.pretrained=false",
        f"embed.batch_size={args.batch_size}",
        f"embed.num_threads_per_worker={args.threads}",
        f"embed.arrow_batch_size={max(args.batch_size, 256)}",
        "classifiers=[]",
    ]
    cfg = load_config(sets=sets, warehouse=str(work / "warehouse"))
    spark = build_session(cfg, app_name="bench-embed")
    ingest.run(spark, cfg, inputs=[str(work / "shards")])
    images = read_table(spark, cfg, "images").select("image").limit(args.n).collect()
    blobs = [bytes(r.image) for r in images]
    n = len(blobs)
    cores = os.cpu_count() or 1
    print(
        f"{n} images, model {args.model} (random init), batch {args.batch_size}, "
        f"{args.threads} decode threads, {cores} cores",
        flush=True,
    )

    # Bare PyTorch loop: same embedder class, same bytes, decode + preprocess + forward.
    import torch

    from curator_udfs.embedders import TimmImageEmbedder

    torch.set_num_threads(cores)
    bare = TimmImageEmbedder(
        args.model,
        pretrained=False,
        batch_size=args.batch_size,
        num_threads_per_worker=args.threads,
    ).prepare("cpu")
    t0 = time.perf_counter()
    _emb, errors = bare.embed_bytes(blobs)
    bare_s = time.perf_counter() - t0
    bare.close()
    bare_rate = n / bare_s
    failed = sum(e is not None for e in errors)
    print(f"bare loop: {bare_rate:8.1f} images/s ({bare_s:.1f} s, {failed} errors)")

    # The job, on a warehouse holding exactly these images.
    summary = embed.run(spark, cfg)
    job_rate = summary.rows_in / summary.seconds
    phase = summary.extra.get("embed_seconds") or summary.seconds
    print(
        f"embed job: {job_rate:8.1f} images/s end to end ({summary.seconds:.1f} s, "
        f"{summary.rows_in} images; embed phase {summary.rows_in / phase:.1f} images/s "
        f"in {phase:.1f} s), device {summary.extra['device']}"
    )
    print(
        f"ratio job/bare: {job_rate / bare_rate:.2f} end to end, "
        f"{summary.rows_in / phase / bare_rate:.2f} embed phase only"
    )
    spark.stop()


if __name__ == "__main__":
    main()
