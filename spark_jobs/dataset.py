"""`Dataset`: a Spark DataFrame of samples plus the warehouse config it belongs to (the notebook
API's value type; `spark_jobs/api.py` is the facade users import)."""


from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.classifiers import ClassifierHead
from curator_udfs.embedders import ImageEmbedder
from curator_udfs.model_ids import model_id
from curator_udfs.predicates import PredicateError, validate_predicates
from curator_udfs.specs import head_columns
from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.dataset_ops import embed_dataframe, score_dataframe, spec_for
from spark_jobs.summary import Summary, new_run_id

# Columns an embedding step (re)defines: dropped before a new embedding is added.
_EMBED_COLUMNS = (
    "embedding", "error", "embedding_dim", "model", "scored_at",
    "clip_score", "sharpness", "colorfulness", "grayscale",
)  # fmt: skip
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _job_tables() -> set[str]:
    """Tables only their jobs (or the dedicated Dataset methods) write; save_as refuses them.
    `curated` is the exception: save_as("curated") stands in for `curator filter`."""
    from spark_jobs.tables import ALL_TABLES

    return set(ALL_TABLES) - {"curated"}


def session(cfg: Config | None = None, app_name: str = "curator-notebook") -> SparkSession:
    """A SparkSession set up like the jobs' (profile, Delta, jars) for `cfg` (default config)."""
    from spark_jobs.session import build_session

    return build_session(cfg or load_config(), app_name=app_name)


class Dataset:
    """A Spark DataFrame of samples (one row per `sample_id`) plus the config it belongs to.

    `model` is the id of the model that made the `embedding` column (the `model` value of the
    `scores` table), `score_columns` the head columns it has.
    """

    def __init__(
        self,
        spark: SparkSession,
        cfg: Config,
        df: DataFrame,
        *,
        model: str | None = None,
        embedding_dim: int | None = None,
        score_columns: Sequence[str] = (),
        duplicates: DataFrame | None = None,
        dedup_eps: float | None = None,
    ) -> None:
        self.spark = spark
        self.cfg = cfg
        self.df = df
        self.model = model
        self.embedding_dim = embedding_dim
        self.score_columns = tuple(score_columns)
        self.duplicates = duplicates  # the rows the last semantic dedup removed (duplicates schema)
        self.dedup_eps = dedup_eps
        self.last_summary: Summary | None = None  # what the call that made it did, if it wrote
        self._saved: dict[str, Any] | None = None  # set by save_as: {table, path, version}

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def from_shards(
        cls,
        spark: SparkSession,
        shards: str | Path | Sequence[str | Path],
        cfg: Config | None = None,
    ) -> Dataset:
        """Ingest `shards` (dirs, globs, URIs) into `cfg`'s warehouse like `curator ingest`
        (persisted, incremental: shards already ingested are skipped) and return their images."""
        from spark_jobs import ingest
        from spark_jobs.catalog import register_tables
        from spark_jobs.tables import read_table

        cfg = cfg or load_config()
        inputs = [str(shards)] if isinstance(shards, (str, Path)) else [str(s) for s in shards]
        files = ingest.list_inputs(cfg, inputs)
        register_tables(spark, cfg)  # creates the database the tables are registered in
        summary = ingest.run(spark, cfg, files=files)
        register_tables(spark, cfg)
        images = read_table(spark, cfg, "images").where(
            F.col("shard_uri").isin([f.uri for f in files])
        )
        ds = cls(spark, cfg, images)
        ds.last_summary = summary
        return ds

    @classmethod
    def from_tables(
        cls,
        spark: SparkSession,
        cfg: Config | None = None,
        *,
        model: str | None = None,
        scores: bool = True,
    ) -> Dataset:
        """The warehouse's images joined with their `scores` rows of `model` (default: the one
        the dedup job would use); `scores=False` gives the images alone."""
        from spark_jobs.catalog import register_tables
        from spark_jobs.dedup import scores_model
        from spark_jobs.embed import BASE_COLUMNS
        from spark_jobs.tables import is_delta, read_table, table_path

        cfg = cfg or load_config()
        if not is_delta(table_path(cfg, "images")):
            raise ConfigError(
                f"the warehouse {cfg.warehouse_path} has no `images` table; ingest first: "
                "Dataset.from_shards(spark, shards, cfg) or `curator ingest`"
            )
        register_tables(spark, cfg)
        images = read_table(spark, cfg, "images")
        if not scores:
            return cls(spark, cfg, images)
        model = model or scores_model(spark, cfg)
        if model is None:
            raise ConfigError(
                f"the warehouse {cfg.warehouse_path} has no scores yet; run `curator embed` or "
                "ds.persist_scores(), or pass scores=False for the images alone"
            )
        table = read_table(spark, cfg, "scores")
        joined = images.join(
            table.where(F.col("model") == model).drop("run_id"), "sample_id", "inner"
        )
        heads = [c for c in table.columns if c not in BASE_COLUMNS]
        dims = [
            r["embedding_dim"]
            for r in table.where(F.col("model") == model)
            .where(F.col("embedding_dim").isNotNull())
            .select("embedding_dim")
            .limit(1)
            .collect()
        ]
        return cls(
            spark, cfg, joined, model=model, embedding_dim=dims[0] if dims else None,
            score_columns=heads,
        )  # fmt: skip

    def _with(self, df: DataFrame, **changes: Any) -> Dataset:
        state: dict[str, Any] = {
            "model": self.model,
            "embedding_dim": self.embedding_dim,
            "score_columns": self.score_columns,
            "duplicates": self.duplicates,
            "dedup_eps": self.dedup_eps,
        }
        state.update(changes)
        return Dataset(self.spark, self.cfg, df, **state)

    # ---- looking at it --------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The frame's columns."""
        return self.df.columns

    def count(self) -> int:
        """Number of rows (runs a Spark job)."""
        return self.df.count()

    def show(self, n: int = 20, *, truncate: bool | int = True, wide: bool = False) -> None:
        """Print `n` rows; image bytes and embeddings are left out unless `wide`."""
        df = self.df if wide else self.df.drop("image", "embedding")
        df.show(n, truncate=truncate)

    def __repr__(self) -> str:
        cols = ", ".join(self.df.columns)
        return f"Dataset(model={self.model!r}, database={self.cfg.database!r}, columns=[{cols}])"

    # ---- model steps ----------------------------------------------------------------------------
    def embed(
        self, embedder: ImageEmbedder, *, heads: Sequence[Any] = (), image_col: str = "image"
    ) -> Dataset:
        """The rows plus `embedding`, `error` (and `heads`' scores), computed now and cached.

        What `embedder(ds)` calls. A previous embedding and its head columns are replaced.
        Like the embed job, the images are read in the partitions they are stored in (no
        shuffle of the bytes): the read of the images table is split for about one task per
        few forward batches; a frame from elsewhere keeps its own partitions.
        """
        from spark_jobs.embed import num_tasks
        from spark_jobs.embed_input import SPLIT_CONF, split_bytes
        from spark_jobs.session import ARROW_BATCH_CONF, session_conf
        from spark_jobs.tables import is_delta, table_path

        spec = spec_for(embedder, heads)
        columns = head_columns(spec)
        df = self.df.drop(*_EMBED_COLUMNS, *self.score_columns, *columns)
        out = embed_dataframe(df, spec, image_col=image_col)
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        confs = {ARROW_BATCH_CONF: str(self.cfg.embed.arrow_batch_size)}
        if is_delta(table_path(self.cfg, "images")):
            n = df.count()
            tasks = num_tasks(self.spark, n, spec.batch_size)
            confs[SPLIT_CONF] = str(split_bytes(self.spark, self.cfg, n, tasks))
        with session_conf(self.spark, confs):  # read when the plan runs: set for the first run
            row = out.agg(F.max(F.size("embedding")).alias("dim")).first()  # runs the model
        dim = row["dim"] if row and row["dim"] is not None and row["dim"] >= 0 else None
        return self._with(out, model=model_id(spec), embedding_dim=dim, score_columns=columns)

    def score(self, head: ClassifierHead) -> Dataset:
        """The rows plus `head`'s score column from the embedding (what `head(ds)` calls)."""
        if "embedding" not in self.df.columns:
            raise ValueError(
                f"{head.name} head: this Dataset has no embedding column; embed first, e.g. "
                "ds = TimmImageEmbedder(...)(ds), or start from Dataset.from_tables(spark, cfg)"
            )
        if self.embedding_dim is not None:
            head.check_dim(self.embedding_dim)
        spec = spec_for(None, [head])
        (column,) = head_columns(spec)
        out = score_dataframe(self.df.drop(column), spec)
        cols = tuple(c for c in self.score_columns if c != column) + (column,)
        return self._with(out, score_columns=cols)

    # ---- filtering and dedup --------------------------------------------------------------------
    def filter(self, *predicates: str) -> Dataset:
        """Rows for which every SQL predicate is true, validated like `filter.predicates`
        (one deterministic boolean expression over known columns; no statements, subqueries
        or UDFs), then by Spark's analyzer; applied with `DataFrame.where`."""
        from spark_jobs.filter import analyze_predicate

        if not predicates:
            raise ValueError("filter(): give at least one SQL predicate, e.g. 'width >= 256'")
        try:
            valid = validate_predicates(predicates, self.df.columns)
        except PredicateError as exc:
            raise ValueError(str(exc)) from None
        out = self.df
        for p in valid:
            try:
                analyze_predicate(self.df, p)
            except ConfigError as exc:
                raise ValueError(str(exc).replace("config key `filter.predicates`: ", "")) from None
            out = out.where(p.text)
        return self._with(out)

    # ---- writing --------------------------------------------------------------------------------
    def persist_scores(self) -> Summary:
        """Upsert the embedding and head scores into `scores` under this Dataset's model id
        (head columns the table lacks are added; other heads' values are left alone)."""
        from spark_jobs.catalog import register_tables
        from spark_jobs.embed import ensure_score_columns
        from spark_jobs.tables import SCORES, ensure_table, merge_counts

        if self.model is None or "embedding" not in self.df.columns:
            raise ValueError(
                "persist_scores(): this Dataset has no embedding from a known model; "
                "embed it first: ds = TimmImageEmbedder(...)(ds)"
            )
        summary = Summary(job="persist_scores", run_id=new_run_id("api"), unit="images")
        ensure_score_columns(self.spark, self.cfg, list(self.score_columns))
        error = F.col("error") if "error" in self.df.columns else F.lit(None).cast("string")
        rows = self.df.select(
            "sample_id",
            F.lit(self.model).alias("model"),
            "embedding",
            F.when(F.col("embedding").isNull(), F.lit(None))
            .otherwise(F.size("embedding"))
            .cast("int")
            .alias("embedding_dim"),
            *self.score_columns,
            error.alias("error"),
            F.lit(datetime.now(UTC)).cast("timestamp").alias("scored_at"),
            F.lit(summary.run_id).alias("run_id"),
        )
        columns: dict[str, str | Column] = {c: f"s.`{c}`" for c in rows.columns}
        target = ensure_table(self.spark, self.cfg, SCORES)
        result = (
            target.alias("t")
            .merge(rows.alias("s"), "t.sample_id = s.sample_id AND t.model = s.model")
            .whenMatchedUpdate(set=columns)
            .whenNotMatchedInsert(values=columns)
            .execute()
        )
        counts = merge_counts(result)
        inserted, updated = counts["num_inserted_rows"], counts["num_updated_rows"]
        register_tables(self.spark, self.cfg)
        summary.rows_in = summary.rows_written = inserted + updated
        summary.extra.update(model=self.model, inserted=inserted, updated=updated)
        return summary.finish()

    def persist_duplicates(self) -> Summary:
        """Replace the `duplicates` rows of semantic dedup at this eps with the ones the last
        SemanticDeduplicator removed (one transaction; other methods and eps stay)."""
        from spark_jobs.catalog import register_tables
        from spark_jobs.dup_rule import DuplicateRule
        from spark_jobs.tables import DUPLICATES, replace_where

        if self.duplicates is None or self.dedup_eps is None:
            raise ValueError("persist_duplicates(): run SemanticDeduplicator(...)(ds) first")
        summary = Summary(job="persist_duplicates", run_id=new_run_id("api"), unit="samples")
        rows = self.duplicates.withColumn("run_id", F.lit(summary.run_id))
        # the rows the filter would count at this eps: the one eps equality of the project
        where = DuplicateRule(methods=("semantic",), eps=self.dedup_eps).condition()
        replace_where(self.spark, self.cfg, DUPLICATES, rows, where)
        register_tables(self.spark, self.cfg)
        summary.rows_in = summary.rows_written = self.duplicates.count()
        summary.extra["eps"] = self.dedup_eps
        return summary.finish()

    def save_as(self, name: str) -> Summary:
        """Overwrite the Delta table `name` of the warehouse with these rows (one transaction),
        without image bytes and embeddings (they stay in `images` and `scores`).

        `save_as("curated")` writes what `curator filter` writes, so `curator export`, the
        report and lineage read it; the Dataset remembers the version for `to_webdataset`.
        """
        from spark_jobs.catalog import register_tables
        from spark_jobs.tables import table_name, table_path

        protected = _job_tables()
        if not _NAME.match(name) or name in protected:
            raise ValueError(
                f"save_as({name!r}): give a plain table name that is not one of the job tables "
                f"{', '.join(sorted(protected))} (use persist_scores / persist_duplicates for "
                "those)"
            )
        summary = Summary(job="save_as", run_id=new_run_id("api"), unit="samples")
        stamp = "curated_at" if name == "curated" else "saved_at"
        out = self.df.drop("image", "embedding", "run_id", stamp).select(
            "*",
            F.lit(datetime.now(UTC)).cast("timestamp").alias(stamp),
            F.lit(summary.run_id).alias("run_id"),
        )
        path = table_path(self.cfg, name)
        out.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table_name(self.cfg, name)} USING delta LOCATION '{path}'"
        )
        last = self.spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
        assert last is not None  # just written: the table has at least one commit
        version = int(last["version"])
        register_tables(self.spark, self.cfg)
        self._saved = {"table": name, "path": path, "version": version}
        summary.rows_in = summary.rows_written = self.spark.read.format("delta").load(path).count()
        summary.extra.update(table=table_name(self.cfg, name), version=version)
        return summary.finish()

    def to_webdataset(
        self,
        output: str | Path,
        *,
        samples_per_shard: int | None = None,
        max_shard_bytes: int | None = None,
        record: bool | None = None,
    ) -> Summary:
        """Write the rows as WebDataset shards + manifest.json, exactly like `curator export`
        (original bytes, `.txt`, `.json` without the embedding, deterministic packing).

        `record` (default: whether this Dataset was saved as `curated`) also overwrites the
        `exported` table, which maps the `curated` table's samples to shard positions.
        """
        from spark_jobs.export import export_frame

        changes = {
            k: v
            for k, v in (
                ("samples_per_shard", samples_per_shard),
                ("max_shard_bytes", max_shard_bytes),
            )
            if v is not None
        }
        cfg = self.cfg
        if changes:
            cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update=changes)})
        saved_curated = self._saved is not None and self._saved["table"] == "curated"
        record = saved_curated if record is None else record
        return export_frame(
            self.spark,
            cfg,
            self.df.drop("embedding"),
            str(output),
            record=record,
            source=self._saved if saved_curated else {"table": None, "api": "Dataset"},
        )
