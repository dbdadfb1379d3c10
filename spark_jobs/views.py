"""Views over the tables for SQL users: `scored` = image metadata joined with scores, and
`fates` = what happened to every sample (spark_jobs/lineage.py).

Views live in the session catalog, which is in memory: like the tables (registered by
location, see tables.py), they are created again whenever a session starts, and their
statements go into `<warehouse>/catalog.sql` for `spark-sql -i`.
"""

from __future__ import annotations

import sys

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from spark_jobs.config import Config
from spark_jobs.tables import AsOf, read_table, sql_list, table_exists, table_ref

SCORED_VIEW = "scored"
# images columns left out of `scored`: the bytes (never read for filtering) and the run id.
_IMAGE_EXCLUDED = ("image", "run_id")
# scores columns left out: the join key, the embedding (large; join `scores` for it), run id.
_SCORE_EXCLUDED = ("sample_id", "embedding", "run_id")
_SCORE_RENAMED = {"error": "score_error"}

IMAGE_COLUMNS: tuple[str, ...] = (
    "sample_id", "key", "shard_uri", "image_format", "image_ext", "width", "height",
    "image_bytes", "image_sha256", "caption", "meta", "warnings", "ingested_at",
)  # fmt: skip
SCORE_COLUMNS: tuple[str, ...] = (
    "model", "embedding_dim", "aesthetic_score", "nsfw_score", "score_error", "scored_at",
)  # fmt: skip


def scored_model_id(cfg: Config) -> str:
    """The `model` value the embed job writes for this config (what `scored` selects).

    Same rule as curator_udfs.embed_batches.spec_model_id for timm models (the model name,
    `+random` appended for random init), computed without importing torch; a custom embedder
    class is asked for its own id.
    """
    e = cfg.embed
    if e.embedder_class:
        from curator_udfs.embed_batches import EmbedSpec, spec_model_id

        return spec_model_id(
            EmbedSpec(
                model_name=e.model,
                pretrained=e.pretrained,
                weights=e.weights,
                embedder_class_path=e.embedder_class,
            )
        )
    return f"{e.model}+random" if not e.pretrained and not e.weights else e.model


def head_score_columns(cfg: Config) -> list[str]:
    """Score columns of the configured heads (`output_column`, else `<name>_score`)."""
    return [h.output_column or f"{h.name}_score" for h in cfg.classifiers]


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


def register_views(spark: SparkSession, cfg: Config) -> list[str]:
    """Create the views whose tables exist; return their statements for catalog.sql."""
    statements: list[str] = []
    select = scored_select(spark, cfg)
    if select is not None:
        stmt = f"CREATE OR REPLACE VIEW {cfg.database}.{SCORED_VIEW} AS {select}"
        spark.sql(stmt)
        statements.append(stmt + ";")
    from spark_jobs.lineage import FATES_VIEW, fates_select

    try:
        fates = fates_select(spark, cfg)
        if fates is not None:
            stmt = f"CREATE OR REPLACE VIEW {cfg.database}.{FATES_VIEW} AS {fates}"
            spark.sql(stmt)
            statements.append(stmt + ";")
    except AnalysisException as exc:  # lineage must never stop a job: say so, go on
        first = str(exc).strip().splitlines()[0][:300]
        print(f"curator: the `fates` view is not available here: {first}", file=sys.stderr)
    return statements
