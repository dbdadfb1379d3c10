"""Lineage on real Spark and Delta: the `fates` view, `curator why`, rule costs, time travel.

One warehouse goes through the real jobs (ingest → embed with a tiny random timm model →
dedup → filter → export) and ends up with a sample of every fate; the tests then change the
rule, rerun and ingest more, checking that fates follow and that the what-if numbers match a
real rerun of the filter.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from curator_udfs.predicates import PredicateError, apply_what_if
from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import costs, dedup, embed, export, ingest, why
from spark_jobs import filter as filter_job
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.dup_rule import DuplicateRule
from spark_jobs.lineage import FATES, fates_select, filter_record
from spark_jobs.tables import read_table, resolve_as_of
from tests.badshards import jpeg_bytes, sample, undecodable_bytes, write_tar

PREDICATES = ["width / height BETWEEN 0.5 AND 2", "caption IS NOT NULL"]
MOVED = "width / height BETWEEN 0.3 AND 3"


def _cfg(warehouse: Path, shards: list[Path], out: Path, *sets: str) -> Config:
    return load_config(
        sets=[
            "database=lineage",
            "spark.conf={spark.master: 'local[2]'}",
            "embed.model=test_vit",
            "embed.pretrained=false",
            "embed.batch_size=32",
            "classifiers=[{name: aesthetic, random_init: true}, {name: nsfw, random_init: true}]",
            f"filter.predicates={json.dumps(PREDICATES)}",
            "dedup.methods=[exact, perceptual, semantic]",
            "dedup.eps=[0.01, 0.05]",
            f"input.shards={json.dumps([str(s) for s in shards])}",
            f"export.output={out}",
            "export.samples_per_shard=10",
            *sets,
        ],
        warehouse=str(warehouse),
    )


def _bad_shard(path: Path) -> None:
    """Two good samples, a truncated JPEG (ingests, fails at embed), an undecodable image and a
    key seen twice (both quarantined at ingest)."""
    buf = io.BytesIO()  # noise: half of its scan data is missing, the header is intact
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)).save(
        buf, "JPEG"
    )
    jpeg = buf.getvalue()
    write_tar(
        path,
        [
            *sample("bad-good-1", jpeg_bytes(80, 60), caption="one"),
            *sample("bad-good-2", jpeg_bytes(60, 80), caption="two"),
            *sample("bad-trunc", jpeg[: len(jpeg) // 2], caption="cut"),
            *sample("bad-garbage", undecodable_bytes()),
            *sample("bad-good-1", jpeg_bytes(70, 70), caption="again"),
        ],
    )


def _run(spark, cfg: Config) -> None:
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[])
    embed.run(spark, cfg)
    dedup.run(spark, cfg)
    filter_job.run(spark, cfg)


def _fates(spark, cfg: Config, as_of=None) -> dict[tuple, tuple]:
    """{(sample_id, shard_uri, key, ordinal): (fate, reason)} of the fates view."""
    select = fates_select(spark, cfg, as_of)
    assert select is not None
    rows = spark.sql(select).collect()
    out = {(r.sample_id, r.shard_uri, r.key, r.ordinal): (r.fate, r.reason) for r in rows}
    assert len(out) == len(rows)  # one row per sample (and per quarantined member)
    return out


@pytest.fixture(scope="module")
def wh(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("lineage")
    shards = base / "shards"
    write_sample_shards(shards, shards=2, per_shard=30, seed=11)
    _bad_shard(shards / "bad.tar")
    cfg = _cfg(base / "warehouse", [shards], base / "curated")
    _run(spark, cfg)
    export.run(spark, cfg)
    filter_v = filter_record(spark, cfg).version
    return {"cfg": cfg, "base": base, "shards": shards, "exported_version": filter_v}


def test_every_sample_has_exactly_one_fate_consistent_with_the_tables(spark, wh) -> None:
    cfg = wh["cfg"]
    fates = _fates(spark, cfg)
    images = {r.sample_id for r in read_table(spark, cfg, "images").select("sample_id").collect()}
    quarantine = read_table(spark, cfg, "quarantine").count()
    sample_rows = {k[0]: v for k, v in fates.items() if k[3] is None}
    assert set(sample_rows) == images and len(fates) == len(images) + quarantine
    assert {v[0] for v in fates.values()} <= set(FATES)
    by_fate: dict[str, set] = {}
    for sid, (fate, _) in sample_rows.items():
        by_fate.setdefault(fate, set()).add(sid)
    curated = {r.sample_id for r in read_table(spark, cfg, "curated").collect()}
    exported = {r.sample_id for r in read_table(spark, cfg, "exported").collect()}
    assert by_fate["exported"] == exported == curated
    # quarantined: the ingest's rows and the one image the embedder could not decode
    errors = {
        r.sample_id for r in read_table(spark, cfg, "scores").where("error IS NOT NULL").collect()
    }
    assert len(errors) == 1 and errors <= by_fate["quarantined"]
    reasons = sorted(v[1].split(":")[0] for k, v in fates.items() if k[3] is not None)
    assert reasons == ["duplicate_key", "undecodable_image"]
    # filtered: a recorded predicate is false or NULL, checked by evaluating it again
    scored = spark.table("lineage.scored")
    failing = scored.where(" OR ".join(f"NOT coalesce(({p}), false)" for p in PREDICATES))
    expect_filtered = {r.sample_id for r in failing.collect()} - errors
    assert by_fate["filtered"] == expect_filtered and expect_filtered
    # duplicate: passed every predicate, listed in duplicates under the filter's rule
    rule = filter_record(spark, cfg).dedup
    assert rule == DuplicateRule.from_config(cfg) and rule.active  # the recorded rule, parsed
    dups = read_table(spark, cfg, "duplicates").where(rule.condition())
    assert by_fate["duplicate"] and by_fate["duplicate"] <= {r.sample_id for r in dups.collect()}
    assert not by_fate.get("pending")


def test_why_tells_each_fate(spark, wh) -> None:
    cfg = wh["cfg"]
    fates = _fates(spark, cfg)
    seen = set()
    for (sid, _shard, key, ordinal), (fate, _reason) in sorted(fates.items(), key=str):
        if fate in seen or (ordinal is not None and fate != "quarantined"):
            continue
        seen.add(fate)
        stories = why.explain(spark, cfg, key if ordinal is not None else sid)
        mine = [s for s in stories if s["sample_id"] == sid and s.get("ordinal") == ordinal]
        assert len(mine) == 1, stories
        story = mine[0]
        assert story["fate"] == fate and why.render(story).count("FATE") == 1
        if fate == "filtered":
            verdicts = {p["predicate"]: p["verdict"] for p in story["predicates"]}
            assert set(verdicts) == set(PREDICATES) and set(verdicts.values()) != {"pass"}
            failed = [p for p, v in verdicts.items() if v != "pass"]
            assert story["reason"] == "failed: " + " ; ".join(failed)
        if fate == "duplicate":
            kept = story["duplicate"]["duplicate_of"]
            assert fates[(kept, *_key_of(fates, kept)[1:])][0] == "exported"
            kept_story = why.explain(spark, cfg, kept)[0]
            assert sid in {e["sample_id"] for e in kept_story["kept_over"]["examples"]}
        if fate == "exported":
            e = story["export"]
            row = read_table(spark, cfg, "exported").where(f"sample_id = '{sid}'").first()
            assert (e["shard"], e["position"]) == (row.shard, row.position)
            assert (Path(e["output"]) / e["shard"]).is_file()
        if fate in ("exported", "filtered", "duplicate"):
            assert {"aesthetic_score", "nsfw_score"} <= set(story["scores"])
            assert story["image"]["width"] > 0 and story["shard_uri"].endswith(".tar")
    assert seen == {"quarantined", "filtered", "duplicate", "exported"}


def _key_of(fates: dict, sid: str) -> tuple:
    return next(k for k in fates if k[0] == sid and k[3] is None)


def test_why_cli_json_and_unknown_sample(spark, wh) -> None:
    from spark_jobs.cli import app

    cfg = wh["cfg"]
    args = ["--warehouse", str(cfg.warehouse_path), "--set", "database=lineage",
            "--set", "embed.model=test_vit", "--set", "embed.pretrained=false"]  # fmt: skip
    res = CliRunner().invoke(app, ["why", "bad-trunc", *args, "--json"])
    assert res.exit_code == 0, res.output
    story = json.loads(res.stdout.strip().splitlines()[-1])
    assert story["fate"] == "quarantined" and story["reason"].startswith("embed_error")
    res = CliRunner().invoke(app, ["why", "no-such-sample", *args])
    assert res.exit_code == 1 and "no sample" in res.output


def test_what_if_matches_a_real_rerun_then_time_travel(spark, wh) -> None:
    cfg = wh["cfg"]
    before = _fates(spark, cfg)
    old_curated = {r.sample_id for r in read_table(spark, cfg, "curated").collect()}
    report = costs.report(spark, cfg, [f"{PREDICATES[0]} => {MOVED}"])
    cur = report["current"]
    assert cur["kept"] == report["curated_rows"] == len(old_curated)
    assert cur["passed_predicates"] - cur["removed_as_duplicates"] == cur["kept"]
    wi = report["what_if"]
    assert wi["predicates"] == [MOVED, PREDICATES[1]]

    moved = _cfg(cfg.warehouse_path, [wh["shards"]], wh["base"] / "curated",
                 f"filter.predicates={json.dumps([MOVED, PREDICATES[1]])}")  # fmt: skip
    summary = filter_job.run(spark, moved)
    new_curated = {r.sample_id for r in read_table(spark, moved, "curated").collect()}
    assert summary.rows_written == len(new_curated) == wi["costs"]["kept"]
    assert wi["would_come_back"] == len(new_curated - old_curated) > 0
    assert wi["would_be_dropped"] == len(old_curated - new_curated)

    # fates follow the new rule: samples that came back are kept but not exported
    after = _fates(spark, moved)
    came_back = {k for k, v in after.items() if k[0] in new_curated - old_curated}
    assert came_back and all(after[k][0] == "curated" for k in came_back)
    assert all(after[k] == before[k] for k in after if k[3] is not None)  # quarantine unchanged

    # time travel: the version the first export came from tells the old story
    as_of = resolve_as_of(spark, moved, str(wh["exported_version"]))
    assert _fates(spark, moved, as_of) == before
    old_story = why.explain(spark, moved, next(iter(came_back))[0], as_of)[0]
    assert old_story["fate"] in ("filtered", "duplicate")
    old_costs = costs.report(spark, moved, [], as_of)
    assert old_costs["current"] == cur and old_costs["curated_version"] == wh["exported_version"]
    with pytest.raises(ConfigError, match="has no version"):
        resolve_as_of(spark, moved, "999")

    # a rerun with the same rule leaves every fate as it was
    filter_job.run(spark, moved)
    assert {k: v[0] for k, v in _fates(spark, moved).items()} == {k: v[0] for k, v in after.items()}


def test_incremental_ingest_marks_new_samples_pending_then_decides_them(spark, wh) -> None:
    cfg = wh["cfg"]
    more = wh["base"] / "more"
    write_sample_shards(more, shards=1, per_shard=8, seed=99)
    cfg2 = _cfg(cfg.warehouse_path, [wh["shards"], more], wh["base"] / "curated")
    before = _fates(spark, cfg2)
    register_tables(spark, cfg2)
    ingest.run(spark, cfg2, inputs=[])
    mid = _fates(spark, cfg2)
    new = {k: v for k, v in mid.items() if k not in before}
    assert len(new) == 8 and {v[0] for v in new.values()} == {"pending"}
    assert {v[1] for v in new.values()} == {"not embedded yet"}
    assert all(mid[k] == before[k] for k in before)
    embed.run(spark, cfg2)
    assert {_fates(spark, cfg2)[k][1] for k in new} == {"scored after the last filter run"}
    dedup.run(spark, cfg2)
    filter_job.run(spark, cfg2)
    done = _fates(spark, cfg2)
    assert all(done[k][0] in ("filtered", "duplicate", "curated") for k in new)


def test_apply_what_if_edits() -> None:
    cols = ["aesthetic_score", "nsfw_score", "width", "height"]
    cur = ["aesthetic_score >= 5", "nsfw_score < 0.2"]
    assert apply_what_if(cur, ["aesthetic_score >= 4.5"], cols) == [
        "aesthetic_score >= 4.5",
        "nsfw_score < 0.2",
    ]
    assert apply_what_if(cur, ["nsfw_score  <  0.2 =>"], cols) == ["aesthetic_score >= 5"]
    assert apply_what_if(cur, ["width >= 64"], cols) == [*cur, "width >= 64"]
    with pytest.raises(PredicateError, match="no current predicate"):
        apply_what_if(cur, ["nsfw_score < 0.3 => nsfw_score < 0.5"], cols)
    with pytest.raises(PredicateError, match="unknown column"):
        apply_what_if(cur, ["bogus > 1"], cols)
    with pytest.raises(PredicateError, match="OLD => NEW"):
        apply_what_if(["width > 1", "width < 900"], ["width > 2"], cols)


def test_filter_record_parses_older_and_unreadable_rule_records(spark, make_cfg) -> None:
    """Curated commits keep the dict older filter runs wrote; lineage reads history, so each
    one must parse into the same DuplicateRule, and a record it cannot read never fails."""
    from spark_jobs.tables import table_path

    cfg = make_cfg("dedup.eps=[0.2]")
    path = table_path(cfg, "curated")
    legacy = {
        "job": "filter", "run_id": "filter-old", "model": "m0", "predicates": ["width >= 1"],
        "dedup": {"exclude": True, "methods": ["exact", "semantic"], "eps": 0.05},
    }  # fmt: skip
    newer = {**legacy, "run_id": "filter-new", "dedup": {"version": 99, "methods": ["exact"]}}
    for meta in (legacy, newer):
        spark.createDataFrame([("a",)], "sample_id STRING").write.format("delta").mode(
            "overwrite"
        ).option("userMetadata", json.dumps(meta)).save(path)
    old = filter_record(spark, cfg, resolve_as_of(spark, cfg, "0"))
    assert old.recorded and old.run_id == "filter-old" and old.model == "m0"
    assert old.dedup == DuplicateRule(True, ("exact", "semantic"), 0.05)
    assert old.dedup.condition() == (
        "method IN ('exact', 'semantic') AND (eps IS NULL OR abs(eps - 0.05) < 1e-9)"
    )
    latest = filter_record(spark, cfg)  # a format this code does not know: the config's rule
    assert latest.version == 1 and not latest.recorded
    assert latest.dedup == DuplicateRule.from_config(cfg) and latest.dedup.eps == 0.2
