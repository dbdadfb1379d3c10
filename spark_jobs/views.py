"""Views over the tables for SQL users (later stages add theirs here)."""

from __future__ import annotations

from pyspark.sql import SparkSession

from spark_jobs.config import Config


def register_views(spark: SparkSession, cfg: Config) -> list[str]:
    """Create the views whose tables exist; return their statements for catalog.sql."""
    return []
