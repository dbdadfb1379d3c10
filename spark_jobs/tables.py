"""The Delta tables of the warehouse: their schemas, where they live, names in the catalog.

Tables live at `<warehouse>/<database>.db/<table>` and are registered by location when a
session starts, so every command (and `spark-sql -i <warehouse>/catalog.sql`) sees them by name
without an embedded metastore that admits one process at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.shard_listing import url_to_fs
from spark_jobs.config import Config, ConfigError
from spark_jobs.paths import StoreURI, is_uri


@dataclass(frozen=True)
class TableDef:
    """A table of the warehouse: its logical name (a key of `tables:` in the config) and schema."""

    logical: str
    schema: str
    keys: tuple[str, ...]
    comment: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # Delta table properties, set when absent


SHARDS = TableDef(
    "shards",
    "shard_uri STRING NOT NULL, size BIGINT, mtime DOUBLE, samples BIGINT, images BIGINT, "
    "quarantined BIGINT, bytes_read BIGINT, status STRING, error STRING, "
    "ingested_at TIMESTAMP, run_id STRING, byte_mode STRING",
    ("shard_uri",),
    "one row per ingested shard; status ok | truncated | failed; byte_mode copy | reference "
    "(its images' bytes are read from the shard, which must keep its size and mtime)",
)
IMAGES = TableDef(
    "images",
    "sample_id STRING NOT NULL, key STRING, shard_uri STRING, image BINARY, image_format STRING, "
    "image_ext STRING, width INT, height INT, image_bytes BIGINT, image_sha256 STRING, "
    "caption STRING, meta STRING, warnings ARRAY<STRING>, ingested_at TIMESTAMP, run_id STRING, "
    "caption_language STRING, caption_language_score DOUBLE, caption_words INT, caption_chars INT, "
    "ordinal BIGINT, image_offset BIGINT",
    ("sample_id",),
    "original image bytes (never re-encoded; NULL in reference mode: bytes image_offset to "
    "image_offset + image_bytes of the shard), header metadata, hashes, caption, JSON metadata, "
    "caption signals (language, its score, words, characters; NULL on rows ingested before them), "
    "ordinal (the sample's position in its shard, as in quarantine)",
)
# `images` file statistics (data skipping) on every column but the image bytes, caption, JSON
# and warnings: nobody prunes files by their min/max, and collecting them cost the MERGE's
# writer CPU per row and every commit's log bytes
IMAGES_NO_STATS = ("image", "caption", "meta", "warnings")
_stats = [c.split()[0] for c in IMAGES.schema.split(", ") if c.split()[0] not in IMAGES_NO_STATS]
IMAGES = replace(IMAGES, properties=(("delta.dataSkippingStatsColumns", ",".join(_stats)),))
# a property left alone when the user set the other (it would override theirs)
_OVERRIDES = {"delta.dataSkippingStatsColumns": "delta.dataSkippingNumIndexedCols"}
QUARANTINE = TableDef(
    "quarantine",
    "shard_uri STRING NOT NULL, ordinal BIGINT NOT NULL, key STRING, member STRING, reason STRING, "
    "detail STRING, size BIGINT, quarantined_at TIMESTAMP, run_id STRING",
    ("shard_uri", "ordinal"),
    "every sample or member that could not be ingested, with the reason; "
    "ordinal = position in the shard",
)

SCORES = TableDef(
    "scores",
    "sample_id STRING NOT NULL, model STRING NOT NULL, embedding ARRAY<FLOAT>, "
    "embedding_dim INT, error STRING, scored_at TIMESTAMP, run_id STRING, "
    "clip_score DOUBLE, sharpness DOUBLE, colorfulness DOUBLE, grayscale BOOLEAN",  # + heads
    ("sample_id", "model"),
    "one row per image per model: L2-normalised embedding, head scores, or the decode error; "
    "clip_score (image-caption cosine, CLIP models with a text tower), sharpness, colorfulness, "
    "grayscale; one DOUBLE column per configured head (added by embed/classify)",
)
# Session settings for a write of `scores` rows: parquet-java built a dictionary of every
# file's embedding floats and dropped it again (about a tenth of embed's JVM CPU).
SCORES_WRITE_CONF = {"parquet.enable.dictionary#embedding.list.element": "false"}
PHASHES = TableDef(
    "phashes",
    "sample_id STRING NOT NULL, phash BIGINT, error STRING, hashed_at TIMESTAMP, run_id STRING",
    ("sample_id",),
    "64-bit perceptual hash per image (signed), or why the image could not be hashed",
)
DUPLICATES = TableDef(
    "duplicates",
    "sample_id STRING NOT NULL, duplicate_of STRING, similar_to STRING, similarity DOUBLE, "
    "method STRING NOT NULL, eps DOUBLE, cluster STRING, run_id STRING",
    ("sample_id", "method", "eps"),
    "one row per duplicate per method (and eps for semantic): the kept sample it duplicates",
)
DUPLICATE_PAIRS = TableDef(
    "duplicate_pairs",
    "a STRING NOT NULL, b STRING NOT NULL, similarity DOUBLE, method STRING NOT NULL, "
    "cluster STRING, run_id STRING",
    ("a", "b", "method"),
    "every similar pair found (a < b), semantic at the lowest threshold; with write_pairs",
)
DEDUP_CENTROIDS = TableDef(
    "dedup_centroids",
    "model STRING NOT NULL, seed BIGINT, k INT, dim INT, backend STRING, "
    "centroid_id INT NOT NULL, centroid ARRAY<FLOAT>, run_id STRING, fitted_at TIMESTAMP",
    ("model", "centroid_id"),
    "semantic dedup: the coarse k-means centroids of each model (one set per model, with the "
    "seed and k they were fitted with); incremental runs reuse them, a refit replaces them",
)
DEDUP_MEMBERS = TableDef(
    "dedup_members",
    "model STRING NOT NULL, coarse BIGINT NOT NULL, sample_id STRING NOT NULL, "
    "embedding_hash BIGINT, basis STRING, run_id STRING",
    ("model", "coarse", "sample_id"),
    "semantic dedup state: the representatives of each coarse group (an incremental run "
    "recomputes only the groups whose members changed); basis = centroid fit + parameters",
)
DEDUP_GROUP_PAIRS = TableDef(
    "dedup_group_pairs",
    "model STRING NOT NULL, coarse BIGINT NOT NULL, a STRING, b STRING, similarity DOUBLE, "
    "cluster STRING, dist_a DOUBLE, dist_b DOUBLE, cluster_size BIGINT, basis STRING, "
    "run_id STRING, centroid ARRAY<FLOAT>",
    ("model", "cluster", "a", "b"),
    "semantic dedup state: each coarse group's candidate pairs at the lowest threshold, and "
    "one row per fine cluster with a = b = NULL (its size and centroid); kept for untouched "
    "groups, extended for touched ones",
)
CURATED = TableDef(
    "curated",
    "sample_id STRING NOT NULL, curated_at TIMESTAMP, run_id STRING",  # + the scored columns
    ("sample_id",),
    "what passes the filters and is not a duplicate: the scored columns; export's input",
)
FILTER_STATS = TableDef(
    "filter_stats",
    "run_id STRING NOT NULL, position INT, kind STRING, predicate STRING NOT NULL, "
    "removed BIGINT, rows_in BIGINT, rows_out BIGINT, filtered_at TIMESTAMP",
    ("run_id", "position"),
    "per filter run: rows each predicate removed on its own, and duplicates removed",
)
EXPORTED = TableDef(
    "exported",
    "sample_id STRING NOT NULL, shard STRING NOT NULL, position INT NOT NULL, "
    "output STRING, curated_version BIGINT, run_id STRING, exported_at TIMESTAMP",
    ("sample_id",),
    "where the last export of `curated` put each sample: shard file and 0-based position",
)

ALL_TABLES: dict[str, TableDef] = {
    t.logical: t
    for t in (
        SHARDS, IMAGES, QUARANTINE, SCORES, PHASHES, DUPLICATES, DUPLICATE_PAIRS, CURATED,
        FILTER_STATS, EXPORTED, DEDUP_CENTROIDS, DEDUP_MEMBERS, DEDUP_GROUP_PAIRS,
    )  # fmt: skip
}


def conform(df: DataFrame, tdef: TableDef) -> DataFrame:
    """`df`'s columns of `tdef`, in its order and types (extra columns dropped)."""
    schema = df.sparkSession.createDataFrame([], tdef.schema).schema
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def replace_where(
    spark: SparkSession, cfg: Config, tdef: TableDef, df: DataFrame, where: str
) -> None:
    """Replace the table's rows matching `where` with `df`'s, in one Delta transaction."""
    ensure_table(spark, cfg, tdef)
    (
        conform(df, tdef)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", where)
        .save(table_path(cfg, tdef.logical))
    )


def db_dir(cfg: Config) -> Path | StoreURI:
    """`<warehouse>/<database>.db` (`<warehouse>/<catalog>/<schema>.db` for a Unity Catalog
    `catalog.schema`): a local path, or a URI for a warehouse on object storage."""
    catalog, _, schema = cfg.database.rpartition(".")
    return (cfg.warehouse_path / catalog if catalog else cfg.warehouse_path) / f"{schema}.db"


def physical_name(cfg: Config, logical: str) -> str:
    """The configured name (`tables.<logical>`) of one of ALL_TABLES."""
    if logical not in ALL_TABLES:
        raise KeyError(f"no table {logical!r}; the tables are {', '.join(ALL_TABLES)}")
    return str(getattr(cfg.tables, logical))


def table_path(cfg: Config, logical: str) -> str:
    """The table's directory: `<warehouse>/<database>.db/<name>`."""
    return str(db_dir(cfg) / physical_name(cfg, logical))


def table_name(cfg: Config, logical: str) -> str:
    """The table's catalog name, `database.name`."""
    return f"{cfg.database}.{physical_name(cfg, logical)}"


def is_delta(path: str | Path) -> bool:
    """Whether a Delta table with at least one commit lives there.

    A writer killed before its first commit leaves an empty (or temp-file-only) `_delta_log`:
    that is no table yet, and registering it would fail every later session.
    """
    def commit(name: str) -> bool:
        return name.split(".", 1)[0].isdigit() and name.endswith((".json", ".parquet"))

    if is_uri(str(path)):  # object storage: one listing of the log's prefix
        fs, log_key = url_to_fs(f"{str(path).rstrip('/')}/_delta_log")
        try:
            names = [str(p).rsplit("/", 1)[-1] for p in fs.ls(log_key, detail=False)]
        except FileNotFoundError:
            return False
        return any(commit(n) for n in names)
    log = Path(path) / "_delta_log"
    if not log.is_dir():
        return False
    return any(commit(p.name) for p in log.iterdir())


def _register_sql(cfg: Config, name: str, path: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table_name(cfg, name)} USING delta LOCATION '{path}'"


def ensure_table(spark: SparkSession, cfg: Config, tdef: TableDef) -> DeltaTable:
    """Create the table if it does not exist (at its warehouse location) and return it."""
    path = table_path(cfg, tdef.logical)
    if not is_delta(path):
        # by location, then by name in SQL: Delta's builder takes no three-part `catalog.schema.t`
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(spark.createDataFrame([], tdef.schema).schema)
            .comment(tdef.comment)
        )
        for key, value in tdef.properties:
            builder = builder.property(key, value)
        builder.execute()
    spark.sql(_register_sql(cfg, tdef.logical, path))
    return DeltaTable.forPath(spark, path)


def add_missing_columns(spark: SparkSession, cfg: Config, tdef: TableDef) -> list[str]:
    """Create the table if needed and add the columns of `tdef` that an older table lacks
    (their values on existing rows: NULL); return those added.

    Explicit `ALTER TABLE ADD COLUMNS` rather than schema auto-merge (as embed does for head
    columns), so a warehouse written before a column existed keeps working. The table's
    `properties` that an older table lacks are set too (one a user set is left as it is).
    """
    ensure_table(spark, cfg, tdef)
    existing = {c.lower() for c in read_table(spark, cfg, tdef.logical).columns}
    wanted = spark.createDataFrame([], tdef.schema).schema.fields
    new = [f for f in wanted if f.name.lower() not in existing]
    if new:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString().upper()}" for f in new)
        path = table_path(cfg, tdef.logical).replace("`", "``")
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({cols})")
    _set_missing_properties(spark, cfg, tdef)  # after the columns: a property may name them
    return [f.name for f in new]


def _set_missing_properties(spark: SparkSession, cfg: Config, tdef: TableDef) -> None:
    if not tdef.properties:
        return
    path = table_path(cfg, tdef.logical)
    conf = delta_snapshot(spark, path).metadata().configuration()
    taken = [k for k, _ in tdef.properties if conf.contains(_OVERRIDES.get(k, k))]
    if missing := [(k, v) for k, v in tdef.properties if not conf.contains(k) and k not in taken]:
        props = ", ".join(f"'{k}' = '{v}'" for k, v in missing)
        quoted = path.replace("`", "``")
        spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ({props})")


def read_table(
    spark: SparkSession, cfg: Config, logical: str, *, as_of: AsOf | None = None
) -> DataFrame:
    """A table by path (so it works before registration too): current, or as of `as_of`."""
    reader = spark.read.format("delta")
    if as_of is not None:
        reader = reader.option("versionAsOf", as_of.version_of(spark, cfg, logical))
    return reader.load(table_path(cfg, logical))


def table_exists(
    spark: SparkSession, cfg: Config, logical: str, *, as_of: AsOf | None = None
) -> bool:
    """Whether the table exists now, or existed at `as_of`'s time."""
    if not is_delta(table_path(cfg, logical)):
        return False
    return as_of is None or as_of.version_at(spark, cfg, logical) is not None


def table_ref(cfg: Config, logical: str, as_of: AsOf | None = None, spark: Any = None) -> str:
    """How SQL names the table: `db.name`, or `delta.`path` VERSION AS OF n` for `as_of`."""
    if as_of is None:
        return table_name(cfg, logical)
    path = table_path(cfg, logical).replace("`", "``")
    return f"delta.`{path}` VERSION AS OF {as_of.version_of(spark, cfg, logical)}"


def _history_ms(spark: SparkSession, path: str) -> list[tuple[int, int]]:
    """(version, commit time in epoch ms) of every commit of the table, oldest first."""
    rows = (
        DeltaTable.forPath(spark, path)
        .history()
        .selectExpr("version", "unix_millis(timestamp) AS ms")
        .collect()
    )
    return sorted((int(r["version"]), int(r["ms"])) for r in rows)


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


@dataclass
class AsOf:
    """One point in the warehouse's history, used to read every table as it was then.

    `--as-of N` (an integer) names version N of `curated` (each filter run writes one): the
    tables as they were while it was the current version (up to the commit that replaced
    it). `--as-of TIMESTAMP` is that time directly (read in the session time zone, e.g.
    `2026-11-25 18:30:00`). Every table is then read at its latest
    version committed at or before that time; a table whose first commit is later did not
    exist yet (read_table raises a ConfigError naming it, table_exists says False).
    """

    text: str
    ms: int
    curated_version: int | None = None
    _versions: dict[str, int | None] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        at = _fmt_ms(self.ms)
        if self.curated_version is None:
            return at
        return f"curated version {self.curated_version} ({at})"

    def version_at(self, spark: SparkSession, cfg: Config, logical: str) -> int | None:
        """The table's latest version committed at or before this time, None if none."""
        if logical not in self._versions:
            path = table_path(cfg, logical)
            history = _history_ms(spark, path) if is_delta(path) else []
            versions = [v for v, ms in history if ms <= self.ms]
            self._versions[logical] = max(versions) if versions else None
        return self._versions[logical]

    def version_of(self, spark: SparkSession, cfg: Config, logical: str) -> int:
        """As version_at, but a table that did not exist yet is a ConfigError."""
        version = self.version_at(spark, cfg, logical)
        if version is None:
            path = table_path(cfg, logical)
            if not is_delta(path):
                raise ConfigError(f"--as-of {self.text}: there is no `{logical}` table at {path}")
            first = _history_ms(spark, path)[0][1]
            raise ConfigError(
                f"--as-of {self.text}: table `{logical}` did not exist yet at {_fmt_ms(self.ms)} "
                f"(its first commit is at {_fmt_ms(first)}); pass a later version or time"
            )
        return version


def resolve_as_of(spark: SparkSession, cfg: Config, text: str | None) -> AsOf | None:
    """Parse `--as-of VERSION|TIMESTAMP` (see AsOf); None for None; ConfigError if invalid."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text.isdigit():
        path = table_path(cfg, "curated")
        if not is_delta(path):
            raise ConfigError(f"--as-of {text}: there is no curated table yet at {path}")
        history = dict(_history_ms(spark, path))
        version = int(text)
        if version not in history:
            raise ConfigError(
                f"--as-of {text}: `curated` has no version {version}; its versions are "
                f"{min(history)}..{max(history)} (`DESCRIBE HISTORY {table_name(cfg, 'curated')}`)"
            )
        # while version N was current: up to just before version N+1 replaced it
        later = [ms for v, ms in sorted(history.items()) if v > version]
        until = later[0] - 1 if later else int(datetime.now(UTC).timestamp() * 1000)
        return AsOf(text, max(until, history[version]), version)
    literal = text.replace("'", "")
    row = spark.sql(f"SELECT unix_millis(try_cast('{literal}' AS TIMESTAMP)) AS ms").first()
    if row is None or row["ms"] is None:
        raise ConfigError(
            f"--as-of {text!r}: neither a version of `curated` (an integer) nor a timestamp "
            "such as '2026-11-25 18:30:00'"
        )
    return AsOf(text, int(row["ms"]))


def merge_insert_new(
    spark: SparkSession, cfg: Config, tdef: TableDef, source: DataFrame, *, scope: str | None = None
) -> int:
    """Insert the rows whose key is not in the table yet, in one transaction; return rows inserted.

    `scope` is an extra SQL condition on the target (`t.`) that lets Delta skip files, e.g.
    `t.shard_uri IN (...)`. Rerunning with the same source inserts nothing: rerun-safe.
    """
    target = ensure_table(spark, cfg, tdef)
    cond = " AND ".join(f"t.{k} = s.{k}" for k in tdef.keys)
    if scope:
        cond = f"({scope}) AND {cond}"
    result = target.alias("t").merge(source.alias("s"), cond).whenNotMatchedInsertAll().execute()
    return merge_counts(result)["num_inserted_rows"]


def merge_upsert(
    spark: SparkSession, cfg: Config, tdef: TableDef, source: DataFrame, *, scope: str | None = None
) -> int:
    """Insert new keys and overwrite existing ones, in one transaction; return rows written."""
    target = ensure_table(spark, cfg, tdef)
    cond = " AND ".join(f"t.{k} = s.{k}" for k in tdef.keys)
    if scope:
        cond = f"({scope}) AND {cond}"
    result = (
        target.alias("t")
        .merge(source.alias("s"), cond)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    counts = merge_counts(result)
    return counts["num_inserted_rows"] + counts["num_updated_rows"]


def merge_counts(result: DataFrame | None) -> dict[str, int]:
    """The row counts a Delta MERGE returns (`num_inserted_rows`, `num_updated_rows`,
    `num_deleted_rows`, `num_affected_rows`; all 0 when it changed nothing).

    Read from the MERGE's own result (one local row), not from the table's history: a history
    read costs a Spark query (~0.3-0.5 s here) and could see another writer's commit."""
    names = ("num_affected_rows", "num_updated_rows", "num_deleted_rows", "num_inserted_rows")
    row = result.first() if result is not None else None  # no row: Delta skipped the MERGE
    return {n: int(row[n] or 0) if row is not None else 0 for n in names}


def delta_snapshot(spark: SparkSession, path: str) -> Any:
    """The Delta log's current snapshot of the table at `path` (a JVM object; version -1 when
    there is no commit): the log listed once, no Spark query."""
    jvm = cast(Any, spark)._jvm
    pair = jvm.org.apache.spark.sql.delta.DeltaLog.forTableWithSnapshot(
        cast(Any, spark)._jsparkSession, path
    )
    return pair._2()


def latest_version(spark: SparkSession, path: str) -> int:
    """The latest commit version of the Delta table at `path` (-1 for no commit)."""
    return int(delta_snapshot(spark, path).version())


def commit_info(path: str, version: int) -> dict[str, Any] | None:
    """The commitInfo action of one commit of the table at `path` (a local path, `file:` or an
    object store URI), read from its log file (Delta's protocol: one JSON action per line, read
    up to the commitInfo); None when the file is gone (log cleanup) or has none."""
    name = f"{version:020d}.json"
    local = path.removeprefix("file://").removeprefix("file:")
    try:
        if is_uri(local):
            fs, key = url_to_fs(f"{local.rstrip('/')}/_delta_log/{name}")
            with fs.open(key, "rb") as f:
                return _first_commit_info(line.decode("utf-8") for line in f)
        with (Path(local) / "_delta_log" / name).open(encoding="utf-8") as f:
            return _first_commit_info(f)
    except FileNotFoundError:
        return None


def _first_commit_info(lines: Iterable[str]) -> dict[str, Any] | None:
    for line in lines:
        action = json.loads(line) if line.strip() else {}
        if "commitInfo" in action:
            return dict(action["commitInfo"])
    return None


def sql_list(values: list[str]) -> str:
    """A SQL `IN (...)` list of string literals, quotes escaped."""
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
