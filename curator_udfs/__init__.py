"""Per-batch logic the Spark jobs ship to executors; importable without a SparkSession."""
