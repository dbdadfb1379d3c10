"""Shuffle bytes of `embed`: two checkouts (e.g. main before and this branch after) side by side.

Each checkout runs in its own process on the same shards: ingest 4 shards x 500 images, embed
them (the model has no scores yet), ingest one more shard, embed again (incremental: the
model has rows). For each embed it prints seconds, images/s and the shuffle bytes Spark wrote
(summed over the run's stages from the driver's status store), next to the bytes of `images`.

    .venv/bin/python bench/embed_shuffle.py --before /work/main --after .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETS = [
    "embed.model=test_vit",
    "embed.pretrained=false",
    "embed.batch_size=64",
    "embed.num_threads_per_worker=2",
    "embed.arrow_batch_size=256",
    "classifiers=[]",
    "spark.conf={spark.master: 'local[2]'}",
]


def _stages(spark: Any) -> dict[int, int]:
    """{stage id: shuffle bytes written} of every stage the application ran so far."""
    store = spark.sparkContext._jsc.sc().statusStore()
    defaults = [getattr(store, f"stageList$default${i}")() for i in range(2, 6)]
    stages = store.stageList(None, *defaults)  # a Scala Seq
    found = (stages.apply(i) for i in range(stages.size()))
    return {int(s.stageId()): int(s.shuffleWriteBytes()) for s in found}


def _embed(spark: Any, cfg: Any) -> dict[str, Any]:
    from spark_jobs import embed

    seen = _stages(spark)
    summary = embed.run(spark, cfg)
    shuffled = sum(b for sid, b in _stages(spark).items() if sid not in seen)
    return {
        "images": summary.rows_in,
        "seconds": round(summary.seconds, 1),
        "images_per_s": round(summary.rows_in / summary.seconds, 1),
        "shuffle_bytes": shuffled,
    }


def child(work: Path, label: str) -> None:
    """Run in one checkout (on sys.path): ingest, embed, ingest more, embed; print JSON."""
    from spark_jobs import ingest
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    cfg = load_config(sets=SETS, warehouse=str(work / f"wh-{label}"))
    spark = build_session(cfg, app_name=f"bench-embed-shuffle-{label}")
    ingest.run(spark, cfg, inputs=[str(work / "a")])
    path = str(work / f"wh-{label}" / "curator.db" / "images").replace("`", "``")
    size = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    first = _embed(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(work / "b")])
    second = _embed(spark, cfg)
    image_bytes = int(size["sizeInBytes"]) if size else 0
    import spark_jobs.embed

    print(json.dumps({"label": label, "code": spark_jobs.embed.__file__, "first": first,
                      "images_table_bytes": image_bytes, "incremental": second}))  # fmt: skip
    spark.stop()


def main() -> None:
    """Write the shards once, run each checkout in turn, print both side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="/work/main", help="checkout measured first")
    ap.add_argument("--after", default=".", help="checkout measured second")
    ap.add_argument("--child", nargs=2, metavar=("WORKDIR", "LABEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from curator_udfs.sample_shards import write_sample_shards

    work = Path(tempfile.mkdtemp(prefix="bench-embed-shuffle-"))
    write_sample_shards(work / "a", shards=4, per_shard=500, seed=0)
    write_sample_shards(work / "b", shards=1, per_shard=500, seed=1)
    print(f"nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    results = []
    for label, checkout in (("before", args.before), ("after", args.after)):
        root = Path(checkout).resolve()
        env = {**os.environ, "PYTHONPATH": str(root), "PYSPARK_PYTHON": sys.executable}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(work), label],
            cwd=root, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode:
            sys.exit(f"{label} ({root}) failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['label']}: {r['code']}")
        for phase in ("first", "incremental"):
            p = r[phase]
            print(
                f"{r['label']:>6} {phase:>11}: {p['images']:5d} images {p['seconds']:6.1f} s "
                f"{p['images_per_s']:6.1f} images/s, shuffle written {p['shuffle_bytes']:>11,} B "
                f"(images table {r['images_table_bytes']:,} B)"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)")


if __name__ == "__main__":
    main()
