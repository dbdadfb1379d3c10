"""Delta idempotent writes (`txnAppId`/`txnVersion`): an append whose cost does not grow with
the table, and that a repeated or concurrent run cannot duplicate.

Delta records, per application id, the last transaction version committed with it, and skips a
write whose version is not above it. A writer here claims `recorded + 1`, where `recorded` is
the application's version in the very snapshot its pending set was read from (`TxnPoint`).
Such a write can only commit if no other write of the same application committed after that
snapshot, so every row the writer computed as pending really was still missing: no duplicates,
whatever else (other models, classify, ALTER TABLE) commits in between. A run that loses the
race (another run of the same application committed first, e.g. both read the same snapshot)
writes nothing; its caller reports that.

Why `recorded + 1` and not the table version the pending set was read at: unrelated commits
raise the table version, so a run that read later would claim a higher version than a slower
run that read earlier, and both would commit the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.session import session_conf
from spark_jobs.tables import commit_info, delta_snapshot, latest_version

# Session confs Delta reads for idempotent DML (MERGE/UPDATE/DELETE) and for commit metadata.
DML_APP_ID = "spark.databricks.delta.write.txnAppId"
DML_VERSION = "spark.databricks.delta.write.txnVersion"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class TxnPoint:
    """Where a writer read the table: the table version, and the transaction version its
    write claims (the application's recorded version in that snapshot + 1)."""

    app_id: str
    table_version: int
    txn_version: int

    def next(self) -> TxnPoint:
        """The claim of the writer's next write, after this one committed."""
        return TxnPoint(self.app_id, self.table_version, self.txn_version + 1)


def recorded_version(spark: SparkSession, path: str, app_id: str) -> int:
    """The application's last committed transaction version in the table now, -1 if none."""
    opt = delta_snapshot(spark, path).transactions().get(app_id)
    return int(opt.get()) if opt.isDefined() else -1


def txn_point(spark: SparkSession, path: str, app_id: str) -> TxnPoint:
    """The table's current snapshot as a TxnPoint: read the pending set at `table_version`."""
    snap = delta_snapshot(spark, path)
    opt = snap.transactions().get(app_id)
    recorded = int(opt.get()) if opt.isDefined() else -1
    return TxnPoint(app_id, int(snap.version()), recorded + 1)


def _our_commit(spark: SparkSession, path: str, before: int, note: str) -> dict[str, str] | None:
    """operationMetrics of the commit after `before` that carries `note`, None if none does.

    Read from the commit files themselves (one small JSON file each, newest first), not with a
    history query, which costs a Spark query per call. A commit file this process cannot read
    (another filesystem configuration than Spark's, a commit not yet in `_delta_log`) falls
    back to the history query: an unread commit never passes for someone else's."""
    latest = latest_version(spark, path)
    for version in range(latest, before, -1):
        info = commit_info(path, version)
        if info is None:
            rows = (
                DeltaTable.forPath(spark, path)
                .history(latest - before)
                .where(F.col("userMetadata") == note)
                .select("operationMetrics")
                .collect()
            )
            return dict(rows[0]["operationMetrics"] or {}) if rows else None
        if info.get("userMetadata") == note:
            return {str(k): str(v) for k, v in (info.get("operationMetrics") or {}).items()}
    return None


def _note(point: TxnPoint, run_id: str) -> str:
    return json.dumps({"app": point.app_id, "txn": point.txn_version, "run_id": run_id})


def append_once(
    spark: SparkSession, df: DataFrame, path: str, point: TxnPoint, run_id: str
) -> int | None:
    """Append `df` to the Delta table at `path` as transaction `point`; rows written, or None
    when Delta skipped it (this application already committed that version: lost race/rerun).

    A blind append: it reads no target file, so its cost does not depend on the table's size.
    """
    note = _note(point, run_id)
    before = latest_version(spark, path)
    (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", point.app_id)
        .option("txnVersion", str(point.txn_version))
        .option("userMetadata", note)
        .save(path)
    )
    metrics = _our_commit(spark, path, before, note)
    return None if metrics is None else int(metrics.get("numOutputRows", 0) or 0)


def dml_once(
    spark: SparkSession, path: str, point: TxnPoint, run_id: str, run: Callable[[], object]
) -> dict[str, str] | None:
    """Run `run()` (a MERGE/UPDATE on the table at `path`) as transaction `point`; its commit's
    operationMetrics, or None when Delta skipped it (see append_once)."""
    note = _note(point, run_id)
    confs = {DML_APP_ID: point.app_id, DML_VERSION: str(point.txn_version), USER_METADATA: note}
    before = latest_version(spark, path)
    with session_conf(spark, confs):
        run()
    return _our_commit(spark, path, before, note)
