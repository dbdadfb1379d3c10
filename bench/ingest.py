"""Ingest: the `ingest` job (local[2] Spark + Delta) beside a bare single-process pipeline.

The bare pipeline reads the same shards in one process: tar stream read, PIL header (format,
width, height), sha256 of the image bytes, caption decode, one zstd Parquet file per shard
(sample_id, key, image, caption, format, width, height, sha256); it is also timed writing
Snappy, the job's codec for `images`, and the job's ratio to that printed beside the goal's
(against zstd). The job is spark_jobs.ingest.run itself (tar members streamed in one task per
shard, caption signals, Delta MERGEs, `shards`).

What is timed (each labelled in the output):
- start-up: the SparkSession (build_session), before any clock;
- cold: the first ingest of the session, `--warmup-shards` shards into a separate warm-up
  warehouse (Python workers start, the language model loads, Delta creates the tables);
- warm-up: `--warmup-runs` (3) runs of the same `--shards` shards, each into a fresh scratch
  warehouse: the JVM compiles the hot paths during the first few full-size runs (measured: 16.0,
  12.5, 11.1, 9.5 and 11.2 s for five runs in a row), so their times are start-up, reported
  apart, not steady state;
- steady: `--shards` shards (16 x 1,000 samples) and `--large` x as many (48 x 1,000, the same
  kind of samples, another seed), each into a fresh warehouse after the warm-up, alternated
  (taking turns going first), `--repeat` (3) times each, the median counting (the bare
  pipeline likewise, over the same two sets): this machine's speed varies by 10-20 % from run
  to run. A run's wall time is a per-run cost that does not grow with the batch (transactions,
  table creation, the closing counts) plus a per-sample cost; the two sizes tell them apart:
  steady per-sample time = (large - small) / (the samples between), per-run cost = small - its
  samples x that. Ratios to bare (goal >= 1.0): the steady rate's, and the whole 16-shard
  run's (per-run cost in);
- growth: `--shards` more shards into the warehouse of the last 16-shard run (the table then
  holds 2x): per-sample cost second / first, whole runs (goal <= 1.25);
- reference: the first `--shards` again, and the large set, each into a fresh warehouse with
  `ingest.bytes: reference` (images keep byte ranges of the shards, not the bytes), after one
  warm-up run of its own in that mode, medians of `--repeat` each: steady and whole-run
  ratios as above (goal >= 2.0 x bare).
Every job number is the wall time of one `ingest.run` call (its table counts included).

    .venv/bin/python bench/ingest.py            # 16 (+48) shards x 1,000 samples (~10 min)
    .venv/bin/python bench/ingest.py --quick    # 4 (+12) shards x 200 samples

Either way a run is 18 ingests: cold, 3 warm-up, 3 + 3 steady, growth, 1 + 3 + 3 reference.

Samples: curator_udfs.sample_shards defaults (64-384 px, 70 % JPEG, 20 % PNG, 10 % WebP;
about 11 KB of tar per sample: 16 x 1,000 is about 177 MB). MB/s counts tar file bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
WORKERS = 2


def _sample_row(uri: str, key: str, members: dict[str, bytes]) -> dict[str, Any] | None:
    """One sample's row: header-only PIL open, sha256, caption; None without an image."""
    from PIL import Image

    from curator_udfs.ids import sample_id

    ext = next((e for e in members if e in IMAGE_EXTS), None)
    if ext is None:
        return None
    data = members[ext]
    with Image.open(io.BytesIO(data)) as im:  # reads the header only
        fmt, (width, height) = im.format, im.size
    caption = members.get("txt")
    return {
        "sample_id": sample_id(uri, key),
        "key": key,
        "image": data,
        "caption": caption.decode("utf-8", "replace") if caption is not None else None,
        "image_format": fmt,
        "width": width,
        "height": height,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def bare_shard(path: str, out: Path, compression: str = "zstd") -> tuple[int, int]:
    """Stream one tar, write its samples as one Parquet file in `compression` (zstd, the
    issue's bare pipeline, or the job's codec for `images`): (samples, tar bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    key: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r|") as tar:
        for m in tar:
            if not m.isfile() or "." not in m.name:
                continue
            k, ext = m.name.rsplit(".", 1)
            if k != key and key is not None:
                row = _sample_row(path, key, members)
                rows.extend([row] if row else [])
                members = {}
            key = k
            fh = tar.extractfile(m)
            members[ext.lower()] = fh.read() if fh is not None else b""
    if key is not None:
        row = _sample_row(path, key, members)
        rows.extend([row] if row else [])
    pq.write_table(pa.Table.from_pylist(rows), out / (Path(path).stem + ".parquet"),
                   compression=compression)  # fmt: skip
    return len(rows), os.path.getsize(path)


def bare_pipeline(paths: list[str], out: Path, compression: str = "zstd") -> dict[str, float]:
    """The bare pipeline over every shard, one process: samples, MB, seconds."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = [bare_shard(p, out, compression) for p in paths]
    seconds = time.perf_counter() - t0
    return {"samples": sum(d[0] for d in done), "MB": sum(d[1] for d in done) / 1e6,
            "seconds": seconds}  # fmt: skip


def timed_ingest(spark: Any, cfg: Any, shard_dir: Path) -> dict[str, float]:
    """One ingest.run over a directory of shards: samples, MB read, wall seconds."""
    from spark_jobs import ingest

    t0 = time.perf_counter()
    s = ingest.run(spark, cfg, inputs=[str(shard_dir)])
    wall = time.perf_counter() - t0
    assert s.rows_written == s.rows_in and not s.quarantined, (s.rows_in, s.rows_written)
    return {"samples": s.rows_in, "MB": s.extra["bytes_read"] / 1e6, "seconds": wall,
            "job_seconds": s.seconds, "images_rows": s.tables["images"]}  # fmt: skip


def still_warming(seconds: list[float], tolerance: float = 0.05) -> bool:
    """Whether the last run was more than `tolerance` faster than the one before: the JVM's
    compiler is still speeding runs up, so they are not steady state yet."""
    return len(seconds) >= 2 and seconds[-1] < (1 - tolerance) * seconds[-2]


def median(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The run of median wall time (the lower middle one of an even count), with every run's
    seconds (`runs_s`)."""
    mid = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {**mid, "runs_s": [r["seconds"] for r in runs]}


def steady_state(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float]:
    """Per-sample time and per-run cost from two sizes' (median) runs: wall = per_run +
    samples x per_sample. `rate` is the steady samples/s (1 / per_sample)."""
    per_sample = (large["seconds"] - small["seconds"]) / (large["samples"] - small["samples"])
    if per_sample <= 0:  # the larger run was not slower: noise swamped the size difference
        raise SystemExit(f"large run ({large['seconds']:.1f} s) not slower than the small "
                         f"({small['seconds']:.1f} s): rerun on an idle machine")  # fmt: skip
    return {"per_sample_ms": per_sample * 1e3, "rate": 1 / per_sample,
            "per_run_s": small["seconds"] - small["samples"] * per_sample}  # fmt: skip


def json_line(bench: str, **fields: Any) -> str:
    """The bench's one JSON line: its name, the date and machine, then `fields` (rounded)."""
    head = {"bench": bench, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "cpus": os.cpu_count()}  # fmt: skip
    return json.dumps(rounded({**head, **fields}))


def rounded(obj: Any) -> Any:
    """Floats to 3 decimals, recursively (for the JSON line)."""
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v) for v in obj]
    return obj


def main() -> None:
    """Write shards, time the bare pipeline and the job (cold, steady, growth), print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 + 4 shards x 200 (development)")
    ap.add_argument("--shards", type=int, default=None, help="shards per step (default 16)")
    ap.add_argument("--per-shard", type=int, default=None, help="samples a shard (1000)")
    ap.add_argument("--large", type=int, default=3, help="the large set: this x --shards")
    ap.add_argument("--warmup-shards", type=int, default=1, help="shards of the cold run")
    ap.add_argument(
        "--warmup-runs",
        type=int,
        default=3,
        help="full-size runs before steady, at least (then on while still warming)",
    )
    ap.add_argument("--max-warmup-runs", type=int, default=8,
                    help="at most this many: warm-up ends when a run is within 5 %% of the "
                    "one before")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="measured runs (the median counts)")
    ap.add_argument("--workdir", default=None, help="keep shards and warehouses here")
    args = ap.parse_args()
    if args.repeat < 1 or args.warmup_runs < 0 or args.large < 2:
        ap.error("--repeat must be at least 1, --warmup-runs at least 0, --large at least 2")
    shards = args.shards or (4 if args.quick else 16)
    per = args.per_shard or (200 if args.quick else 1000)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ingest-"))

    from curator_udfs.sample_shards import write_sample_shards

    tars: dict[str, list[str]] = {}
    shard_sets = (("a", shards, 0), ("b", shards, 1), ("w", args.warmup_shards, 2),
                  ("l", shards * args.large, 3))  # fmt: skip
    for sub, n, seed in shard_sets:
        rep = write_sample_shards(work / sub, shards=n, per_shard=per, seed=seed)
        tars[sub] = [str(p) for p in rep.paths]
    from spark_jobs.ingest import IMAGES_CODEC

    # the bare pipeline writes zstd; the job writes images in IMAGES_CODEC: both timed
    bare_runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (sub, codec): [] for codec in ("zstd", IMAGES_CODEC) for sub in ("a", "l")
    }
    for i in range(args.repeat):
        for sub, codec in bare_runs:
            out = work / f"bare-{sub}{codec}{i}"
            bare_runs[sub, codec].append(bare_pipeline(tars[sub], out, codec))
            shutil.rmtree(out)
    bare, bare_large = median(bare_runs["a", "zstd"]), median(bare_runs["l", "zstd"])
    snappy = steady_state(
        median(bare_runs["a", IMAGES_CODEC]), median(bare_runs["l", IMAGES_CODEC])
    )
    print(f"bare pipeline: {bare}; large set: {bare_large}", flush=True)

    from spark_jobs.catalog import register_tables
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    sets = [f"spark.conf={{spark.master: 'local[{WORKERS}]'}}"]
    cfg = load_config(sets=sets, warehouse=str(work / "warehouse"))
    t0 = time.perf_counter()
    spark = build_session(cfg, app_name="bench-ingest")
    session_s = time.perf_counter() - t0
    print(f"SparkSession start-up {session_s:.1f} s", flush=True)

    def fresh(tag: str, extra: list[str]) -> Any:
        scratch = load_config(sets=[*sets, f"database=bench_{tag}", *extra],
                              warehouse=str(work / f"wh-{tag}"))  # fmt: skip
        register_tables(spark, scratch)
        return scratch

    cold = timed_ingest(spark, fresh("cold", []), work / "w")
    print(f"job cold: {cold}", flush=True)
    warmup: list[float] = []
    while len(warmup) < args.warmup_runs or (
        len(warmup) < args.max_warmup_runs and still_warming(warmup)
    ):
        i = len(warmup)
        warmup.append(timed_ingest(spark, fresh(f"warm{i}", []), work / "a")["seconds"])
        print(f"job warm-up run {i + 1}: {warmup[-1]:.1f} s", flush=True)
    # the last small steady run's warehouse is the one the growth run adds to
    register_tables(spark, cfg)
    reference = ["ingest.bytes=reference"]
    ref_warmup = timed_ingest(spark, fresh("ref_warm", reference), work / "a")["seconds"]
    print(f"job warm-up run, reference mode: {ref_warmup:.1f} s", flush=True)
    steady: list[dict[str, float]] = []
    steady_large: list[dict[str, float]] = []
    refs: list[dict[str, float]] = []
    refs_large: list[dict[str, float]] = []
    # The JVM's compiler speeds each run up a little more, so the runs take turns: both sizes
    # in both byte modes, in one order, then the reverse (no kind of run always comes later)
    for i in range(args.repeat):
        last = i == args.repeat - 1
        turn = [(steady, cfg if last else fresh(f"steady{i}", []), work / "a"),
                (steady_large, fresh(f"large{i}", []), work / "l"),
                (refs, fresh(f"ref{i}", reference), work / "a"),
                (refs_large, fresh(f"ref_large{i}", reference), work / "l")]  # fmt: skip
        for runs, run_cfg, shard_dir in turn[:: -1 if i % 2 else 1]:
            runs.append(timed_ingest(spark, run_cfg, shard_dir))
        for tag in (f"large{i}", f"ref_large{i}"):
            shutil.rmtree(work / f"wh-{tag}")
        print(
            f"job steady run {i + 1}: {steady[-1]['seconds']:.1f} s ({shards} shards), "
            f"{steady_large[-1]['seconds']:.1f} s ({shards * args.large}); reference mode "
            f"{refs[-1]['seconds']:.1f} s, {refs_large[-1]['seconds']:.1f} s",
            flush=True,
        )
    first, first_large = median(steady), median(steady_large)
    ref, ref_large = median(refs), median(refs_large)
    second = timed_ingest(spark, cfg, work / "b")
    print(f"job growth, {shards} more shards: {second}", flush=True)
    spark.stop()
    assert first["samples"] == bare["samples"] == ref["samples"], (first, bare, ref)
    assert first_large["samples"] == bare_large["samples"] == ref_large["samples"]
    steadies = {"bare": steady_state(bare, bare_large), "job": steady_state(first, first_large),
                "reference": steady_state(ref, ref_large), "bare_snappy": snappy}  # fmt: skip
    report(
        args.quick,
        shards,
        per,
        session_s,
        bare,
        cold,
        [*warmup, ref_warmup],
        first,
        second,
        ref,
        steadies,
        {"bare": bare_large, "job": first_large, "reference": ref_large},
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def report(quick: bool, shards: int, per: int, session_s: float, bare: dict, cold: dict,
           warmup: list[float], first: dict, second: dict, ref: dict,
           steadies: dict[str, dict[str, float]], large: dict[str, dict]) -> None:  # fmt: skip
    """The human-readable table, then one JSON line with every number (`warmup`: the copy-mode
    warm-up runs' seconds, then the reference-mode one's; `steadies`: steady_state of bare, job
    and reference mode; `large`: their median runs of the large set)."""
    rate = {k: d["samples"] / d["seconds"] for k, d in
            (("bare", bare), ("cold", cold), ("run", first), ("growth", second),
             ("reference_run", ref))}  # fmt: skip
    ratios = {
        "steady_vs_bare": steadies["job"]["rate"] / steadies["bare"]["rate"],
        "reference_steady_vs_bare": steadies["reference"]["rate"] / steadies["bare"]["rate"],
        "run_vs_bare": rate["run"] / rate["bare"],
        "reference_run_vs_bare": rate["reference_run"] / rate["bare"],
        "growth_per_sample_second_vs_first": rate["run"] / rate["growth"],
        "steady_vs_bare_snappy": steadies["job"]["rate"] / steadies["bare_snappy"]["rate"],
    }
    n_large = large["job"]["samples"] // per
    rows = [
        ("SparkSession start-up", None, None, session_s),
        ("bare pipeline (1 process)", rate["bare"], bare["MB"], bare["seconds"]),
        (f"bare pipeline, {n_large} shards", large["bare"]["samples"] / large["bare"]["seconds"],
         large["bare"]["MB"], large["bare"]["seconds"]),
        (f"job cold: first ingest, {cold['samples']} samples", rate["cold"], cold["MB"],
         cold["seconds"]),
        *((f"job warm-up run {i + 1} (JIT), fresh table", None, None, secs)
          for i, secs in enumerate(warmup[:-1])),
        ("job warm-up run, reference mode", None, None, warmup[-1]),
        (f"job run: {shards} shards, fresh table", rate["run"], first["MB"], first["seconds"]),
        (f"job run: {n_large} shards, fresh table",
         large["job"]["samples"] / large["job"]["seconds"], large["job"]["MB"],
         large["job"]["seconds"]),
        (f"job growth: {shards} more (table {second['images_rows']})", rate["growth"],
         second["MB"], second["seconds"]),
        (f"reference mode: {shards} shards", rate["reference_run"], ref["MB"], ref["seconds"]),
        (f"reference mode: {n_large} shards",
         large["reference"]["samples"] / large["reference"]["seconds"],
         large["reference"]["MB"], large["reference"]["seconds"]),
    ]  # fmt: skip
    print(f"\ningest bench: {shards} (and {n_large}) + {shards} shards x {per} samples, "
          f"{first['MB']:.1f} MB a step, {os.cpu_count()} cores, local[{WORKERS}]")  # fmt: skip
    print(f"{'':46}{'samples/s':>10}{'MB/s':>8}{'seconds':>9}")
    for name, sps, mb, secs in rows:
        sps_s = f"{sps:10.1f}{mb / secs:8.2f}" if sps is not None and mb is not None else " " * 18
        print(f"{name:46}{sps_s}{secs:9.1f}")
    print(f"\nsteady state ({shards} vs {n_large} shards: per-sample time, per-run cost apart):")
    for name, st in steadies.items():
        print(f"  {name:10} {st['rate']:9.1f} samples/s  {st['per_sample_ms']:.3f} ms a sample"
              f"  per-run cost {st['per_run_s']:5.2f} s")  # fmt: skip
    print(f"ratio job steady / bare: {ratios['steady_vs_bare']:.3f}  (goal >= 1.0); a whole "
          f"{shards}-shard run: {ratios['run_vs_bare']:.3f}")  # fmt: skip
    print(f"  (against the bare pipeline writing Snappy, the job's codec for images: "
          f"{ratios['steady_vs_bare_snappy']:.3f})")  # fmt: skip
    print(
        f"ratio reference mode steady / bare: {ratios['reference_steady_vs_bare']:.3f}  "
        f"(goal >= 2.0); a whole {shards}-shard run: {ratios['reference_run_vs_bare']:.3f}"
    )
    print(f"growth: per-sample cost second / first: "
          f"{ratios['growth_per_sample_second_vs_first']:.2f}  (goal <= 1.25)")  # fmt: skip
    print(json_line(
        "ingest", quick=quick, shards=shards, large_shards=n_large, per_shard=per,
        workers=WORKERS, session_start_s=session_s, bare=bare, job_cold=cold,
        warmup_runs_s=warmup[:-1], reference_warmup_s=warmup[-1], job_run=first,
        job_growth=second, job_reference=ref, large=large, steady=steadies,
        samples_per_s=rate, ratios=ratios,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
