"""Recording ingested shards in `shards`: an idempotent append where that is safe, else a MERGE.

A batch's `shards` rows are written last (after its `images` and `quarantine` rows): they are
what makes a shard done. The cheap write is a blind append (0.4-0.8 s here, where an insert-only
MERGE of 16 rows costs 2-4 s: most of an ingest batch's fixed cost). It is safe exactly when no
rows were recorded since the snapshot the run's pending shards were read from, for then none of
the batch's shards is in the table yet. Delta's transaction ids tell (spark_jobs.idempotent):
every write that adds rows to `shards` commits as a transaction of the application
`curator-ingest` (creating the table and adding columns add none), and an append claims the
version after the one read with that snapshot (`TxnPoint`). Delta skips the append when another
such write committed before it started, and fails it (ConcurrentTransactionException) when one
commits while it runs; either way the batch goes to the MERGE.

The MERGE, right whatever the table holds, is also how retried (failed) shards are updated. It
commits as the application's next transaction at the table's current snapshot, so every other
run's older claim is skipped in turn; a MERGE that loses a race is retried on a newer snapshot.
After one MERGE the run's later batches merge too: their pending set is older than the commits
it had to step over. Preconditions: every ingest writing the warehouse is this version or later
(an older one merges untagged), and `delta.setTransactionRetentionDuration` is not set on
`shards` (expired transaction ids would let an old claim pass).
"""

from __future__ import annotations

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentTransactionException,
    MetadataChangedException,
)
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.config import Config
from spark_jobs.idempotent import TxnPoint, append_once, dml_once, recorded_version, txn_point
from spark_jobs.tables import (
    SHARDS,
    conform,
    ensure_table,
    merge_insert_new,
    merge_upsert,
    table_path,
)

APP_ID = "curator-ingest"
MERGE_TRIES = 3
# Another run's commit to `shards` landed while this write ran: Delta failed this one, which
# committed nothing (an `ALTER TABLE ADD COLUMNS` of a newer run is a metadata change).
RACES = (ConcurrentTransactionException, ConcurrentAppendException, MetadataChangedException)


class ShardRecorder:
    """The `shards` table of one ingest run: what was recorded when the run started, and the
    writes that record each batch (module docstring)."""

    def __init__(self, spark: SparkSession, cfg: Config, run_id: str) -> None:
        self.spark, self.cfg, self.run_id = spark, cfg, run_id
        ensure_table(spark, cfg, SHARDS)
        self.path = table_path(cfg, SHARDS.logical)
        self.point: TxnPoint | None = txn_point(spark, self.path, APP_ID)
        self.appended = self.merged = 0  # batches recorded each way (the run's summary)

    def recorded(self) -> dict[str, str]:
        """shard_uri → status of every shard recorded in the snapshot the claim was read at."""
        if self.point is None:
            raise RuntimeError("ShardRecorder.recorded() is read once, before the first record()")
        done = (
            self.spark.read.format("delta")
            .option("versionAsOf", self.point.table_version)
            .load(self.path)
            .select("shard_uri", "status")
            .collect()
        )
        return {r.shard_uri: r.status for r in done}

    def record(self, shards: DataFrame, *, scope: str, retried: bool) -> None:
        """Write one batch's `shards` rows: appended as the run's next claim, or merged."""
        if self.point is not None and not retried:
            rows = conform(shards, SHARDS)
            try:
                appended = append_once(self.spark, rows, self.path, self.point, self.run_id)
            except RACES:
                appended = None
            if appended is not None:
                self.point = self.point.next()
                self.appended += 1
                return
        self.point = None
        merge = merge_upsert if retried else merge_insert_new
        for _ in range(MERGE_TRIES):
            fresh = txn_point(self.spark, self.path, APP_ID)
            try:
                done = dml_once(
                    self.spark,
                    self.path,
                    fresh,
                    self.run_id,
                    lambda: merge(self.spark, self.cfg, SHARDS, shards, scope=scope),
                )
            except RACES:
                continue
            # A MERGE that inserts nothing still commits its transaction id, so None means Delta
            # skipped it (another run took this transaction first: retry on a newer snapshot),
            # unless the application's version shows it never got this far.
            if (
                done is not None
                or recorded_version(self.spark, self.path, APP_ID) < fresh.txn_version
            ):
                self.merged += 1
                return
        raise RuntimeError(
            f"ingest: {MERGE_TRIES} tries to record shards lost to other ingest runs writing "
            f"the same warehouse at once; rerun ingest (it continues where they left off)"
        )
