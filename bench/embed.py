"""Embed: the `embed` job (local[2] Spark + Delta) beside Daft and a bare torch loop, one run.

Same images, model (timm `test_vit`, random init), batch size 64 and parallelism everywhere:
two worker processes x one torch thread (Spark: local[2], one Python worker per core, Spark
sets OMP_NUM_THREADS to spark.task.cpus = 1; Daft: a `@daft.cls` batch UDF, max_concurrency=2,
use_process=True; bare loop: 2 spawned processes x `torch.set_num_threads(1)`).

What is timed (each labelled in the output):
- start-up: the SparkSession (build_session) before any clock; Daft's `import daft, torch`;
- cold: the first embed of the session (1 shard of `--warmup` images in a separate warm-up
  warehouse: Python workers start, model loads); Daft's first query (the first `--warmup`
  images); the bare loop's process spawn + model load + one batch;
- warm-up: `--warmup-runs` (1) full-size embeds of the same first images, each into a scratch
  warehouse of its own, timed and reported apart: the JVM compiles its hot paths over the
  first full-size runs of a session (the ingest bench shows the same), which is start-up;
- steady: the job embedding `--shards` x `--per-shard` new images (the first 16,000) in the
  warm session; Daft's second query over the same images (read_parquet of the images table's
  own Parquet files, embeddings written with write_parquet); the bare loop over those images
  after a barrier (PIL decode to RGB + the model's timm transform + forward + L2 norm);
- growth: then as many more images are ingested and embedded (the table holds 2x; the second
  embed processes only the new ones): per-image cost second / first (goal <= 1.25).

    .venv/bin/python bench/embed.py            # 16 + 16 shards x 1,000 images
    .venv/bin/python bench/embed.py --quick    # 2 + 2 shards x 1,000 images (~4 min)

Daft runs in a child process of the interpreter that has it: this one, else
.cache/bench-daft-venv/bin/python, else $CURATOR_DAFT_PYTHON; without one the Daft row says
so. The `bench` extra pins daft 0.7.26, which needs pyarrow < 26 (conf/constraints.txt pins
26), so it gets a venv of its own that borrows .venv's torch and timm:

    python3.11 -m venv .cache/bench-daft-venv && .cache/bench-daft-venv/bin/pip install daft==0.7.26
    echo "$PWD/.venv/lib/python3.11/site-packages" \
      > .cache/bench-daft-venv/lib/python3.11/site-packages/zz_main_venv.pth

Daft starts its UDF processes (and loads the model) per query: its steady number includes that.
The job also computes its image signals (sharpness, colourfulness, grayscale) in the same pass,
which Daft and the bare loop do not; for the same work the bench also times the job with
`embed.signals: false` (the first images again, in a warehouse of their own) and a third Daft
query whose UDF also calls the job's `image_signals` on each decoded image.
Sample images: curator_udfs.sample_shards defaults, 64-384 px, ~11 KB per sample.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import json_line  # noqa: E402

DAFT_VENV = ROOT / ".cache" / "bench-daft-venv" / "bin" / "python"
WORKERS = 2  # worker processes everywhere, one torch thread each


def read_images(files: list[str], start: int = 0, stop: int | None = None) -> list[bytes]:
    """The `image` column of Parquet files, rows [start, stop)."""
    import pyarrow.parquet as pq

    blobs: list[bytes] = []
    for f in files:
        blobs.extend(pq.read_table(f, columns=["image"]).column("image").to_pylist())
    return blobs[start:stop]


def load_model(name: str) -> tuple[Any, Any]:
    """The random-init timm model (eval) and its timm transform, one torch thread."""
    import timm
    import torch

    torch.set_num_threads(1)
    model = timm.create_model(name, pretrained=False).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    return model, transform


def embed_blobs(model: Any, transform: Any, blobs: list[bytes], signals: bool = False) -> Any:
    """PIL decode to RGB, transform, forward one batch, L2-normalise: a float32 array. With
    `signals`, also the job's image signals of each decoded image (the same function)."""
    import torch
    from PIL import Image

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    if signals:
        from curator_udfs.image_signals import image_signals

        for image in images:
            image_signals(image)
    x = torch.stack([transform(image) for image in images])
    with torch.inference_mode():
        feats = model(x).float().reshape(len(blobs), -1)
        return torch.nn.functional.normalize(feats, dim=-1).numpy()


def bare_worker(files: list[str], part: int, model_name: str, batch: int, barrier: Any) -> tuple:
    """One bare-loop process: its share of the rows, cold part, barrier, timed loop."""
    blobs = read_images(files)[part::WORKERS]
    model, transform = load_model(model_name)
    embed_blobs(model, transform, blobs[:batch])  # the cold batch
    barrier.wait()
    t0 = time.time()
    for i in range(0, len(blobs), batch):
        embed_blobs(model, transform, blobs[i : i + batch])
    return len(blobs), t0, time.time()


def bare_loop(files: list[str], model_name: str, batch: int) -> dict[str, float]:
    """WORKERS spawned processes x 1 torch thread over the images of `files`."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(WORKERS + 1)
    t0 = time.time()
    with ProcessPoolExecutor(WORKERS, mp_context=ctx) as pool:
        futs = [
            pool.submit(bare_worker, files, p, model_name, batch, barrier) for p in range(WORKERS)
        ]
        barrier.wait()
        cold = time.time() - t0
        done = [f.result() for f in futs]
    steady = max(d[2] for d in done) - min(d[1] for d in done)
    return {"images": sum(d[0] for d in done), "cold_s": cold, "steady_s": steady}


# ---- Daft (in the interpreter that has it) -----------------------------------------------------
def daft_child(files: list[str], model_name: str, batch: int, warm: int, out: str) -> None:
    """Cold query on the first `warm` images, then the steady one on all; print JSON."""
    t0 = time.perf_counter()
    import daft
    import numpy as np
    import pyarrow.parquet as pq
    import torch  # noqa: F401 - part of the start-up, as the workers need it

    daft.set_runner_native()
    import_s = time.perf_counter() - t0
    dim = int(embed_blobs(*load_model(model_name), read_images(files, 0, 1)).shape[1])

    @daft.cls(max_concurrency=WORKERS, use_process=True)
    class Embed:
        def __init__(self, name: str, signals: bool) -> None:
            self.model, self.transform = load_model(name)
            self.signals = signals  # True: the job's image signals too (its default pass)

        @daft.method.batch(
            return_dtype=daft.DataType.embedding(daft.DataType.float32(), dim), batch_size=batch
        )
        def __call__(self, images: daft.Series) -> np.ndarray:
            return embed_blobs(self.model, self.transform, images.to_pylist(), self.signals)

    def query(limit: int | None, sub: str, signals: bool = False) -> tuple[int, float]:
        t = time.perf_counter()
        df = daft.read_parquet(files).select("sample_id", "image")
        df = df.limit(limit) if limit else df
        df = df.with_column("embedding", Embed(model_name, signals)(df["image"]))
        df = df.exclude("image")
        df.write_parquet(f"{out}/{sub}", compression="zstd")
        seconds = time.perf_counter() - t
        written = sum(
            pq.ParquetFile(f).metadata.num_rows for f in Path(out, sub).rglob("*.parquet")
        )
        return written, seconds

    cold_n, cold_s = query(warm, "cold")
    n, steady_s = query(None, "steady")
    n_sig, signals_s = query(None, "signals", signals=True)
    print(json.dumps({"version": daft.__version__, "import_s": import_s, "cold_images": cold_n,
                      "cold_s": cold_s, "images": n, "steady_s": steady_s,
                      "signals_images": n_sig, "signals_s": signals_s}))  # fmt: skip


def daft_python() -> str | None:
    """An interpreter that imports daft: this one, the bench venv, or $CURATOR_DAFT_PYTHON."""
    cands = [sys.executable, str(DAFT_VENV), os.environ.get("CURATOR_DAFT_PYTHON", "")]
    for py in dict.fromkeys(c for c in cands if c and Path(c).exists()):
        probe = subprocess.run([py, "-c", "import daft"], capture_output=True, check=False)
        if probe.returncode == 0:
            return py
    return None


def run_daft(files: list[str], model_name: str, batch: int, warm: int, out: Path) -> dict | str:
    """Daft's numbers, or the reason there are none."""
    py = daft_python()
    if py is None:
        return (
            "Daft not installed: pip install image-curator[bench] in a venv of its own (see "
            "bench/embed.py's docstring), or set CURATOR_DAFT_PYTHON"
        )
    cmd = [py, __file__, "--daft-child", out.as_posix(), "--model", model_name,
           "--batch-size", str(batch), "--warmup", str(warm), *files]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode:
        return f"Daft run failed ({py}): {proc.stderr.strip()[-1500:]}"
    return {"python": py, **json.loads(proc.stdout.strip().splitlines()[-1])}


# ---- the job -----------------------------------------------------------------------------------
def job_sets(batch: int) -> list[str]:
    """Config for the job: same model, batch size and parallelism as Daft and the bare loop."""
    return [
        "embed.model=test_vit",
        "embed.pretrained=false",
        f"embed.batch_size={batch}",
        "embed.num_threads_per_worker=1",
        "classifiers=[]",
        f"spark.conf={{spark.master: 'local[{WORKERS}]'}}",
    ]


def timed_embed(spark: Any, cfg: Any) -> dict[str, float]:
    """One embed.run: images, wall seconds of the call, the job's own embed phase."""
    from spark_jobs import embed

    t0 = time.perf_counter()
    s = embed.run(spark, cfg)
    wall = time.perf_counter() - t0
    assert s.rows_written == s.rows_in, (s.rows_in, s.rows_written, s.quarantined)
    return {"images": s.rows_in, "seconds": wall,
            "embed_phase_s": float(s.extra.get("embed_seconds") or 0.0)}  # fmt: skip


def local_files(df: Any) -> list[str]:
    """The Parquet files behind a Delta DataFrame, as local paths."""
    return sorted(unquote(urlparse(u).path) for u in df.inputFiles())


def main() -> None:
    """Prepare shards, time the job (cold, steady, growth), the bare loop and Daft; print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 + 2 shards (development)")
    ap.add_argument("--shards", type=int, default=None, help="shards per step (default 16)")
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=256, help="images of the cold run")
    ap.add_argument("--warmup-runs", type=int, default=1, help="full-size runs before steady")
    ap.add_argument("--model", default="test_vit")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workdir", default=None, help="keep shards and warehouses here")
    ap.add_argument("--no-daft", action="store_true")
    ap.add_argument("--daft-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.daft_child:
        daft_child(args.files, args.model, args.batch_size, args.warmup, args.daft_child)
        return
    shards = args.shards or (2 if args.quick else 16)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-embed-"))

    from curator_udfs.sample_shards import write_sample_shards

    for sub, n, per, seed in (("a", shards, args.per_shard, 0), ("b", shards, args.per_shard, 1),
                              ("w", 1, args.warmup, 2)):  # fmt: skip
        write_sample_shards(work / sub, shards=n, per_shard=per, seed=seed)

    from spark_jobs import embed, ingest
    from spark_jobs.catalog import register_tables
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session
    from spark_jobs.tables import read_table

    sets = job_sets(args.batch_size)
    cfg = load_config(sets=sets, warehouse=str(work / "warehouse"))
    warm_cfg = load_config(sets=[*sets, "database=bench_warmup"], warehouse=str(work / "wh-w"))
    embed.validate(cfg)  # the preflight, as the CLI runs it
    t0 = time.perf_counter()
    spark = build_session(cfg, app_name="bench-embed")
    session_s = time.perf_counter() - t0
    print(f"SparkSession start-up {session_s:.1f} s", flush=True)
    register_tables(spark, warm_cfg)
    ingest.run(spark, warm_cfg, inputs=[str(work / "w")])
    cold = timed_embed(spark, warm_cfg)
    print(f"job cold (first embed of the session): {cold}", flush=True)
    warmup = []
    for i in range(args.warmup_runs):  # scratch warehouses: the same images, embedded apart
        scratch = load_config(sets=[*sets, f"database=bench_warm{i}"],
                              warehouse=str(work / f"wh-warm{i}"))  # fmt: skip
        register_tables(spark, scratch)
        ingest.run(spark, scratch, inputs=[str(work / "a")])
        warmup.append(timed_embed(spark, scratch)["seconds"])
        print(f"job warm-up run {i + 1}: {warmup[-1]:.1f} s", flush=True)
        shutil.rmtree(work / f"wh-warm{i}", ignore_errors=True)
    ingest.run(spark, cfg, inputs=[str(work / "a")])
    files = local_files(read_table(spark, cfg, "images"))
    first = timed_embed(spark, cfg)
    print(f"job steady, first {first['images']}: {first}", flush=True)
    ingest.run(spark, cfg, inputs=[str(work / "b")])
    second = timed_embed(spark, cfg)
    held = read_table(spark, cfg, "scores").count()
    print(f"job steady, second {second['images']} (scores then {held}): {second}", flush=True)
    # The same first images with embed.signals: false (the work Daft and the bare loop do).
    plain_cfg = load_config(
        sets=[*sets, "database=bench_plain", "embed.signals=false"], warehouse=str(work / "wh-p")
    )
    register_tables(spark, plain_cfg)
    ingest.run(spark, plain_cfg, inputs=[str(work / "a")])
    plain = timed_embed(spark, plain_cfg)
    print(f"job steady, embed.signals false, {plain['images']}: {plain}", flush=True)
    spark.stop()

    bare = bare_loop(files, args.model, args.batch_size)
    print(f"bare torch loop: {bare}", flush=True)
    daft = "skipped (--no-daft)" if args.no_daft else run_daft(
        files, args.model, args.batch_size, args.warmup, work / "daft-out")  # fmt: skip
    print(f"daft: {daft}", flush=True)
    report(args, shards, session_s, cold, warmup, first, second, plain, held, bare, daft)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def report(args: Any, shards: int, session_s: float, cold: dict, warmup: list[float],
           first: dict, second: dict, plain: dict, held: int, bare: dict,
           daft: dict | str) -> None:  # fmt: skip
    """The human-readable table, then one JSON line with every number."""
    rate = {"job": first["images"] / first["seconds"], "bare": bare["images"] / bare["steady_s"],
            "job_no_signals": plain["images"] / plain["seconds"]}  # fmt: skip
    per_first, per_second = first["seconds"] / first["images"], second["seconds"] / second["images"]
    rows = [
        ("SparkSession start-up", "", session_s, ""),
        (f"job cold: first embed, {cold['images']} images", cold["images"] / cold["seconds"],
         cold["seconds"], ""),
        *((f"job warm-up run {i + 1} (JIT), scratch table", "", secs, "")
          for i, secs in enumerate(warmup)),
        (f"job steady: {first['images']} new images", rate["job"], first["seconds"],
         f"embed phase {first['images'] / first['embed_phase_s']:.1f}/s"),
        (f"job growth: {second['images']} more (table {held})",
         second["images"] / second["seconds"], second["seconds"], ""),
        (f"job steady, embed.signals false: {plain['images']}", rate["job_no_signals"],
         plain["seconds"], f"embed phase {plain['images'] / plain['embed_phase_s']:.1f}/s"),
        (f"bare torch cold ({WORKERS} procs: spawn+load+1 batch)", "", bare["cold_s"], ""),
        (f"bare torch steady ({WORKERS} procs x 1 thread)", rate["bare"], bare["steady_s"], ""),
    ]  # fmt: skip
    if isinstance(daft, dict):
        rate["daft"] = daft["images"] / daft["steady_s"]
        rows += [
            (f"daft {daft['version']} start-up (import)", "", daft["import_s"], ""),
            (f"daft cold: first query, {daft['cold_images']} images",
             daft["cold_images"] / daft["cold_s"], daft["cold_s"], ""),
            (f"daft steady: {daft['images']} images", rate["daft"], daft["steady_s"], ""),
            (f"daft steady + the job's image signals: {daft['signals_images']}",
             daft["signals_images"] / daft["signals_s"], daft["signals_s"], ""),
        ]  # fmt: skip
        rate["daft_signals"] = daft["signals_images"] / daft["signals_s"]
    print(f"\nembed bench: {args.model} (random init), batch {args.batch_size}, {shards} + "
          f"{shards} shards x {args.per_shard} images, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'':52}{'images/s':>10}{'seconds':>10}")
    for name, ips, secs, note in rows:
        ips_s = f"{ips:10.1f}" if ips != "" else " " * 10
        print(f"{name:52}{ips_s}{secs:10.1f}  {note}")
    ratios = {"job_vs_bare": rate["job"] / rate["bare"],
              "growth_per_image_second_vs_first": per_second / per_first}  # fmt: skip
    if "daft" in rate:
        ratios["job_vs_daft"] = rate["job"] / rate["daft"]
        ratios["job_vs_daft_same_work"] = rate["job"] / rate["daft_signals"]
        ratios["job_no_signals_vs_daft"] = rate["job_no_signals"] / rate["daft"]
        print(f"ratio job steady / Daft steady: {ratios['job_vs_daft']:.2f}  (goal >= 1.0; the "
              "job also computes image signals, Daft does not)")  # fmt: skip
        print("same work: job / Daft with the signals: "
              f"{ratios['job_vs_daft_same_work']:.2f}; job with embed.signals false / Daft: "
              f"{ratios['job_no_signals_vs_daft']:.2f}")  # fmt: skip
    else:
        print(f"Daft: {daft}")
    print(f"ratio job steady / bare torch steady: {ratios['job_vs_bare']:.2f}")
    print(f"growth: per-image cost second / first: "
          f"{ratios['growth_per_image_second_vs_first']:.2f}  (goal <= 1.25)")  # fmt: skip
    print(json_line(
        "embed", quick=args.quick, model=args.model, batch_size=args.batch_size,
        workers=WORKERS, shards=shards, per_shard=args.per_shard, session_start_s=session_s,
        job_cold=cold, warmup_runs_s=warmup, job_steady=first, job_growth=second,
        job_no_signals=plain, scores_rows=held,
        bare_torch=bare, daft=daft, images_per_s=rate, ratios=ratios,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
