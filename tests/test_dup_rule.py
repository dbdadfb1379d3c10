"""DuplicateRule without Spark: config, round trip, the dicts older filter runs recorded, SQL."""

from __future__ import annotations

import json

import pytest

from spark_jobs.config import load_config
from spark_jobs.dup_rule import DuplicateRule, eps_condition


def test_from_config_takes_filter_dedup_eps_else_the_first_dedup_eps() -> None:
    cfg = load_config(sets=["dedup.methods=[exact, semantic]", "dedup.eps=[0.05, 0.1]"])
    rule = DuplicateRule.from_config(cfg)
    assert rule == DuplicateRule(exclude=True, methods=("exact", "semantic"), eps=0.05)
    assert rule.active
    cfg = load_config(sets=["dedup.eps=[0.05, 0.1]", "filter.dedup_eps=0.1",
                            "filter.exclude_duplicates=false"])  # fmt: skip
    rule = DuplicateRule.from_config(cfg)
    assert rule.eps == 0.1 and rule.exclude is False and not rule.active
    assert rule.methods == ("exact", "perceptual", "semantic")  # the default methods, in order


def test_round_trip_text_and_object() -> None:
    rule = DuplicateRule(exclude=False, methods=("perceptual", "semantic"), eps=0.03)
    assert DuplicateRule.from_json(rule.to_json()) == rule
    assert DuplicateRule.from_json(rule.to_dict()) == rule
    assert DuplicateRule.from_json(json.loads(json.dumps(rule.to_dict()))) == rule
    no_eps = DuplicateRule(methods=("exact",))
    assert DuplicateRule.from_json(no_eps.to_json()) == no_eps
    with pytest.raises(AttributeError):  # frozen: one rule, never edited in place
        rule.eps = 0.5  # type: ignore[misc]


def test_parses_the_dict_older_filter_runs_recorded() -> None:
    # exactly what spark_jobs/filter.py dedup_rule() wrote into userMetadata before this module
    legacy = {"exclude": True, "methods": ["exact", "perceptual", "semantic"], "eps": 0.01}
    rule = DuplicateRule.from_json(legacy)
    assert rule == DuplicateRule(True, ("exact", "perceptual", "semantic"), 0.01)
    assert rule.to_dict() == legacy  # and it still writes that same dict
    record = json.dumps({"job": "filter", "run_id": "filter-x", "model": "m",
                         "predicates": [], "dedup": legacy})  # fmt: skip
    assert DuplicateRule.from_json(json.loads(record)["dedup"]) == rule
    # keys a record lacks take the defaults the old readers used (`.get("exclude", True)` ...)
    assert DuplicateRule.from_json({"methods": ["exact"], "eps": 0}) == DuplicateRule(
        True, ("exact",), 0.0
    )
    for empty in (None, "", {}):
        assert DuplicateRule.from_json(empty) == DuplicateRule()
        assert not DuplicateRule.from_json(empty).active
    assert DuplicateRule.from_json({"exclude": False, "methods": []}).exclude is False


def test_unreadable_or_newer_records_are_value_errors() -> None:
    with pytest.raises(ValueError, match="newer"):
        DuplicateRule.from_json({"version": 2, "methods": ["exact"], "eps": 0.01})
    assert DuplicateRule.from_json({"version": 1, "methods": ["exact"]}).methods == ("exact",)
    with pytest.raises(ValueError):
        DuplicateRule.from_json("[1, 2]")
    with pytest.raises(ValueError):
        DuplicateRule.from_json({"methods": 3})
    with pytest.raises(ValueError):
        DuplicateRule.from_json({"methods": ["semantic"], "eps": "0.01"})
    with pytest.raises(ValueError):
        DuplicateRule.from_json("{not json")


def test_condition_text_one_eps_equality() -> None:
    rule = DuplicateRule(methods=("exact", "semantic"), eps=0.05)
    assert rule.condition() == (
        "method IN ('exact', 'semantic') AND (eps IS NULL OR abs(eps - 0.05) < 1e-9)"
    )
    assert rule.condition("d") == (
        "d.method IN ('exact', 'semantic') AND (d.eps IS NULL OR abs(d.eps - 0.05) < 1e-9)"
    )
    assert eps_condition(0.05) == "abs(eps - 0.05) < 1e-9"
    assert eps_condition(1e-5, "x.eps") == "abs(x.eps - 1e-05) < 1e-9"
    # exclude does not change which rows the rule names; `active` says whether it applies
    assert DuplicateRule(False, ("exact", "semantic"), 0.05).condition() == rule.condition()
    assert DuplicateRule(methods=()).condition() == "false"
    assert DuplicateRule(methods=("semantic",)).condition() == (
        "method IN ('semantic') AND (eps IS NULL OR false)"
    )
    assert "\\'" in DuplicateRule(methods=("it's",), eps=0.1).condition()  # quotes escaped


def test_text_reads_like_the_filter_stats_rows() -> None:
    rule = DuplicateRule(methods=("exact", "semantic"), eps=0.05)
    assert rule.text == "methods ['exact', 'semantic'], semantic eps 0.05"


def test_condition_as_the_apis_replace_where(spark, make_cfg) -> None:
    """`Dataset.persist_duplicates` replaces the semantic rows at one eps with this condition:
    Delta accepts it as replaceWhere, and eps equal within the tolerance counts as equal."""
    from spark_jobs.tables import DUPLICATES, read_table, replace_where

    cfg = make_cfg()
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")  # what the jobs' sessions do
    schema = DUPLICATES.schema
    noisy = 0.1 + 0.2 - 0.3 + 0.05  # 0.05 plus float noise: `eps = 0.05` would miss it
    assert noisy != 0.05
    old = spark.createDataFrame(
        [("a", "k", "k", 0.97, "semantic", noisy, "c1", "r1"),
         ("b", "k", "k", 0.92, "semantic", 0.1, "c1", "r1"),
         ("c", "k", None, 1.0, "exact", None, None, "r1")],
        schema,
    )  # fmt: skip
    replace_where(spark, cfg, DUPLICATES, old, "true")
    where = DuplicateRule(methods=("semantic",), eps=0.05).condition()
    new = spark.createDataFrame([("d", "k", "k", 0.96, "semantic", 0.05, "c1", "r2")], schema)
    replace_where(spark, cfg, DUPLICATES, new, where)
    rows = {(r.sample_id, r.method, r.eps) for r in read_table(spark, cfg, "duplicates").collect()}
    assert {r[0] for r in rows} == {"b", "c", "d"}
