"""Small DataFrames of driver-side values, built in the JVM.

`spark.createDataFrame(list)` goes through a Python RDD: every action over it first runs a job
whose tasks start in Python workers (about 0.5 s for a batch's 16-row shard list, measured in
an ingest's event log) and, where the frame feeds a Python UDF, a second Python worker per
task. A `Range` whose rows pick their values from literal arrays costs none of that.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["literal_frame"]


def literal_frame(
    spark: SparkSession,
    rows: Sequence[Sequence[object]],
    columns: Sequence[tuple[str, str]],
    *,
    partitions: int = 1,
) -> DataFrame:
    """`rows` as a DataFrame of `columns` ((name, Spark SQL type), in the rows' order) in
    `partitions` slices of consecutive rows; meant for tens of rows, not data."""
    slot = F.col("id").cast("int") + 1
    picked = [
        F.element_at(F.array(*[F.lit(row[i]).cast(ddl) for row in rows]), slot)
        .cast(ddl)  # typed also without rows
        .alias(name)
        for i, (name, ddl) in enumerate(columns)
    ]
    return spark.range(0, len(rows), 1, max(1, partitions)).select(*picked)
