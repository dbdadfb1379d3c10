"""Which model's rows of `scores` a job uses: one rule for `curator filter`, `curator dedup`
and `Dataset.from_tables`.

1. The configured model (`spark_jobs.views.scored_model_id(cfg)`: what `curator embed` writes
   for `embed.*`), when `scores` has rows for it.
2. Else, when `scores` holds exactly one model, that one; the job's summary says so
   (`ModelChoice.note`), because the configuration names another.
3. Else a ConfigError naming `embed.model` and the models present.

No `scores` table, or an empty one, gives no model (None): the caller says what to run first.
The configured model is looked up with a filter on `model` (data skipping on the Delta file
statistics), so the common case never scans the column; only a miss lists the models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import Config, ConfigError
from spark_jobs.tables import is_delta, read_table, table_path
from spark_jobs.views import scored_model_id

_LISTED = 50  # models listed in the error message at most


@dataclass(frozen=True)
class ModelChoice:
    """The model a job uses (`model`), the configured one, and the models seen on a miss."""

    configured: str
    model: str | None
    present: tuple[str, ...] = ()

    @property
    def fallback(self) -> bool:
        """Whether the job uses another model than the configured one (rule 2)."""
        return self.model is not None and self.model != self.configured

    @property
    def note(self) -> str | None:
        """The summary line of a fallback, None when the configured model is used."""
        if not self.fallback:
            return None
        return (
            f"embed.model gives {self.configured!r}, which has no rows in scores; using the "
            f"only model there, {self.model!r}"
        )


def choose_model(configured: str, present: Iterable[str]) -> ModelChoice:
    """The rule (module docstring) over the models `scores` holds; no Spark needed."""
    models = tuple(sorted(set(present)))
    if configured in models:
        return ModelChoice(configured, configured)
    if not models:
        return ModelChoice(configured, None)
    if len(models) == 1:
        return ModelChoice(configured, models[0], models)
    raise ConfigError(
        f"config key `embed.model`: the scores table has no rows for model {configured!r}, "
        f"only for {len(models)} others: {list(models)}; set embed.model (and "
        "embed.pretrained) to the one to use, e.g. --set embed.model=..."
    )


def model_choice(spark: SparkSession, cfg: Config) -> ModelChoice:
    """The rule applied to the warehouse's `scores` table (module docstring)."""
    want = scored_model_id(cfg)
    if not is_delta(table_path(cfg, "scores")):
        return ModelChoice(want, None)
    scores = read_table(spark, cfg, "scores")
    if scores.where(F.col("model") == want).select("model").take(1):
        return ModelChoice(want, want)
    present = [r["model"] for r in scores.select("model").distinct().take(_LISTED)]
    return choose_model(want, [m for m in present if m is not None])


def scores_model(spark: SparkSession, cfg: Config) -> str | None:
    """The `model` of `scores` a job uses (see model_choice); None without scores rows."""
    return model_choice(spark, cfg).model


def view_model(spark: SparkSession, cfg: Config) -> str:
    """The model the `scored` view should select: the rule's choice, else the configured id
    (no scores yet, or an ambiguous table: registering views must never fail a session)."""
    try:
        return model_choice(spark, cfg).model or scored_model_id(cfg)
    except ConfigError:
        return scored_model_id(cfg)
