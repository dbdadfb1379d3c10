"""Incremental semantic dedup: stored coarse centroids and per-coarse-group state.

What is stored, and why (tables declared in spark_jobs/tables.py):
- `dedup_centroids`: the coarse k-means centroids of each model, with the seed, k, embedding
  dimension and backend they were fitted with, and the run that fitted them. A run whose
  model/seed/coarse_k/dimension (and an explicit backend) match reuses them, so the coarse
  assignment of an old representative never moves; otherwise, or with `curator dedup --full`,
  the k-means is refitted and the set replaced (curator_udfs.coarse_reuse.refit_reason).
- `dedup_members`: per coarse group, its representatives (sample_id and a hash of the
  embedding): what tells which groups gained or lost a member.
- `dedup_group_pairs`: per coarse group, the fine stage's output (candidate pairs at the
  lowest threshold, and one row per fine cluster with its size and centroid).
Both state tables carry a `basis`: the centroid fit plus the parameters a group's pairs depend
on (lowest threshold, max_cluster_size, second_margin, coarse_assignments, backend, seed,
block_size). A group that gained or lost members ("touched") keeps its fine clusters: its new
members are compared with each other and with the old members of the fine clusters they fall
in (curator_udfs.fine_increment, no k-means), its stored pairs are kept without those of
removed samples (or of samples whose embedding changed: they count as removed and new). The
other groups' stored rows are read back. A group is split anew (fine k-means, every pair) on a
reset: refitted centroids, another basis, `--full`, or a crash between the state writes. So an
incremental run finds what a from-scratch run with the same centroids finds except near fine
borders, where the two splits differ (the bench measures its recall).

State is written last (`commit`, after the `duplicates` rows), touched groups only (`replaceWhere
model AND coarse IN (...)`), pairs before members, both rows tagged with the run: a group whose
pairs and members do not carry the same run and basis (a crash between the two writes) is
recomputed by the next run, even where its members would match again (the crashed run's new
samples removed since, or its configuration reverted); never a stale pair kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from curator_udfs.coarse_reuse import StoredCentroids, refit_reason, state_basis, touched_groups
from spark_jobs.config import Config
from spark_jobs.summary import Summary
from spark_jobs.tables import (
    DEDUP_CENTROIDS,
    DEDUP_GROUP_PAIRS,
    DEDUP_MEMBERS,
    add_missing_columns,
    is_delta,
    latest_version,
    replace_where,
    sql_list,
    table_path,
)

FINE_COLUMNS = (
    "a", "b", "similarity", "cluster", "dist_a", "dist_b", "cluster_size", "centroid"
)  # fmt: skip
_SPILL = StorageLevel.MEMORY_AND_DISK
Fitter = Callable[[], tuple[np.ndarray, str, int, int]]  # () -> (centroids, backend, k, sampled)


def _coarse_of(cluster: str) -> Column:
    """The coarse id inside a fine cluster name `{coarse}-{fine}`."""
    return F.split(F.col(cluster), "-").getItem(0).cast("long")


class SemanticState:
    """The stored centroids and group state of one model, for one run of the job.

    `centroids()` reuses or refits; `fine_rows()` extends (or splits anew) the touched groups
    and keeps the others; `stage_commit()` (after the last read of the pairs), `unpersist()`
    (drops the frames it holds), then `commit()` writes the touched groups' state.
    """

    def __init__(
        self, spark: SparkSession, cfg: Config, model: str, run_id: str, *, full: bool = False
    ) -> None:
        self.spark, self.cfg, self.model, self.run_id, self.full = spark, cfg, model, run_id, full
        self.reset = True  # no usable group state (until centroids() finds some)
        self.basis = ""
        self.touched: list[int] = []
        self._all_touched = False
        self._new: DataFrame | None = None
        self._members: DataFrame | None = None
        self._old: DataFrame | None = None  # the stored members, once checked usable
        self._checked = False
        self._split: list[int] = []  # _tags
        self._pairs: DataFrame | None = None  # the stored fine rows (_stored_pairs)
        self._staged: tuple[DataFrame, DataFrame] | None = None  # stage_commit's rows

    # ---- centroids -----------------------------------------------------------------------------
    def _where_model(self) -> str:
        return f"model = {sql_list([self.model])}"

    def _read(self, logical: str, version: int | None = None) -> DataFrame | None:
        path = table_path(self.cfg, logical)
        if not is_delta(path):
            return None
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path).where(F.col("model") == self.model)

    def stored(self) -> tuple[StoredCentroids | None, np.ndarray | None]:
        """The model's stored centroid set (k rows to the driver), or (None, None)."""
        df = self._read(DEDUP_CENTROIDS.logical)
        rows = df.orderBy("centroid_id").collect() if df is not None else []
        if not rows:
            return None, None
        first = rows[0]
        meta = StoredCentroids(
            seed=int(first["seed"]), k=int(first["k"]), dim=int(first["dim"]),
            backend=str(first["backend"]), rows=len(rows), fit_id=str(first["run_id"]),
        )  # fmt: skip
        return meta, np.asarray([r["centroid"] for r in rows], dtype=np.float32)

    def centroids(self, n: int, dim: int, fit: Fitter, summary: Summary) -> tuple[np.ndarray, str]:
        """Reuse the stored centroids when they match this run, else `fit()` and store them;
        return (centroids, backend). Says which, and why, in the summary."""
        d = self.cfg.dedup
        k = max(1, min(d.coarse_k or n // 5000, n))
        stored, arr = self.stored()
        reason = refit_reason(stored, seed=d.seed, k=k, auto_k=d.coarse_k is None, dim=dim,
                              backend=d.backend, full=self.full)  # fmt: skip
        if reason is None and stored is not None and arr is not None:
            centroids, backend, fit_id = arr, stored.backend, stored.fit_id
            summary.extra.update(centroids="reused", centroids_fitted_by=fit_id)
            self.reset = False
        else:
            centroids, backend, k, sampled = fit()
            fit_id = self.run_id
            self._save(centroids, k, dim, backend)
            summary.extra.update(centroids=f"refitted: {reason}", coarse_sample=sampled)
        self.basis = state_basis(
            fit_id, threshold=1.0 - max(d.eps), max_cluster_size=d.max_cluster_size,
            second_margin=d.second_margin, backend=d.backend, seed=d.seed,
            fine_margin=d.fine_margin, assignments=d.coarse_assignments,
            resplits=d.fine_resplits, block_size=d.block_size,
        )  # fmt: skip
        return centroids, backend

    def _save(self, centroids: np.ndarray, k: int, dim: int, backend: str) -> None:
        d = self.cfg.dedup
        at = datetime.now(UTC)
        rows = [
            (self.model, d.seed, k, dim, backend, i, [float(v) for v in c], self.run_id, at)
            for i, c in enumerate(centroids)
        ]
        df = self.spark.createDataFrame(rows, DEDUP_CENTROIDS.schema)
        replace_where(self.spark, self.cfg, DEDUP_CENTROIDS, df, self._where_model())

    # ---- groups --------------------------------------------------------------------------------
    def stored_assignment(self) -> DataFrame | None:
        """The stored coarse group rows of the representatives (coarse, sample_id,
        embedding_hash) when the group state is usable under this run's basis, else None (and
        reset): any stored row of the model has another basis, or there are none. Checked once
        per run (call after `centroids()`), in the one aggregate that also finds the groups a
        crash left split (`_tags`)."""
        if self._checked:
            return self._old
        self._checked = True
        old = None if self.reset else self._read(DEDUP_MEMBERS.logical)
        pairs = None if old is None else self._read(DEDUP_GROUP_PAIRS.logical)
        if old is None or pairs is None:
            self.reset = True
            return None
        row = self._tags(old, pairs)
        if not row["ok"] or row["other"]:
            self.reset = True
            return None
        self._split = sorted(int(c) for c in row["split"])
        self._old = old.select("coarse", "sample_id", "embedding_hash")
        return self._old

    def _tags(self, members: DataFrame, pairs: DataFrame) -> Row:
        """One row: the member rows of this basis (`ok`) and of another (`other`), and the
        coarse groups whose stored pairs and members were not written by one commit (`split`:
        not one run_id and basis on both sides), a crash between `commit`'s two writes, after
        which the members could match a later run's again while the pairs are the crashed
        run's; those groups are recomputed."""
        tag = F.concat_ws("|", "run_id", "basis")
        mine = F.col("basis") == self.basis
        p = pairs.groupBy("coarse").agg(F.min(tag).alias("p_lo"), F.max(tag).alias("p_hi"))
        m = members.groupBy("coarse").agg(
            F.min(tag).alias("m_lo"), F.max(tag).alias("m_hi"),
            F.count(F.when(mine, 1)).alias("ok"), F.count(F.when(~mine, 1)).alias("other"),
        )  # fmt: skip
        one = (
            F.col("p_lo").isNotNull()
            & F.col("m_lo").isNotNull()
            & (F.col("p_lo") == F.col("p_hi"))
            & (F.col("m_lo") == F.col("m_hi"))
            & (F.col("p_lo") == F.col("m_lo"))
        )
        row = (
            p.join(m, "coarse", "full_outer")
            .agg(
                F.coalesce(F.sum("ok"), F.lit(0)).alias("ok"),
                F.coalesce(F.sum("other"), F.lit(0)).alias("other"),
                F.collect_list(F.when(~one, F.col("coarse"))).alias("split"),
            )
            .first()
        )
        assert row is not None  # a global aggregate has exactly one row
        return row

    def _stored_pairs(self) -> DataFrame:
        """This basis' stored fine rows at the table's version now (pinned: the commit at the
        end replaces some of them)."""
        if self._pairs is None:  # read at one version for the whole run
            version = latest_version(self.spark, table_path(self.cfg, DEDUP_GROUP_PAIRS.logical))
            kept = self._read(DEDUP_GROUP_PAIRS.logical, version)
            assert kept is not None  # stored_assignment checked the table exists
            self._pairs = kept.where(F.col("basis") == self.basis)
        return self._pairs

    def _per_group(
        self, members: DataFrame, lost: DataFrame | None
    ) -> tuple[dict[int, int], dict[int, int]]:
        """({coarse group: members now}, {coarse group: members gained} for every group that
        gained or lost one): one aggregate over the members (`fresh`: not stored under this
        basis) and the `lost` rows, one row per coarse group to the driver."""
        one, none = F.lit(1), F.lit(0)
        rows = members.select("coarse", one.alias("n"), F.col("fresh").cast("int").alias("new"),
                              none.alias("gone"))  # fmt: skip
        if lost is not None:
            rows = rows.unionByName(lost.select("coarse", none.alias("n"), none.alias("new"),
                                                one.alias("gone")))  # fmt: skip
        agg = rows.groupBy("coarse").agg(*(F.sum(c).alias(c) for c in ("n", "new", "gone")))
        sizes: dict[int, int] = {}
        gained: dict[int, int] = {}
        for r in agg.collect():
            c = int(r["coarse"])
            if r["n"]:
                sizes[c] = int(r["n"])
            if r["new"] or r["gone"]:
                gained[c] = int(r["new"])
        return sizes, gained

    def _resplit(
        self, split: list[int], gained: dict[int, int], sizes: dict[int, int]
    ) -> list[int]:
        """Touched groups to split anew rather than extend: those a crash left split, those
        that lost every member (their state is then deleted), those that gained more than
        `max_cluster_size` members (new x new is searched whole, and a large increment is
        cheaper to split), and those whose largest stored fine cluster grew past twice
        `max_cluster_size` (a fine cluster is never re-split while it is extended)."""
        bound = self.cfg.dedup.max_cluster_size
        out = set(split) | {c for c in gained if c not in sizes or gained[c] > bound}
        grown = sorted(set(gained) - out)
        if grown:
            stored = self._stored_pairs().where(F.col("a").isNull() & F.col("coarse").isin(grown))
            big = stored.where(F.col("cluster_size") > 2 * bound).select("coarse").distinct()
            out |= {int(r["coarse"]) for r in big.collect()}  # at most one row per group
        return sorted(out)

    def fine_rows(
        self,
        members: DataFrame,
        assigned: DataFrame,
        lost: DataFrame | None,
        fine: Callable[[DataFrame], DataFrame],
        increment: Callable[[DataFrame], DataFrame],
        summary: Summary,
    ) -> DataFrame:
        """The fine stage's rows (FINE_COLUMNS) for every coarse group: `fine(assigned rows)`
        for the groups split anew (all on a reset; those a crash left split), `increment(...)`
        (curator_udfs.fine_increment: new members against their stored fine clusters) plus the
        stored pairs without removed members for the other touched groups, and the stored rows
        of the untouched ones. `members` (coarse, sample_id, embedding_hash: the xxhash64 of the
        embedding; fresh: not stored with that hash) are the same rows as `assigned`, without
        the embeddings, from a frame the caller keeps persisted until after `stage_commit()`;
        `lost` the stored members that are gone (spark_jobs.dedup_semantic._assigned_once;
        None when there is no usable state). Counts go to the summary."""
        self._members = members.drop("fresh")
        old = self.stored_assignment()
        if old is None:
            lost = None
        sizes, gained = self._per_group(members, lost)
        split = self._split  # the groups a crash left split ([] on a reset: all are touched)
        self.touched = touched_groups(set(gained) | set(split), sizes, [], reset=self.reset)
        # every group with members now is touched, and so is every stored group that lost
        # them all (or was left split): the commit replaces the model's whole state
        self._all_touched = set(sizes) <= set(self.touched)
        refit = self.touched if self.reset else self._resplit(split, gained, sizes)
        grown = sorted(set(self.touched) - set(refit))
        summary.extra.update(
            coarse_groups_touched=len(self.touched),
            coarse_groups_total=len(set(sizes) | set(self.touched)),
            coarse_groups_split=len(refit),
            representatives_compared=sum(sizes.get(c, 0) for c in refit)
            + sum(gained.get(c, 0) for c in grown),
            group_state="rebuilt" if self.reset else "incremental",
        )
        parts: list[DataFrame] = []
        if refit:
            parts.append(fine(assigned.where(F.col("coarse").isin(refit))))
        untouched: DataFrame | None = None
        if not self.reset:
            assert old is not None and lost is not None  # not a reset: a usable state
            stored = self._stored_pairs()
            in_grown = F.col("coarse").isin(grown)
            if grown:
                gainers = [c for c in grown if gained.get(c)]
                in_gainers = F.col("coarse").isin(gainers)
                if gainers:
                    parts.append(increment(_increment_input(assigned, old, stored, in_gainers)))
                # stored pairs of every grown group without removed members; stats rows too
                # where no member came (nothing to recount: they pass through unchanged)
                kept = stored.where(in_grown & (F.col("a").isNotNull() | ~in_gainers))
                for side in ("a", "b"):
                    gone = lost.select("coarse", F.col("sample_id").alias(side))
                    kept = kept.join(gone, ["coarse", side], "left_anti")
                parts.append(kept.select(*FINE_COLUMNS))
            untouched = stored.where(~F.col("coarse").isin(self.touched)).select(*FINE_COLUMNS)
        new = parts[0].select(*FINE_COLUMNS) if parts else None
        for part in parts[1:]:
            new = new.unionByName(part.select(*FINE_COLUMNS)) if new is not None else part
        if new is None:  # nothing touched: an empty frame of the fine stage's columns
            new = fine(assigned.where(F.lit(False))).select(*FINE_COLUMNS)
        new = new.select(*FINE_COLUMNS, _coarse_of("cluster").alias("coarse"))
        self._new = new.persist(StorageLevel.MEMORY_AND_DISK)
        out = self._new.select(*FINE_COLUMNS)
        return out if untouched is None else out.unionByName(untouched)

    def stage_commit(self) -> None:
        """Take the rows `commit()` writes out of the cache, lineage cut (local checkpoints):
        call it after the last read of the pairs, then drop every persisted frame, then
        `commit()`. Delta re-plans, after a write, every cached plan that reads the table it
        wrote, and the write sources read the state tables: 3-4 s a run at 100k."""
        if self._new is None or self._members is None or (not self.touched and not self.reset):
            return
        extra = (F.lit(self.model).alias("model"), F.lit(self.basis).alias("basis"),
                 F.lit(self.run_id).alias("run_id"))  # fmt: skip
        members = self._members.where(F.col("coarse").isin(self.touched))
        self._staged = (
            self._new.select("*", *extra).localCheckpoint(eager=True, storageLevel=_SPILL),
            members.select("*", *extra).localCheckpoint(eager=True, storageLevel=_SPILL),
        )

    def commit(self) -> None:
        """Write the touched groups' pairs, then their members (module docstring), as staged."""
        if self._staged is None:
            return
        pairs, members = self._staged
        where = self._where_model()
        if not self.reset and not self._all_touched:  # (a coarse list costs file rewrites)
            where += f" AND coarse IN ({', '.join(str(c) for c in self.touched)})"
        add_missing_columns(self.spark, self.cfg, DEDUP_GROUP_PAIRS)  # `centroid`, since stop 41
        replace_where(self.spark, self.cfg, DEDUP_GROUP_PAIRS, pairs, where)
        replace_where(self.spark, self.cfg, DEDUP_MEMBERS, members, where)
        self._staged = None

    def unpersist(self) -> None:
        """Drop the persisted frame it holds (the fine rows of the touched groups)."""
        if self._new is not None:
            self._new.unpersist()


def _increment_input(
    assigned: DataFrame, old: DataFrame, stored: DataFrame, in_grown: Column
) -> DataFrame:
    """curator_udfs.fine_increment's input rows for the groups that gained members and keep
    their fine clusters: their current members with embeddings, their stored members (ids and
    hashes) and their stored fine clusters (name, size, centroid; hash 0, never NULL: a NULL
    would turn the column into float64 in pandas and merge nearby hashes); one frame, grouped
    by coarse once."""
    none = {"string": F.lit(None).cast("string"), "long": F.lit(None).cast("long")}
    cur = assigned.where(in_grown).select(
        "sample_id", "embedding", "coarse", "embedding_hash", F.lit("member").alias("kind"),
        none["string"].alias("leaf"), none["long"].alias("leaf_size"),
    )  # fmt: skip
    was = old.where(in_grown).select(
        "sample_id", F.lit(None).cast("array<float>").alias("embedding"), "coarse",
        "embedding_hash", F.lit("stored").alias("kind"), none["string"].alias("leaf"),
        none["long"].alias("leaf_size"),
    )  # fmt: skip
    leaves = stored.where(in_grown & F.col("a").isNull()).select(
        none["string"].alias("sample_id"), F.col("centroid").alias("embedding"), "coarse",
        F.lit(0).cast("long").alias("embedding_hash"), F.lit("leaf").alias("kind"),
        F.col("cluster").alias("leaf"), F.col("cluster_size").alias("leaf_size"),
    )  # fmt: skip
    return cur.unionByName(was).unionByName(leaves)
