"""The bad-input corpus through the whole pipeline (`curator run`, test_vit): zero crashes, and
every sample of every tar in exactly one of `images` / `quarantine`."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.config import load_config
from spark_jobs.tables import read_table
from tests.faults import corpus, harness

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)


def test_bad_corpus_runs_through_every_stage_and_nothing_is_lost(
    spark: Any, check_tables: Any, tmp_path: Path
) -> None:
    shards, wh, out = tmp_path / "corpus", tmp_path / "wh", tmp_path / "out"
    expected = corpus.write_corpus(shards)
    proc = harness.curator(
        "run",
        "--warehouse",
        str(wh),
        "--input",
        str(shards),
        "--output",
        str(out),
        *harness.set_args(*corpus.CORPUS_SETS, "filter.predicates=['width >= 1']"),
        "--json",
    )
    assert "Traceback" not in proc.stderr
    summaries = harness.last_json(proc.stdout)
    harness.assert_balanced(summaries)
    print({s["job"]: s["seconds"] for s in summaries})
    by_job = {s["job"]: s for s in summaries}

    cfg = load_config(warehouse=str(wh))
    images = read_table(spark, cfg, "images").select("shard_uri", "key", "width", "height")
    quarantine = read_table(spark, cfg, "quarantine").select("shard_uri", "key", "reason")
    image_rows, q_rows = images.collect(), quarantine.collect()

    def shard_of(uri: str) -> str:
        return uri.rsplit("/", 1)[-1]

    # every sample written, counted from the tars themselves, is in exactly one table
    for name in expected:
        got = Counter(r.key for r in image_rows if shard_of(r.shard_uri) == name)
        got.update(r.key for r in q_rows if shard_of(r.shard_uri) == name)
        assert got == corpus.tar_keys(shards / name), name
    # and with the outcome the builders predicted
    outcome = {(shard_of(r.shard_uri), r.key): "image" for r in image_rows}
    for r in q_rows:
        outcome.setdefault((shard_of(r.shard_uri), r.key), r.reason)
    for name, keys in expected.items():
        for key, want in keys.items():
            assert outcome[(name, key)] == ("image" if want == "duplicate_key" else want), (
                name,
                key,
            )
    sizes = {
        r.key: (r.width, r.height) for r in image_rows if shard_of(r.shard_uri) == "hostile.tar"
    }
    for key, size in corpus.DISPLAYED_SIZE.items():
        assert sizes[key] == size, key

    # every image scored once; only the one with cut pixel data has a decode error
    scores = read_table(spark, cfg, "scores").select("sample_id", "error", "embedding_dim")
    rows = scores.collect()
    assert len(rows) == len({r.sample_id for r in rows}) == len(image_rows)
    errors = [r for r in rows if r.error]
    assert len(errors) == by_job["embed"]["quarantined"] >= 1
    assert all(r.embedding_dim == 1000 for r in rows if not r.error)

    check_tables(wh)
    # exported member names come from sample ids, never from input paths such as ../../escape
    members = [m for _shard, ms in harness.shard_members(out) for m, _size in ms]
    assert members and by_job["export"]["rows_written"] > 0
    bad = [m for m in members if not re.fullmatch(r"[0-9a-f]{16,64}\.[a-z]{3,4}", m)]
    assert not bad, bad
