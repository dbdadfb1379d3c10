"""spark_jobs.redact: which keys are secret, and masking in mappings and free text."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from spark_jobs import redact as r
from spark_jobs.config import load_config
from spark_jobs.summary import Summary


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    r._known.clear()  # the values remembered so far
    yield
    r._known.clear()  # the values remembered so far


@pytest.mark.parametrize(
    "key",
    [
        "spark.hadoop.fs.s3a.secret.key",
        "spark.hadoop.fs.s3a.access.key",
        "fs.azure.account.key.acct.dfs.core.windows.net",
        "spark.hadoop.fs.gs.auth.service.account.private.key",
        "DATABRICKS_TOKEN",
        "db.password",
        "db.passwd",
        "api_key",
        "fs.azure.sas.key",
        "aws_session_token",
        "google.cloud.auth.credentials",
    ],
)
def test_secret_keys(key: str) -> None:
    assert r.is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["spark.master", "spark.sql.shuffle.partitions", "embed.model", "warehouse", "keep"]
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not r.is_secret_key(key)


def test_mapping_masked_by_key_recursively_and_the_input_untouched() -> None:
    conf = {
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "abc", "spark.master": "local[2]"}},
        "token": "",  # empty values stay as they are (nothing to hide)
        "list": ["password=hunter2hunter2", 3],
    }
    out = r.redact(conf)
    assert out["spark"]["conf"] == {
        "spark.hadoop.fs.s3a.secret.key": r.MASK,
        "spark.master": "local[2]",
    }
    assert out["token"] == ""
    assert out["list"] == [f"password={r.MASK}", 3]
    assert conf["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == "abc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fs.s3a.secret.key=abc123 next", f"fs.s3a.secret.key={r.MASK} next"),
        ('{"api_key": "k-123", "n": 1}', f'{{"api_key": "{r.MASK}", "n": 1}}'),
        ("password: hunter2", f"password: {r.MASK}"),
        ("the token is not a pair", "the token is not a pair"),
        ("plain text, nothing secret", "plain text, nothing secret"),
    ],
)
def test_text_pairs(text: str, expected: str) -> None:
    assert r.redact(text) == expected


def test_remembered_values_masked_anywhere_longest_first_short_ones_ignored() -> None:
    r.remember_secrets(["wJalrXUtnFEMI/K7MDENG", "wJalrXUtn", "true", "local"])
    text = "failed reading s3a://b/x with wJalrXUtnFEMI/K7MDENG (wJalrXUtn) at local true"
    assert r.redact(text) == f"failed reading s3a://b/x with {r.MASK} ({r.MASK}) at local true"
    r._known.clear()  # the values remembered so far
    assert "wJalrXUtn" in r.redact(text)


def test_secret_values_found_in_nested_mappings() -> None:
    found = r.secret_values({"a": {"x.secret.key": "s1", "y": "no"}, "api_key": 12, "token": None})
    assert sorted(found) == ["12", "s1"]


def test_load_config_remembers_spark_conf_secrets_and_dump_masks_them() -> None:
    secret = "AKIAEXAMPLEACCESS0001"
    cfg = load_config(sets=[f"spark.conf.spark.hadoop.fs.s3a.access.key={secret}"])
    assert cfg.spark.conf["spark.hadoop.fs.s3a.access.key"] == secret  # Spark still gets it
    assert secret not in json.dumps(r.redact(cfg.model_dump(mode="json")))
    assert r.redact(f"error talking to S3 as {secret}") == f"error talking to S3 as {r.MASK}"


def test_summary_json_and_render_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    r.remember_secrets(["SECRETVALUE-123456"])
    s = Summary(job="x", run_id="x-1")
    s.extra["note"] = "used SECRETVALUE-123456 and password=abc"
    s.finish().render()
    line = json.dumps(s.to_dict(), default=str)  # what --json prints
    assert "SECRETVALUE" not in line and "abc" not in line
    printed = capsys.readouterr().out
    assert "SECRETVALUE" not in printed and r.MASK in printed
