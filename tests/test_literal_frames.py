"""spark_jobs.literal_frames: small frames of driver values, built in the JVM."""

from __future__ import annotations

from spark_jobs.literal_frames import literal_frame


def test_rows_keep_their_order_types_and_nulls(spark) -> None:
    rows = [("a", 1, 0.5), ("b", None, None), ("c", 3, 2.0)]
    df = literal_frame(spark, rows, [("s", "string"), ("n", "bigint"), ("x", "double")])
    assert df.schema.simpleString() == "struct<s:string,n:bigint,x:double>"
    assert [tuple(r) for r in df.collect()] == rows
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "ExistingRDD" not in plan and "Range (0, 3" in plan, plan


def test_partitions_hold_consecutive_rows(spark) -> None:
    from pyspark.sql import functions as F

    df = literal_frame(spark, [(i,) for i in range(6)], [("i", "int")], partitions=3)
    assert df.rdd.getNumPartitions() == 3
    parts = df.groupBy(F.spark_partition_id().alias("p")).agg(F.sort_array(F.collect_list("i")))
    assert sorted(tuple(r[1]) for r in parts.collect()) == [(0, 1), (2, 3), (4, 5)]


def test_no_rows_is_an_empty_typed_frame(spark) -> None:
    df = literal_frame(spark, [], [("eps", "double")])
    assert df.collect() == [] and df.schema.simpleString() == "struct<eps:double>"


def test_values_keep_the_declared_type_not_a_coerced_one(spark) -> None:
    """Each literal is cast to its column's type: big integers stay exact, mixed ints and
    floats are doubles, any string (quotes, unicode, long) is kept as it is."""
    big = 2**53 + 1
    uri = "s3://b/a 'quoted' \\ é/" + "x" * 2000 + ".tar"
    rows = [(big, 1, uri), (-big, 2.5, None)]
    df = literal_frame(spark, rows, [("n", "bigint"), ("x", "double"), ("s", "string")])
    assert [tuple(r) for r in df.collect()] == [(big, 1.0, uri), (-big, 2.5, None)]
