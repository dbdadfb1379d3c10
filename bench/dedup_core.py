"""Semantic dedup core, in-process: coarse -> fine -> pairs vs exact all-pairs, one run.

Runs the same functions the Spark dedup job calls (coarse k-means on a sample, ``assign``
with and without the second-nearest option, group by coarse centroid, ``fine_clusters`` per
group as ``applyInPandas`` would) on synthetic CLIP-like embeddings with planted
near-duplicates, and compares with an exact blocked all-pairs search at the same threshold.

    .venv/bin/python bench/dedup_core.py --n 100000
    .venv/bin/python bench/dedup_core.py --n 1000000   # exact search extrapolated, not run

Above ``--exact-max`` rows the exact search is not run; its cost is extrapolated as n^2 from
timed exact searches on two subsamples (printed, and marked "extrapolated").
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import mixture_embeddings  # noqa: E402
from curator_udfs.kmeans import nearest_ids, select_backend  # noqa: E402
from curator_udfs.semantic import fine_clusters  # noqa: E402
from curator_udfs.similarity import pairs_above  # noqa: E402


def _keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return np.unique(lo * n + hi)


def _row_index(ids: pd.Series) -> np.ndarray:
    return ids.str.slice(1).astype(np.int64).to_numpy()


def pipeline(
    x: np.ndarray,
    ids: np.ndarray,
    args: argparse.Namespace,
    second_margin: float | None,
    fine_margin: float | None = None,
    assignments: int = 2,
    resplits: int = 0,
) -> dict[str, object]:
    """Coarse fit + assign + per-coarse fine clustering; returns pair keys, timings, stats."""
    n = x.shape[0]
    t0 = time.perf_counter()
    backend = select_backend(args.backend)
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(n, size=min(n, args.coarse_sample), replace=False))
    centroids = backend.fit(x[sample], args.coarse_k, seed=args.seed, max_iter=20)
    t_fit = time.perf_counter() - t0
    ids_of = nearest_ids(x, centroids, margin=second_margin, max_ids=assignments)
    used = ids_of >= 0
    member = np.broadcast_to(np.arange(n)[:, None], ids_of.shape)[used]
    coarse = ids_of[used]
    t_assign = time.perf_counter() - t0 - t_fit
    order = np.lexsort((member, coarse))
    member, coarse = member[order], coarse[order]
    bounds = np.flatnonzero(np.diff(coarse)) + 1
    frames, stats = [], []
    for part_rows, part_coarse in zip(
        np.split(member, bounds), np.split(coarse, bounds), strict=True
    ):
        pdf = pd.DataFrame(
            {"sample_id": ids[part_rows], "embedding": list(x[part_rows]), "coarse": part_coarse}
        )
        pairs, st = fine_clusters(
            pdf,
            thresholds=[args.threshold],
            max_cluster_size=args.max_cluster_size,
            seed=args.seed,
            backend=args.backend,
            fine_margin=fine_margin,
            fine_resplits=resplits,
        )
        frames.append(pairs[["a", "b"]])
        stats.append(st)
    found = pd.concat(frames, ignore_index=True)
    keys = _keys(_row_index(found["a"]), _row_index(found["b"]), n)
    st = pd.concat(stats, ignore_index=True)
    return {
        "keys": keys,
        "seconds": time.perf_counter() - t0,
        "fit_s": t_fit,
        "assign_s": t_assign,
        "rows_in_partitions": int(member.size),
        "coarse_sizes": np.bincount(coarse),
        "fine_clusters": len(st),
        "largest_fine": int(st["size"].max()),
    }


class PeakRss:
    """Peak resident memory above the level at entry, sampled every 10 ms from /proc in a
    thread: unlike tracemalloc it does not slow the timed code down."""

    def __enter__(self) -> PeakRss:
        self._page = resource.getpagesize()
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def above_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def exact(x: np.ndarray, ids: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    i, j, _ = pairs_above(ids, x, threshold)
    return _keys(i, j, x.shape[0]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--coarse-k", type=int, default=None, help="default: n // 5000")
    p.add_argument("--coarse-sample", type=int, default=None, help="default: 256 * coarse_k")
    p.add_argument("--max-cluster-size", type=int, default=2000)
    p.add_argument("--second-margin", type=float, default=0.02)
    p.add_argument(
        "--fine-margins",
        default="0.02",
        help="comma-separated dedup.fine_margin values tried on top of two-nearest and of "
        "--coarse-assignments (none: '')",
    )
    p.add_argument(
        "--coarse-assignments",
        type=int,
        default=4,
        help="dedup.coarse_assignments of the last variants (the job's default: 4)",
    )
    p.add_argument(
        "--fine-resplits",
        type=int,
        default=1,
        help="dedup.fine_resplits of the last variant (the job's default: 1; 0: no variant)",
    )
    p.add_argument("--planted-fraction", type=float, default=0.02)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact-max", type=int, default=200_000)
    args = p.parse_args(argv)
    args.coarse_k = args.coarse_k or max(1, args.n // 5000)
    args.coarse_sample = args.coarse_sample or max(256 * args.coarse_k, 10_000)

    t0 = time.perf_counter()
    x, planted = mixture_embeddings(
        args.n, args.d, seed=args.seed, planted_fraction=args.planted_fraction
    )
    ids = np.array([f"s{i:09d}" for i in range(args.n)], dtype=object)
    print(
        f"data: n={args.n} d={args.d} clusters={max(1, args.n // 200)} planted={len(planted)} "
        f"threshold={args.threshold} ({time.perf_counter() - t0:.1f}s to generate)"
    )
    print(
        f"pipeline: backend={select_backend(args.backend).name} coarse_k={args.coarse_k} "
        f"coarse_sample={args.coarse_sample} max_cluster_size={args.max_cluster_size} "
        f"second_margin={args.second_margin}"
    )
    planted_keys = _keys(planted[:, 0], planted[:, 1], args.n)
    select_backend(args.backend).fit(x[:512], 4, seed=0, max_iter=2)  # warm-up: imports

    results = {}
    two = f"two-nearest<{args.second_margin}"
    variants: list[tuple[str, float | None, float | None, int, int]] = [
        ("nearest only", None, None, 1, 0),
        (two, args.second_margin, None, 2, 0),
    ]
    fine_margins = [float(v) for v in args.fine_margins.split(",") if v.strip()]
    for fm in fine_margins:
        variants.append((f"{two} fine<{fm}", args.second_margin, fm, 2, 0))
    many = f"{args.coarse_assignments}-nearest<{args.second_margin}"
    if args.coarse_assignments != 2:
        for fm in fine_margins:
            variants.append(
                (f"{many} fine<{fm}", args.second_margin, fm, args.coarse_assignments, 0)
            )
    if args.fine_resplits and fine_margins:
        fm = fine_margins[-1]
        label = f"{many} fine<{fm} +{args.fine_resplits} splits"
        variants.append(
            (label, args.second_margin, fm, args.coarse_assignments, args.fine_resplits)
        )
    for label, margin, fine_margin, assignments, resplits in variants:
        with PeakRss() as mem:
            res = pipeline(x, ids, args, margin, fine_margin, assignments, resplits)
        res["peak_mb"] = mem.above_mb
        results[label] = res

    run_exact = args.n <= args.exact_max
    if run_exact:
        exact_keys, exact_s = exact(x, ids, args.threshold)
        exact_note = "measured"
    else:
        sizes = [20_000, 40_000]
        timed = [exact(x[:m], ids[:m], args.threshold)[1] for m in sizes]
        per_pair = timed[-1] / (sizes[-1] ** 2)
        exact_s = per_pair * args.n**2
        exact_keys = None
        exact_note = (
            f"extrapolated as n^2 from {sizes[0]}: {timed[0]:.1f}s, {sizes[1]}: {timed[1]:.1f}s"
        )

    print()
    header = f"{'method':<38}{'seconds':>9}{'speed-up':>10}{'pairs':>10}{'recall':>9}"
    header += f"{'precision':>11}{'planted':>9}{'fine/largest':>14}{'peak MB':>9}"
    print(header)
    for label, res in results.items():
        keys = res["keys"]
        if exact_keys is not None:
            hit = np.intersect1d(keys, exact_keys).size
            recall = f"{hit / max(exact_keys.size, 1):.4f}"
            precision = f"{hit / max(keys.size, 1):.4f}"
        else:
            recall = precision = "n/a"
        planted_recall = np.isin(planted_keys, keys).mean()
        print(
            f"{label:<38}{res['seconds']:>9.1f}{exact_s / res['seconds']:>10.1f}{keys.size:>10}"
            f"{recall:>9}{precision:>11}{planted_recall:>9.4f}"
            f"{str(res['fine_clusters']) + '/' + str(res['largest_fine']):>14}"
            f"{res['peak_mb']:>9.0f}"
        )
    if exact_keys is not None:
        planted_exact = np.isin(planted_keys, exact_keys).mean()
        print(
            f"{'exact all-pairs':<38}{exact_s:>9.1f}{1.0:>10.1f}{exact_keys.size:>10}"
            f"{'1.0000':>9}{'1.0000':>11}{planted_exact:>9.4f}{'-':>14}{'-':>9}"
        )
    else:
        print(f"{'exact all-pairs':<38}{exact_s:>9.0f}{1.0:>10.1f}   (not run: {exact_note})")
    print()
    for label, res in results.items():
        sizes = res["coarse_sizes"]
        print(
            f"{label}: coarse fit {res['fit_s']:.1f}s, assign {res['assign_s']:.1f}s, "
            f"rows in partitions {res['rows_in_partitions']} "
            f"(x{res['rows_in_partitions'] / args.n:.3f}), coarse sizes "
            f"min/median/max {sizes.min()}/{int(np.median(sizes))}/{sizes.max()}"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"exact: {exact_note}, {exact_s:.1f}s; peak RSS of the whole run {rss:.0f} MB "
        f"(embeddings alone {x.nbytes / 2**20:.0f} MB); 'peak MB' = peak RSS while the "
        f"variant ran, above the RSS when it started (sampled every 10 ms); ideal fine work "
        f"~{math.ceil(args.n / 2000)} clusters"
    )


if __name__ == "__main__":
    main()
