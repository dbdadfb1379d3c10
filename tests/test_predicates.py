"""Filter predicate validation before Spark starts: good, bad and malicious predicates."""

from __future__ import annotations

import pytest

from curator_udfs.predicates import PredicateError, validate_predicate, validate_predicates

COLUMNS = [
    "sample_id", "width", "height", "caption", "meta", "image_format", "warnings",
    "aesthetic_score", "nsfw_score",
]  # fmt: skip


@pytest.mark.parametrize(
    "predicate",
    [
        "aesthetic_score >= 5",
        "nsfw_score < 0.2",
        "width >= 256 AND height >= 256",
        "width / height BETWEEN 0.5 AND 2",
        "caption IS NOT NULL",
        "(width > 1 OR height > 1) AND NOT (nsfw_score > 0.9)",
        "lower(caption) LIKE '%cat%'",
        "image_format IN ('JPEG', 'PNG')",
        "length(caption) BETWEEN 3 AND 200",
        "coalesce(nsfw_score, 1.0) < 0.5",
        "get_json_object(meta, '$.status') = 'success'",
        "size(warnings) = 0",
        "CAST(width AS DOUBLE) / height > 1",
        "`Width` >= 64",
        "isnotnull(caption)",
        "caption RLIKE '^[a-z]'",
    ],
)
def test_good_predicates_pass(predicate: str) -> None:
    valid = validate_predicate(predicate, COLUMNS)
    assert valid.text == predicate and valid.columns


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        ("1=1; DROP TABLE x", "contains `;`"),
        ("width > 1; DELETE FROM curator.images", "contains `;`"),
        ("DROP TABLE curator.images", "is a statement"),
        ("SELECT * FROM curator.images", "subquer"),
        ("width IN (SELECT width FROM curator.images)", "subqueries are not allowed"),
        ("EXISTS (SELECT 1)", "subqueries are not allowed"),
        ("aesthetic_score > (SELECT avg(aesthetic_score) FROM s)", "subqueries are not allowed"),
        ("width > 1 UNION SELECT 1", "subquer"),
        ("rand() < 0.5", "`RAND()` is non-deterministic"),
        ("randn() > 0 AND width > 1", "`RANDN()` is non-deterministic"),
        ("uuid() = sample_id", "`UUID()` is non-deterministic"),
        ("shuffle(warnings) = warnings", "non-deterministic"),
        ("current_timestamp() > '2020-01-01'", "non-deterministic"),
        ("monotonically_increasing_id() < 10", "non-deterministic"),
        ("reflect('java.lang.Thread', 'sleep', 1000) IS NULL", "non-deterministic"),
        ("my_udf(width) > 1", "unknown or user-defined function `my_udf`"),
        ("exists(warnings, x -> x = 'a')", "not on the allow-list"),
        ("colour = 'red'", "unknown column `colour`"),
        ("images.width > 1", "qualified column `images.width`"),
        ("sum(width) > 10", "aggregate `SUM(width)`"),
        ("width", "`width` is not a boolean expression"),
        ("width + 1", "is not a boolean expression"),
        ("width > 1 -- and the rest", "SQL comment"),
        ("width > 1 /* x */", "SQL comment"),
        ("width >", "not a valid SQL expression"),
        ("width > ?", "Placeholder"),
        ("", "empty"),
    ],
)
def test_bad_predicates_name_the_predicate_and_part(predicate: str, message: str) -> None:
    with pytest.raises(PredicateError) as info:
        validate_predicate(predicate, COLUMNS)
    text = str(info.value)
    assert f"filter predicate {predicate!r}" in text
    assert message in text, text


def test_all_errors_reported_together() -> None:
    with pytest.raises(PredicateError) as info:
        validate_predicates(["width > 1", "rand() < 1", "nope = 1"], COLUMNS)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "rand()" in lines[0] and "nope" in lines[1]


def test_config_error_before_spark() -> None:
    from spark_jobs.config import ConfigError, load_config
    from spark_jobs.filter import check_predicates

    cfg = load_config(sets=["filter.predicates=['aesthetic_score >= 5', '1=1; DROP TABLE x']"])
    with pytest.raises(ConfigError, match=r"(?s)filter.predicates.*DROP TABLE x.*contains `;`"):
        check_predicates(cfg)
    ok = load_config(sets=["filter.predicates=['width >= 64', 'my_head_score > 1']",
                           "classifiers=[{name: my_head}]"])  # fmt: skip
    assert [p.text for p in check_predicates(ok)] == ["width >= 64", "my_head_score > 1"]
