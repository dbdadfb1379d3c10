"""Views over the tables for SQL users: `scored` = image metadata (every `images` column but
the bytes, plus `aspect_ratio` computed here) joined with scores, and
`fates` = what happened to every sample (spark_jobs/lineage.py).

Views live in the session catalog, which is in memory: like the tables (registered by
location, see tables.py), they are created again whenever a session starts, and their
statements go into `<warehouse>/catalog.sql` for `spark-sql -i`.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from curator_udfs.model_ids import model_id
from spark_jobs.config import Config, ConfigError, embed_spec
from spark_jobs.tables import AsOf, read_table, sql_list, table_exists, table_ref

SCORED_VIEW = "scored"
# images columns left out of `scored`: the bytes (never read for filtering), where they lie in
# the shard (reference mode's storage detail) and the run id.
_IMAGE_EXCLUDED = ("image", "run_id", "ordinal", "image_offset")
# scores columns left out: the join key, the embedding (large; join `scores` for it), run id.
_SCORE_EXCLUDED = ("sample_id", "embedding", "run_id")
_SCORE_RENAMED = {"error": "score_error"}

IMAGE_COLUMNS: tuple[str, ...] = (
    "sample_id", "key", "shard_uri", "image_format", "image_ext", "width", "height",
    "image_bytes", "image_sha256", "caption", "meta", "warnings", "ingested_at",
    "caption_language", "caption_language_score", "caption_words", "caption_chars", "aspect_ratio",
)  # fmt: skip
# Computed in the view from `images`: longer side / shorter side, NULL without both sides > 0.
ASPECT_RATIO_SQL = (
    "CASE WHEN i.`width` > 0 AND i.`height` > 0 THEN "
    "CAST(greatest(i.`width`, i.`height`) AS DOUBLE) / least(i.`width`, i.`height`) END"
)
SCORE_COLUMNS: tuple[str, ...] = (
    "model", "embedding_dim", "score_error", "scored_at",
    "clip_score", "sharpness", "colorfulness", "grayscale",  # the embed pass's signals
)  # fmt: skip


def scored_model_id(cfg: Config) -> str:
    """The `model` value the embed job writes for this config (what `scored` selects)."""
    return model_id(embed_spec(cfg))


def head_score_columns(cfg: Config) -> list[str]:
    """Score columns of the configured heads, in order. A head whose class the driver cannot
    resolve (registered on the executors only) is named by the `<name>_score` convention every
    built-in head follows; embed's preflight refuses such a head before anything runs."""
    spec = embed_spec(cfg)
    columns = []
    for h in spec.heads:
        try:
            columns.append(h.column)
        except ValueError:
            columns.append(f"{h.name}_score")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ConfigError(
            f"config key `classifiers`: several heads write {twice}; give each an output_column"
        )
    return columns


def head_column(cfg: Config, name: str, default: str) -> str:
    """The score column of the configured head called `name` (`default` if none is)."""
    spec = embed_spec(cfg)
    return next((h.column for h in spec.heads if h.name == name), default)


def known_scored_columns(cfg: Config) -> list[str]:
    """Columns of `scored` known without Spark (for validating predicates before it starts)."""
    return list(dict.fromkeys([*IMAGE_COLUMNS, *SCORE_COLUMNS, *head_score_columns(cfg)]))


def scored_select(
    spark: SparkSession, cfg: Config, as_of: AsOf | None = None, model: str | None = None
) -> str | None:
    """The SELECT behind `scored`, or None while `images` or `scores` does not exist.

    With `as_of`, the same SELECT over the tables as they were then (Delta time travel);
    `model` selects another model's scores than the configured one.
    """
    if not (
        table_exists(spark, cfg, "images", as_of=as_of)
        and table_exists(spark, cfg, "scores", as_of=as_of)
    ):
        return None
    image_cols = read_table(spark, cfg, "images", as_of=as_of).columns
    score_cols = read_table(spark, cfg, "scores", as_of=as_of).columns
    cols = [f"i.`{c}`" for c in image_cols if c not in _IMAGE_EXCLUDED]
    taken = {c.lower() for c in image_cols}
    if "aspect_ratio" not in taken:
        cols.append(f"{ASPECT_RATIO_SQL} AS `aspect_ratio`")
        taken.add("aspect_ratio")
    for c in score_cols:
        if c in _SCORE_EXCLUDED:
            continue
        alias = _SCORE_RENAMED.get(c, c)
        if alias.lower() in taken:
            alias = f"score_{alias}"
        cols.append(f"s.`{c}`" if alias == c else f"s.`{c}` AS `{alias}`")
    model_lit = sql_list([model or scored_model_id(cfg)])
    return (
        f"SELECT {', '.join(cols)} FROM {table_ref(cfg, 'images', as_of, spark)} i "
        f"JOIN {table_ref(cfg, 'scores', as_of, spark)} s ON s.sample_id = i.sample_id "
        f"WHERE s.model = {model_lit}"
    )
