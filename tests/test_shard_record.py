"""`shards` records: appended while nothing else was recorded since the run's snapshot, merged
once another run got in between, never twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def _rows(spark, uri: str, run_id: str, status: str = "ok"):  # type: ignore[no-untyped-def]
    from spark_jobs.tables import SHARDS, conform

    at = datetime.now(UTC)
    df = spark.createDataFrame(
        [(uri, 10, 1.0, 1, 1, 0, 10, status, None, at, run_id, "copy")], SHARDS.schema
    )
    return conform(df, SHARDS)


def test_interleaved_runs_record_each_shard_once(spark, make_cfg: Callable) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.catalog import register_tables
    from spark_jobs.shard_record import ShardRecorder
    from spark_jobs.tables import read_table

    cfg = make_cfg()
    register_tables(spark, cfg)  # the database, as a session of the job makes it
    first, second = ShardRecorder(spark, cfg, "r1"), ShardRecorder(spark, cfg, "r2")
    assert first.recorded() == {} and second.recorded() == {}

    def record(rec: ShardRecorder, uri: str) -> None:
        rec.record(_rows(spark, uri, rec.run_id), scope=f"t.shard_uri = '{uri}'", retried=False)

    record(first, "a")  # nothing in between: appended
    assert (first.appended, first.merged) == (1, 0)
    record(second, "a")  # `first` got in between: append skipped; the MERGE adds no row (but
    # commits its transaction id, the one after `first`'s)
    record(second, "b")  # merged from now on
    assert (second.appended, second.merged) == (0, 2) and second.point is None
    record(first, "c")  # `second`'s MERGE of b took the next transaction: `first` merges too
    assert (first.appended, first.merged) == (1, 1)
    got = sorted((r.shard_uri, r.run_id) for r in read_table(spark, cfg, "shards").collect())
    assert got == [("a", "r1"), ("b", "r2"), ("c", "r1")]
    assert ShardRecorder(spark, cfg, "r3").recorded() == {"a": "ok", "b": "ok", "c": "ok"}


def test_a_retried_shard_is_updated_in_place(spark, make_cfg: Callable) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.catalog import register_tables
    from spark_jobs.shard_record import ShardRecorder
    from spark_jobs.tables import read_table

    cfg = make_cfg()
    register_tables(spark, cfg)  # the database, as a session of the job makes it
    rec = ShardRecorder(spark, cfg, "r1")
    rec.record(_rows(spark, "a", "r1", "failed"), scope="t.shard_uri = 'a'", retried=False)
    retry = ShardRecorder(spark, cfg, "r2")
    assert retry.recorded() == {"a": "failed"}
    retry.record(_rows(spark, "a", "r2"), scope="t.shard_uri = 'a'", retried=True)
    rows = read_table(spark, cfg, "shards").collect()
    assert [(r.shard_uri, r.status, r.run_id) for r in rows] == [("a", "ok", "r2")]
    assert (retry.appended, retry.merged) == (0, 1)
