"""The ingest job on real Spark and Delta: counts, values, bad input, reruns, increments."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from pyspark.sql.types import StructType

from curator_udfs.caption_signals import caption_signals
from curator_udfs.ids import normalize_shard_uri, sample_id
from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import file_sizing, ingest
from spark_jobs.catalog import register_tables
from spark_jobs.tables import IMAGES, read_table, table_path
from tests import badshards


def _ingest(spark, cfg, *inputs: str):
    register_tables(spark, cfg)
    return ingest.run(spark, cfg, inputs=list(inputs))


def _members(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return out


def test_sample_shards_land_with_their_values(spark, make_cfg, tmp_path: Path) -> None:
    report = write_sample_shards(tmp_path / "shards", shards=2, per_shard=20, seed=1)
    cfg = make_cfg()
    summary = _ingest(spark, cfg, str(tmp_path / "shards"))
    assert summary.rows_in == summary.rows_written == report.samples == 40
    assert summary.quarantined == 0 and summary.balanced
    assert summary.extra["shards_ingested"] == 2

    images = {r.sample_id: r for r in read_table(spark, cfg, "images").collect()}
    assert len(images) == 40
    for shard in report.paths:
        if not shard.name.endswith(".tar"):
            continue
        uri = normalize_shard_uri(str(shard))
        for key, members in _members(shard).items():
            row = images[sample_id(uri, key)]
            ext = next(e for e in members if e in ("jpg", "png", "webp"))
            assert row.key == key and row.shard_uri == uri
            assert bytes(row.image) == members[ext]  # original bytes, never re-encoded
            assert row.image_sha256 == hashlib.sha256(members[ext]).hexdigest()
            assert row.caption == members["txt"].decode()
            signals = caption_signals(row.caption)  # computed on the executor at ingest
            assert row.caption_language == signals.language == "en", row.caption
            assert row.caption_language_score == signals.language_score
            assert (row.caption_words, row.caption_chars) == (signals.words, signals.chars)
            assert row.caption_words == len(row.caption.split()) >= 3
            meta = json.loads(row.meta)
            assert meta["key"] == key
            assert (row.width, row.height) == (meta["width"], meta["height"])
            assert row.image_format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    shards = read_table(spark, cfg, "shards").collect()
    assert {r.status for r in shards} == {"ok"} and sum(r.samples for r in shards) == 40


def test_every_bad_case_is_accounted_for(spark, make_cfg, tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    expected = {
        "mixed": badshards.write_mixed_bad_shard(d / "mixed.tar"),
        "trunc": badshards.write_truncated_tar(d / "trunc.tar"),
        "notatar": badshards.write_not_a_tar(d / "notatar.tar"),
        "big": badshards.write_oversized_image_shard(d / "big.tar"),
    }
    cfg = make_cfg("ingest.max_image_bytes=100000", "ingest.shards_per_batch=2")
    summary = _ingest(spark, cfg, str(d))
    images = read_table(spark, cfg, "images")
    quarantine = read_table(spark, cfg, "quarantine")
    totals = [badshards.expected_totals(e) for e in expected.values()]
    assert images.count() == sum(t["images"] for t in totals)
    assert quarantine.count() == sum(t["quarantined"] for t in totals)
    assert summary.balanced and summary.rows_in == sum(t["samples"] for t in totals)

    for name, exp in expected.items():
        uri = normalize_shard_uri(str(d / f"{name}.tar"))
        got_images = {r.key for r in images.where(images.shard_uri == uri).collect()}
        got_q = {(r.key, r.reason) for r in quarantine.where(quarantine.shard_uri == uri).collect()}
        for key, outcome in exp.items():
            if outcome == "image":
                assert key in got_images, (name, key)
            elif outcome == "duplicate_key":
                assert key in got_images and (key, "duplicate_key") in got_q
            else:
                assert (key, outcome) in got_q, (name, key, outcome, got_q)
    status = {
        r.shard_uri.rsplit("/", 1)[1]: r.status for r in read_table(spark, cfg, "shards").collect()
    }
    assert status == {
        "mixed.tar": "ok",
        "trunc.tar": "truncated",
        "notatar.tar": "failed",
        "big.tar": "ok",
    }
    # the summary's shard totals, taken from the batches' shard rows
    shard_rows = read_table(spark, cfg, "shards").collect()
    assert summary.extra["shards_failed"] == summary.extra["shards_truncated"] == 1
    assert summary.extra["bytes_read"] == sum(r.bytes_read for r in shard_rows) > 0

    warnings = {r.key: set(r.warnings) for r in images.collect()}
    assert "caption_not_utf8" in warnings["badutf8"] and "invalid_json" in warnings["badjson"]
    assert "extension_mismatch" in warnings["mismatch"]
    rows = {r.key: r for r in images.collect()}
    assert rows["badjson"].meta is None and rows["cmyk"].image_format == "JPEG"
    assert (rows["png16"].width, rows["png16"].height) == (33, 17)
    assert rows["a/b/nested"].image_format == "JPEG"
    bad = rows["badutf8"]  # decoded with replacement characters: values, never a failure
    assert bad.caption_chars == len(bad.caption.strip()) and bad.caption_words >= 1
    assert (bad.caption_language is None) == (bad.caption_language_score is None)
    for r in rows.values():
        if r.caption is None:
            assert (r.caption_words, r.caption_chars, r.caption_language) == (None, None, None)


def test_rerun_adds_nothing_and_new_shards_only_are_read(spark, make_cfg, tmp_path: Path) -> None:
    d = tmp_path / "shards"
    write_sample_shards(d, shards=2, per_shard=10, seed=2)
    cfg = make_cfg()
    # an `images` table from before the caption signals: ingest adds their columns
    old = [f for f in spark.createDataFrame([], IMAGES.schema).schema.fields
           if not f.name.startswith("caption_")]  # fmt: skip
    spark.createDataFrame([], StructType(old)).write.format("delta").save(table_path(cfg, "images"))
    first = _ingest(spark, cfg, str(d))
    assert first.rows_written == 20
    langs = {r.caption_language for r in read_table(spark, cfg, "images").collect()}
    assert langs == {"en"}
    again = _ingest(spark, cfg, str(d))
    assert again.rows_in == 0 and again.rows_written == 0 and again.extra["shards_skipped"] == 2
    assert read_table(spark, cfg, "images").count() == 20

    badshards.write_tar(d / "00002.tar", badshards.good_members(5, prefix="new"))
    third = _ingest(spark, cfg, str(d))
    assert third.extra["shards_ingested"] == 1 and third.rows_written == 5
    assert read_table(spark, cfg, "images").count() == 25
    ids = read_table(spark, cfg, "images").select("sample_id").distinct().count()
    assert ids == 25


def test_interrupted_batch_reruns_without_duplicates(spark, make_cfg, tmp_path: Path) -> None:
    """Images committed, shard never recorded (a crash in between): the rerun adds none twice."""
    d = tmp_path / "shards"
    write_sample_shards(d, shards=2, per_shard=10, seed=3)
    cfg = make_cfg()
    _ingest(spark, cfg, str(d))
    from delta.tables import DeltaTable

    from spark_jobs.tables import table_path

    DeltaTable.forPath(spark, table_path(cfg, "shards")).delete("shard_uri LIKE '%00001.tar'")
    summary = _ingest(spark, cfg, str(d))
    assert summary.extra["shards_ingested"] == 1
    assert summary.rows_in == 10 and summary.rows_written == 0 and summary.skipped == 10
    assert read_table(spark, cfg, "images").count() == 20


def test_four_then_twelve_shards_land_exactly_once(spark, make_cfg, tmp_path: Path) -> None:
    """4 shards, then a glob of 12 that includes them: every sample exactly once.

    The second run's insert-only MERGE into `images` is one Delta may warn about ("Merge source
    has 0 rows in initial scan but 80 rows in second scan"): its first scan may count no source
    row, yet all rows land, none lost, none doubled, so the warning is spurious (kept off screen
    by conf/spark/log4j2.properties)."""
    from delta.tables import DeltaTable

    from spark_jobs.tables import table_path

    # Longer than the 32 characters Delta keeps of a string in its file statistics.
    d = tmp_path / "a-directory-name-longer-than-delta-string-stats"
    write_sample_shards(d, shards=12, per_shard=10, seed=5)
    tars = sorted(d.glob("*.tar"))
    assert len(tars) == 12
    uris = [normalize_shard_uri(str(t)) for t in tars]
    expected = {u: {sample_id(u, k) for k in _members(t)} for u, t in zip(uris, tars, strict=True)}
    first_four = set(uris[:4])
    cfg = make_cfg()

    first = _ingest(spark, cfg, str(d / "0000[0-3].tar"))
    assert first.extra["shards_ingested"] == 4 and first.rows_written == 40
    second = _ingest(spark, cfg, str(d / "*.tar"))
    assert second.extra["shards_listed"] == 12 and second.extra["shards_skipped"] == 4
    assert second.extra["shards_ingested"] == 8
    assert second.rows_in == second.rows_written == 80 and second.balanced

    images = read_table(spark, cfg, "images").select("sample_id", "shard_uri", "run_id").collect()
    ids = [r.sample_id for r in images]
    assert len(ids) == len(set(ids)) == 120  # none doubled
    assert set(ids) == set().union(*expected.values())  # none lost
    for r in images:  # the first four shards were not read again
        assert r.run_id == (first.run_id if r.shard_uri in first_four else second.run_id)
    assert read_table(spark, cfg, "quarantine").count() == 0
    shards = {r.shard_uri: r for r in read_table(spark, cfg, "shards").collect()}
    assert set(shards) == set(expected)
    assert all(r.status == "ok" and r.images == len(expected[u]) for u, r in shards.items())

    # The shards were recorded with an idempotent append (spark_jobs.shard_record): nothing
    # else wrote `shards` since the run read it.
    last = DeltaTable.forPath(spark, table_path(cfg, "shards")).history(1).first()
    assert last["operation"] == "WRITE" and last["operationMetrics"]["numOutputRows"] == "8"
    assert last["operationMetrics"]["numFiles"] == "1"  # a batch's rows in one file, not 8
    assert second.extra["shard_records"] == "1 appended, 0 merged"
    # The MERGE warning's trigger, recorded in the images commit: the source rows its first
    # scan counted: 0 when AQE drops that join unread, or all of them; never a partial count.
    # Either way all 80 rows landed exactly once (above).
    last = DeltaTable.forPath(spark, table_path(cfg, "images")).history(1).first()
    metrics = last["operationMetrics"]
    assert last["operation"] == "MERGE" and metrics["numTargetRowsInserted"] == "80"
    assert metrics["numSourceRows"] in ("0", "80")
    # eight small shards' images in as many files as the session's default parallelism
    slots = spark.sparkContext.defaultParallelism
    assert slots < 8 and 1 <= int(metrics["numTargetFilesAdded"]) <= slots, (slots, metrics)


def test_a_failed_shard_fixed_in_place_is_read_again_with_retry_failed(
    spark, make_cfg, tmp_path: Path
) -> None:
    """`ingest.retry_failed`: a shard recorded as failed (not a tar), then replaced by a good
    tar, is read again; its `shards` row is updated in place (one row, now ok)."""
    d = tmp_path / "shards"
    write_sample_shards(d, shards=2, per_shard=5, seed=8)
    good = d / "00001.tar"
    saved = good.read_bytes()
    badshards.write_not_a_tar(good)
    cfg = make_cfg("ingest.retry_failed=true")
    first = _ingest(spark, cfg, str(d))
    assert first.extra["shards_failed"] == 1 and first.rows_written == 5
    good.write_bytes(saved)
    again = _ingest(spark, cfg, str(d))
    assert again.extra["shards_ingested"] == 1 and again.extra["shards_failed"] == 0
    assert again.rows_written == 5 and again.extra["shard_records"] == "0 appended, 1 merged"
    shards = read_table(spark, cfg, "shards").collect()
    assert sorted(r.status for r in shards) == ["ok", "ok"] and len(shards) == 2
    assert read_table(spark, cfg, "images").count() == 10


def test_coalesced_writes_about_target_sized_files(spark) -> None:
    """A batch's partitions merge down to ceil(bytes / target) rounded up to whole waves of
    the parallelism (the tasks before the write run in that many), never below the
    parallelism nor above the partitions it has (one per shard)."""
    frame = spark.range(0, 16, 1, 16)
    parts = [
        file_sizing.coalesced(frame, size, parallelism=4, target=100).rdd.getNumPartitions()
        for size in (0, 250, 500, 1_000, 1_300, 10_000)
    ]
    assert parts == [4, 4, 8, 12, 16, 16]


def test_merge_source_warning_is_off_screen_other_delta_warnings_not(spark) -> None:
    """conf/spark/log4j2.properties mutes only MergeIntoCommand's WARN, not Delta's or Spark's."""
    log_manager = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager
    merge = log_manager.getLogger("org.apache.spark.sql.delta.commands.MergeIntoCommand")
    assert not merge.isWarnEnabled() and merge.isErrorEnabled()
    for other in (
        "org.apache.spark.sql.delta.commands.WriteIntoDelta",
        "org.apache.spark.sql.delta.OptimisticTransaction",
        "org.apache.spark.sql.execution.datasources.FileFormatWriter",
    ):
        assert log_manager.getLogger(other).isWarnEnabled(), other


def test_missing_input_is_a_config_error(spark, make_cfg, tmp_path: Path) -> None:
    from spark_jobs.config import ConfigError

    with pytest.raises(ConfigError, match="input.shards"):
        _ingest(spark, make_cfg(), str(tmp_path / "nothing-here"))


def test_images_files_have_row_groups_of_the_configured_size(
    spark, make_cfg, tmp_path: Path
) -> None:
    """A shard's images split into Parquet row groups of about `ingest.row_group_bytes`, so a
    later read of that one shard runs in several tasks (Spark splits only between groups)."""
    import pyarrow.parquet as pq

    write_sample_shards(tmp_path / "shards", shards=1, per_shard=120, seed=3)
    cfg = make_cfg("ingest.row_group_bytes=65536")
    assert _ingest(spark, cfg, str(tmp_path / "shards")).rows_written == 120
    files = sorted(Path(table_path(cfg, "images")).glob("*.parquet"))
    metas = [pq.ParquetFile(f).metadata for f in files]
    groups = [m.row_group(i) for m in metas for i in range(m.num_row_groups)]
    assert sum(g.num_rows for g in groups) == 120
    assert len(groups) >= 3 * len(files), [(m.num_rows, m.num_row_groups) for m in metas]
    image = metas[0].schema.to_arrow_schema().get_field_index("image")
    # each group stops at the first size check past the target: about one image over it
    assert max(g.column(image).total_uncompressed_size for g in groups) < 2 * 65536
    # image bytes are compressed already: Snappy, and no dictionary for them (a column of
    # repeated values, shard_uri, keeps one); the other tables keep the session's codec
    uri = metas[0].schema.to_arrow_schema().get_field_index("shard_uri")
    plain = [metas[0].schema.to_arrow_schema().get_field_index(c) for c in ingest.UNIQUE_COLUMNS]
    for g in groups:
        assert {g.column(i).compression for i in range(g.num_columns)} == {"SNAPPY"}
        for i in (image, *plain):  # and none for the columns of one value per sample
            assert not any("DICTIONARY" in e for e in g.column(i).encodings), g.column(i)
        assert any("DICTIONARY" in e for e in g.column(uri).encodings), g.column(uri)
    shards_file = next(Path(table_path(cfg, "shards")).glob("*.parquet"))
    assert pq.ParquetFile(shards_file).metadata.row_group(0).column(0).compression == "ZSTD"

    # a read split finer than a file gets rows in several tasks, not one
    total = sum(f.stat().st_size for f in files)
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(total // 4, 1)))
    try:
        per_task = (
            read_table(spark, cfg, "images")
            .rdd.mapPartitions(lambda rows: [sum(1 for _ in rows)])
            .collect()
        )
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert sum(per_task) == 120 and sum(1 for n in per_task if n) >= 3, per_task

    # the default: one group per 8 MiB, so these 120 small images are a single group per file
    cfg2 = make_cfg()
    _ingest(spark, cfg2, str(tmp_path / "shards"))
    for f in Path(table_path(cfg2, "images")).glob("*.parquet"):
        assert pq.ParquetFile(f).metadata.num_row_groups == 1
    assert spark.conf.get("parquet.block.size", None) is None  # the settings were scoped
    assert spark.conf.get("spark.sql.parquet.compression.codec") == "zstd"


def _stats_columns(table: str) -> list[set[str]]:
    """Per data file added to the table's log: the columns its statistics cover."""
    out = []
    for log in sorted((Path(table) / "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            add = json.loads(line).get("add")
            if add and add.get("stats"):
                out.append(set(json.loads(add["stats"])["nullCount"]))
    return out


def test_images_statistics_skip_the_bytes_caption_and_json(
    spark, make_cfg, tmp_path: Path
) -> None:
    """`images` files carry Delta statistics (for data skipping) on every column but `image`,
    `caption`, `meta` and `warnings`; a table from before that setting gets it on the next
    ingest, and a value a user set is kept."""
    write_sample_shards(tmp_path / "a", shards=1, per_shard=20, seed=3)
    write_sample_shards(tmp_path / "b", shards=1, per_shard=20, seed=4)
    cfg = make_cfg()
    _ingest(spark, cfg, str(tmp_path / "a"))
    path = table_path(cfg, "images")
    columns = {f.name for f in spark.createDataFrame([], IMAGES.schema).schema}
    (prop,) = [v for k, v in IMAGES.properties if k == "delta.dataSkippingStatsColumns"]
    assert set(prop.split(",")) == columns - {"image", "caption", "meta", "warnings"}, prop
    for stats in _stats_columns(path):
        assert stats == set(prop.split(",")), stats
    # an older table: the property absent, so every column gets statistics
    spark.sql(f"ALTER TABLE delta.`{path}` UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    _ingest(spark, cfg, str(tmp_path / "b"))
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    assert dict((r["key"], r["value"]) for r in props)["delta.dataSkippingStatsColumns"] == (
        dict(IMAGES.properties)["delta.dataSkippingStatsColumns"]
    )
    assert all(not s & {"image", "caption", "meta", "warnings"} for s in _stats_columns(path))
    # a user's own choice stays, also the other setting of it (it would be overridden)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES "
              "('delta.dataSkippingStatsColumns' = 'sample_id,caption')")  # fmt: skip
    before = len(_stats_columns(path))
    write_sample_shards(tmp_path / "c", shards=1, per_shard=20, seed=5)
    _ingest(spark, cfg, str(tmp_path / "c"))
    assert _stats_columns(path)[before:] and all(
        s == {"sample_id", "caption"} for s in _stats_columns(path)[before:]
    )
    spark.sql(f"ALTER TABLE delta.`{path}` UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES "
              "('delta.dataSkippingNumIndexedCols' = '2')")  # fmt: skip
    write_sample_shards(tmp_path / "d", shards=1, per_shard=20, seed=6)
    _ingest(spark, cfg, str(tmp_path / "d"))
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    assert "delta.dataSkippingStatsColumns" not in {r["key"] for r in props}
    assert _stats_columns(path)[-1] == {"sample_id", "key"}  # the first two columns


def test_each_shard_is_read_in_its_own_task_without_a_python_rdd(spark) -> None:
    """The reading tasks are a JVM `Range` of one row each, picking their shard from literal
    arrays (a Python RDD from `parallelize` or `createDataFrame` of a list would run a job of
    Python tasks first, or every task through a second Python worker)."""
    from pyspark.sql import functions as F

    from curator_udfs.shard_listing import ShardFile

    batch = [ShardFile(uri=f"file:///s/{i:03d}.tar", size=i, mtime=float(i)) for i in range(5)]
    df = ingest.one_task_per_shard(spark, batch)
    assert df.rdd.getNumPartitions() == 5
    per_part = df.groupBy(F.spark_partition_id().alias("p")).count().collect()
    assert sorted(r["count"] for r in per_part) == [1] * 5
    assert sorted((r.shard_uri, r.size, r.mtime) for r in df.collect()) == [
        (f.uri, f.size, f.mtime) for f in batch
    ]
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "Range (0, 5, step=1, splits=5)" in plan, plan
    assert "Scan ExistingRDD" not in plan and "Exchange" not in plan, plan
    assert df.schema.simpleString() == "struct<shard_uri:string,size:bigint,mtime:double>"
    # no mtime known (a store that does not say): NULL, typed
    unknown = ingest.one_task_per_shard(spark, [ShardFile(uri="s3://b/x.tar", size=7, mtime=None)])
    assert [tuple(r) for r in unknown.collect()] == [("s3://b/x.tar", 7, None)]


def test_image_rows_flow_on_and_the_other_rows_go_to_the_side(tmp_path: Path) -> None:
    """The reading function yields only image rows; quarantine and shard rows reach the sink
    (on Spark: an accumulator) as Arrow streams, so nothing is cached to feed three tables."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from curator_udfs.ingest_batches import image_rows_only, rows_from_ipc
    from curator_udfs.shard_reader import IngestLimits

    expected = badshards.write_mixed_bad_shard(tmp_path / "mixed.tar")
    totals = badshards.expected_totals(expected)
    uri = normalize_shard_uri(str(tmp_path / "mixed.tar"))
    shard = pa.RecordBatch.from_pylist([{"shard_uri": uri, "size": 1, "mtime": 2.0}])
    streams: list[bytes] = []

    class Sink:
        def add(self, term: list[bytes]) -> None:
            streams.extend(term)

    out = list(image_rows_only(iter([shard]), side=Sink(), limits=IngestLimits(),
                               run_id="r", at=datetime.now(UTC), max_batch_rows=4))  # fmt: skip
    assert len(out) > 2 and len(streams) > 1  # several output batches, each split
    kinds = {k for b in out for k in b.column("kind").to_pylist()}
    assert kinds == {"image"} and sum(b.num_rows for b in out) == totals["images"]
    side = rows_from_ipc(streams).to_pylist()
    assert [r["kind"] for r in side].count("quarantine") == totals["quarantined"] > 0
    (shard_row,) = [r for r in side if r["kind"] == "shard"]
    assert (shard_row["images"], shard_row["quarantined"]) == (totals["images"],
                                                             totals["quarantined"])  # fmt: skip
    # a task computed twice (a lost executor, a retried stage) sends its rows twice
    assert rows_from_ipc(streams + streams[::-1]).to_pylist() == side
    assert rows_from_ipc([]).num_rows == 0


def test_a_shard_whose_outcome_never_came_back_stops_the_batch() -> None:
    import pyarrow as pa

    from curator_udfs.ingest_batches import INGEST_ROW_SCHEMA
    from curator_udfs.shard_listing import ShardFile

    batch = [ShardFile(uri=f"file:///s/{i}.tar", size=1, mtime=1.0) for i in range(2)]
    rows = [{"kind": "shard", "shard_uri": f.uri} for f in batch]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, INGEST_ROW_SCHEMA) as writer:
        writer.write_table(pa.Table.from_pylist(rows[:1], schema=INGEST_ROW_SCHEMA))
    with pytest.raises(RuntimeError, match=r"1 shard\(s\) never reached .*1\.tar.* rerunning"):
        ingest.side_rows(batch, [sink.getvalue().to_pybytes()])
    assert ingest.side_rows(batch[:1], [sink.getvalue().to_pybytes()]).num_rows == 1


def test_the_images_merge_reads_the_shards_directly_not_a_cache(
    spark, make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's MERGE sources: images straight from the reading tasks, quarantine and
    shards from the driver's rows (a local table, no job of its own); nothing persisted."""
    d = tmp_path / "bad"
    d.mkdir()
    badshards.write_mixed_bad_shard(d / "mixed.tar")
    write_sample_shards(d, shards=2, per_shard=5, seed=4)
    real = ingest.merge_insert_new
    plans: dict[str, str] = {}

    def spy(spark_, cfg_, tdef, source, **kw):
        plans[tdef.logical] = source._jdf.queryExecution().optimizedPlan().toString()
        assert spark_._jsparkSession.sharedState().cacheManager().isEmpty()
        return real(spark_, cfg_, tdef, source, **kw)

    monkeypatch.setattr(ingest, "merge_insert_new", spy)
    summary = _ingest(spark, make_cfg(), str(d))
    assert summary.balanced and summary.quarantined > 0
    assert summary.rows_written == summary.rows_in - summary.quarantined >= 10
    assert set(plans) == {"images", "quarantine"}
    assert "MapInArrow" in plans["images"] and "InMemoryRelation" not in plans["images"]
    assert "LocalRelation" in plans["quarantine"] and "MapInArrow" not in plans["quarantine"]
    # the side channel's accumulator: emptied after its batch (Spark never drops one), and
    # shipped to the executors without the job's module (they import curator_udfs only)
    from pyspark import cloudpickle
    from pyspark.accumulators import _accumulatorRegistry

    from curator_udfs.ingest_batches import StreamList

    side = [a for a in _accumulatorRegistry.values() if isinstance(a.accum_param, StreamList)]
    assert side and all(a.value == [] for a in side)
    assert b"spark_jobs" not in cloudpickle.dumps(side[-1])
