"""Which model's scores a job uses (spark_jobs.model_choice): the rule alone, then the dedup job
and the API on real Spark (the filter's fallback is in test_filter.py)."""

from __future__ import annotations

import pytest

from spark_jobs import dedup
from spark_jobs.config import ConfigError
from spark_jobs.model_choice import choose_model, model_choice, scores_model, view_model
from spark_jobs.tables import read_table
from spark_jobs.views import scored_model_id
from tests.test_filter import fake_images_and_scores, fake_scores

DEDUP_SETS = ("dedup.methods=[exact, semantic]", "dedup.eps=[0.01]", "dedup.coarse_k=1",
              "dedup.keep=aesthetic")  # fmt: skip


def test_the_rule_without_spark() -> None:
    assert choose_model("a", ["b", "a"]).model == "a"
    assert not choose_model("a", ["a"]).fallback and choose_model("a", ["a"]).note is None
    only = choose_model("a", ["b", "b"])
    assert only.model == "b" and only.fallback and only.present == ("b",)
    assert only.note is not None and "'a'" in only.note and "'b'" in only.note
    assert choose_model("a", []).model is None and not choose_model("a", []).fallback
    with pytest.raises(ConfigError, match="no rows for model 'a'") as err:
        choose_model("a", ["c", "b"])
    assert "`embed.model`" in str(err.value) and "['b', 'c']" in str(err.value)


def test_no_scores_table_means_no_model(spark, make_cfg) -> None:
    cfg = make_cfg()
    assert scores_model(spark, cfg) is None and dedup.scores_model(spark, cfg) is None
    assert view_model(spark, cfg) == scored_model_id(cfg)


def test_dedup_falls_back_to_the_only_model_in_scores(spark, make_cfg) -> None:
    cfg = make_cfg(*DEDUP_SETS)
    images = fake_images_and_scores(spark, cfg, 12, model="only-model", other_model=False)
    assert scored_model_id(cfg) != "only-model"
    choice = model_choice(spark, cfg)
    assert choice.model == "only-model" and choice.fallback and choice.note
    assert dedup.scores_model(spark, cfg) == "only-model"  # the name the API imports
    assert view_model(spark, cfg) == "only-model"
    summary = dedup.run(spark, cfg)
    assert summary.extra["model"] == "only-model"
    assert summary.extra["model_note"] == choice.note  # the summary says it fell back
    # every embedding is the same: one kept sample, ranked by only-model's aesthetic_score
    best = max(images, key=lambda s: (fake_scores(s)[0], [-ord(c) for c in s]))
    rows = read_table(spark, cfg, "duplicates").where("method = 'semantic'").collect()
    assert {r.sample_id for r in rows} == set(images) - {best}
    assert {r.duplicate_of for r in rows} == {best}


def test_configured_model_wins_and_two_others_are_refused(spark, make_cfg) -> None:
    cfg = make_cfg(*DEDUP_SETS)
    fake_images_and_scores(spark, cfg, 6)  # the configured model plus "other-model"
    assert dedup.scores_model(spark, cfg) == scored_model_id(cfg)
    assert model_choice(spark, cfg).note is None
    other = make_cfg(*DEDUP_SETS, "embed.model=not_there", warehouse=cfg.warehouse_path,
                     database=cfg.database)  # fmt: skip
    with pytest.raises(ConfigError, match="no rows for model 'not_there'") as err:
        dedup.run(spark, other)
    assert "`embed.model`" in str(err.value) and "'other-model'" in str(err.value)
    assert view_model(spark, other) == scored_model_id(other)  # a view never raises


def test_dataset_from_tables_uses_the_same_rule(spark, make_cfg) -> None:
    from spark_jobs.api import Dataset

    cfg = make_cfg()
    images = fake_images_and_scores(spark, cfg, 5, model="only-model", other_model=False)
    ds = Dataset.from_tables(spark, cfg)
    assert ds.model == "only-model" and ds.count() == len(images)
