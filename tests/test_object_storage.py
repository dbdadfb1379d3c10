"""Object storage end to end, against moto's S3 server over HTTP on 127.0.0.1 (tests/s3server.py).

Shards are read from `s3://`, the warehouse is on `s3a://` (Delta through S3A), the export
goes to `s3://`: endpoint and credentials come from the standard AWS environment only. One
server for the module; jobs run in process on the shared `spark` session.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import S3Server
from tests.tiny import TINY

BUCKET = "curator-test"
# long enough to be remembered by the redaction (spark_jobs/redact.py: 8 characters or more)
ACCESS_KEY = "AKIAOBJSTORETEST4711"
SECRET_KEY = "s3cr3t-" + uuid.uuid4().hex + "-never-printed"
ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:  # type: ignore[no-untyped-def]
    """The server, the AWS environment pointing at it, and the session configured from it."""
    from spark_jobs.session import AWS_ENV_KEYS, configure_object_storage

    base = tmp_path_factory.mktemp("s3")
    server = S3Server(base / "state", base / "server.log")
    server.start(timeout=60)
    saved = {k: os.environ.get(k) for k in AWS_ENV_KEYS}
    os.environ.update({**ENV, "AWS_ENDPOINT_URL": server.endpoint})
    hadoop_keys = configure_object_storage(spark)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    import boto3

    boto3.client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket=BUCKET)  # fmt: skip
    try:
        yield server
    finally:
        server.stop()
        for hadoop in (
            spark.sparkContext._jsc.hadoopConfiguration(),
            spark._jsparkSession.sharedState().hadoopConf(),
        ):
            for key in hadoop_keys:
                if ".s3a." in key:
                    hadoop.unset(key.removeprefix("spark.hadoop."))
        for key, value in saved.items():
            spark.sparkContext.environment.pop(key, None)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()


def _fs() -> Any:
    from curator_udfs.shard_listing import url_to_fs

    return url_to_fs(f"s3://{BUCKET}")[0]


def _cfg(database: str, *sets: str) -> Any:
    from spark_jobs.config import load_config

    return load_config(
        sets=[
            f"database={database}",
            *TINY,
            "filter.predicates=['width >= 1']",
            "export.samples_per_shard=4",
            "export.tasks=1",
            *sets,
        ],
        warehouse=f"s3a://{BUCKET}/wh",
    )


def _read_shard(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def s3_run(spark, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """ingest (s3://) → embed → filter on an s3a:// warehouse → export to s3://; what was said."""
    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import embed, export, filter, ingest
    from spark_jobs.catalog import register_tables

    local = tmp_path_factory.mktemp("s3shards")
    write_sample_shards(local, shards=2, per_shard=6, max_size=96)
    fs = _fs()
    for p in sorted(local.glob("*.tar")):
        fs.put_file(str(p), f"{BUCKET}/shards/{p.name}")
    cfg = _cfg("s3db")
    register_tables(spark, cfg)  # as build_session does: the database at s3a://.../s3db.db
    summaries = {
        "ingest": ingest.run(spark, cfg, inputs=[f"s3://{BUCKET}/shards/*.tar"]),
        "embed": embed.run(spark, cfg),
        "filter": filter.run(spark, cfg),
        "export": export.run(spark, cfg, output=f"s3://{BUCKET}/out/"),
    }
    return {"cfg": cfg, "summaries": summaries, "local": local}


def test_s3a_settings_come_from_the_aws_environment() -> None:
    from spark_jobs.session import s3a_settings

    env = {**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_SESSION_TOKEN": "tok-" + "x" * 20}
    got = s3a_settings(env)
    h = "spark.hadoop.fs."
    assert got[h + "s3a.access.key"] == ACCESS_KEY and got[h + "s3a.secret.key"] == SECRET_KEY
    assert got[h + "s3a.endpoint"] == "http://127.0.0.1:9"
    assert got[h + "s3a.path.style.access"] == "true"
    assert got[h + "s3a.connection.ssl.enabled"] == "false"
    assert got[h + "s3a.endpoint.region"] == "us-east-1"
    assert got[h + "s3a.session.token"].startswith("tok-")
    assert got[h + "s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    # nothing set: S3A's own chain (instance roles), s3:// still mapped, no path style
    assert set(s3a_settings({})) == {h + "s3.impl", h + "AbstractFileSystem.s3.impl"}


def test_s3_storage_options_and_redaction_cover_the_new_keys() -> None:
    from curator_udfs.shard_listing import s3_storage_options, storage_options
    from spark_jobs.redact import is_secret_key, redact, remember_secrets, secret_values
    from spark_jobs.session import s3a_settings

    opts = s3_storage_options({**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert opts["key"] == ACCESS_KEY and opts["secret"] == SECRET_KEY
    assert opts["endpoint_url"] == "http://127.0.0.1:9"
    assert opts["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert opts["client_kwargs"] == {"region_name": "us-east-1"}
    assert storage_options("/local/path") == {} and storage_options("file:///x") == {}
    settings = s3a_settings({**ENV, "AWS_SESSION_TOKEN": "session-token-value-1"})
    secret_keys = {k for k in settings if is_secret_key(k)}
    assert secret_keys >= {  # (+ aws.credentials.provider, a class name: masked, harmless)
        "spark.hadoop.fs.s3a.access.key",
        "spark.hadoop.fs.s3a.secret.key",
        "spark.hadoop.fs.s3a.session.token",
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert is_secret_key(name)
    masked = redact(settings)
    assert all(masked[k] == "***" for k in secret_keys)
    remember_secrets(secret_values(settings))
    text = f"failed: fs.s3a.secret.key={SECRET_KEY} at s3a://b/x ({ACCESS_KEY})"
    assert SECRET_KEY not in redact(text) and ACCESS_KEY not in redact(text)


def test_pipeline_reads_writes_and_exports_on_object_storage(spark, s3_run) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.tables import is_delta, read_table, table_path

    cfg, summaries = s3_run["cfg"], s3_run["summaries"]
    assert summaries["ingest"].rows_written == 12
    for table in ("shards", "images", "scores", "curated", "exported"):
        path = table_path(cfg, table)
        assert path.startswith(f"s3a://{BUCKET}/wh/s3db.db/") and is_delta(path), table
    uris = {r.shard_uri for r in read_table(spark, cfg, "shards").collect()}
    assert uris == {f"s3://{BUCKET}/shards/{p.name}" for p in s3_run["local"].glob("*.tar")}
    assert spark.sql("SELECT count(*) AS n FROM s3db.images").first()["n"] == 12  # by name
    curated = {r.sample_id for r in read_table(spark, cfg, "curated").collect()}
    assert len(curated) == 12

    fs = _fs()
    manifest = json.loads(fs.cat_file(f"{BUCKET}/out/manifest.json"))
    names = sorted(e.rsplit("/", 1)[-1] for e in fs.ls(f"{BUCKET}/out", detail=False))
    assert names == sorted([*(s["name"] for s in manifest["shards"]), "manifest.json"])
    assert manifest["samples"] == 12 and manifest["shard_count"] == 3
    keys: list[str] = []
    for shard in manifest["shards"]:
        data = fs.cat_file(f"{BUCKET}/out/{shard['name']}")
        assert len(data) == shard["bytes"]
        members = _read_shard(data)
        keys += sorted({m.split(".", 1)[0] for m in members})
        assert {m.split(".", 1)[1] for m in members} >= {"json", "txt"}
    assert sorted(keys) == sorted(curated)  # every curated sample exactly once
    assert fs.cat_file(f"{BUCKET}/wh/catalog.sql").decode().count("USING delta LOCATION 's3a://")


def test_why_reads_the_filter_rule_recorded_in_the_bucket(spark, s3_run) -> None:  # type: ignore[no-untyped-def]
    """The rule `why`/`costs` show comes from the filter's commit on the bucket (its log file
    read through fsspec), not the configuration's stand-in."""
    from spark_jobs.lineage import filter_record
    from spark_jobs.tables import commit_info, latest_version, table_path

    cfg = s3_run["cfg"]
    assert s3_run["summaries"]["embed"].rows_written == 12  # its append found its own commit
    path = table_path(cfg, "curated")
    version = latest_version(spark, path)
    assert version >= 0 and commit_info(path, version) is not None
    assert commit_info(path, version + 1) is None  # not written yet
    rec = filter_record(spark, cfg)
    assert rec.recorded and rec.version == version
    assert rec.predicates == ["width >= 1"] and rec.run_id == s3_run["summaries"]["filter"].run_id


def test_export_survives_a_server_crash_midway(spark, s3: S3Server, s3_run) -> None:  # type: ignore[no-untyped-def]
    """The server dies right after the first shard PUT: no manifest; a rerun completes it."""
    from spark_jobs import export

    cfg = s3_run["cfg"]
    out = f"s3://{BUCKET}/crash"
    fs = _fs()
    s3.arm_crash(rf"^/{BUCKET}/crash/\d+\.tar$")
    with pytest.raises(Exception):  # noqa: B017 - whatever the S3 client raises, the job fails
        export.run(spark, cfg, output=out)
    assert s3.wait_exit(timeout=60) == 17
    s3.start(timeout=60)  # same port, same (durable) state
    left = sorted(e.rsplit("/", 1)[-1] for e in fs.ls(f"{BUCKET}/crash", detail=False))
    assert "manifest.json" not in left and left, left  # incomplete, and a reader can tell
    assert "00000.tar" in left
    summary = export.run(spark, cfg, output=out)
    manifest = json.loads(fs.cat_file(f"{BUCKET}/crash/manifest.json"))
    names = sorted(e.rsplit("/", 1)[-1] for e in fs.ls(f"{BUCKET}/crash", detail=False))
    assert names == sorted([*(s["name"] for s in manifest["shards"]), "manifest.json"])
    keys = [
        m.split(".", 1)[0]
        for s in manifest["shards"]
        for m in _read_shard(fs.cat_file(f"{BUCKET}/crash/{s['name']}"))
        if m.endswith(".json")
    ]
    assert len(keys) == len(set(keys)) == manifest["samples"] == summary.rows_written == 12
    first = json.loads(fs.cat_file(f"{BUCKET}/out/manifest.json"))
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in first["shards"]]


def test_secrets_reach_no_output_summary_or_table(spark, s3: S3Server, s3_run, capfd) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.tables import ALL_TABLES, read_table, table_exists

    cfg, summaries = s3_run["cfg"], s3_run["summaries"]
    texts = [json.dumps(s.to_dict(), default=str) for s in summaries.values()]
    fs = _fs()
    texts += [fs.cat_file(f"{BUCKET}/wh/catalog.sql").decode()]
    texts += [fs.cat_file(f"{BUCKET}/out/manifest.json").decode()]
    for logical in ALL_TABLES:
        if table_exists(spark, cfg, logical):
            df = read_table(spark, cfg, logical)
            cols = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
            texts += [json.dumps([r.asDict() for r in df.select(*cols).collect()], default=str)]
    history = spark.sql(f"DESCRIBE HISTORY delta.`{cfg.warehouse}/s3db.db/images`").collect()
    texts += [str(r.asDict()) for r in history]
    out, err = capfd.readouterr()
    texts += [out, err]
    texts.append(s3.log.read_text(errors="replace"))  # the server's request log
    joined = "\n".join(texts)
    assert SECRET_KEY not in joined and ACCESS_KEY not in joined
    assert f"s3a://{BUCKET}/wh" in joined  # the texts are the real ones


def test_reference_mode_reads_byte_ranges_from_the_bucket(spark, s3_run) -> None:  # type: ignore[no-untyped-def]
    """`ingest.bytes: reference` on the same s3:// shards: no bytes in the s3a:// lake, and embed
    and export read the ranges from the bucket: the same embeddings and exported images."""
    from spark_jobs import embed, export, filter, ingest
    from spark_jobs.catalog import register_tables
    from spark_jobs.tables import read_table

    cfg = _cfg("s3ref", "ingest.bytes=reference")
    register_tables(spark, cfg)
    assert ingest.run(spark, cfg, inputs=[f"s3://{BUCKET}/shards/*.tar"]).rows_written == 12
    assert read_table(spark, cfg, "images").where("image IS NOT NULL").count() == 0
    assert embed.run(spark, cfg).rows_written == 12
    filter.run(spark, cfg)
    export.run(spark, cfg, output=f"s3://{BUCKET}/out-ref/")

    def embeddings(c: Any) -> dict[str, list[float]]:
        rows = read_table(spark, c, "scores").select("sample_id", "embedding").collect()
        return {r[0]: list(r[1]) for r in rows}

    assert embeddings(cfg) == embeddings(s3_run["cfg"])
    fs = _fs()

    def images(prefix: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        manifest = json.loads(fs.cat_file(f"{BUCKET}/{prefix}/manifest.json"))
        for shard in manifest["shards"]:
            data = fs.cat_file(f"{BUCKET}/{prefix}/{shard['name']}")
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    f = tar.extractfile(m)
                    if f is not None and not m.name.endswith((".json", ".txt")):
                        out[m.name] = f.read()
        return out

    copied, referenced = images("out"), images("out-ref")
    assert len(copied) == 12 and referenced == copied


def test_object_store_outputs_are_validated() -> None:
    from spark_jobs.config import ConfigError, load_config
    from spark_jobs.export import output_dir
    from spark_jobs.paths import StoreURI

    cfg = load_config()
    assert output_dir(cfg, "s3://bucket/out/") == StoreURI("s3://bucket/out")
    assert isinstance(output_dir(cfg, "./curated"), Path)
    with pytest.raises(ConfigError, match="names no bucket"):
        output_dir(cfg, "s3a://")
    with pytest.raises(ConfigError, match="s3:// or s3a://"):
        output_dir(cfg, "gs://bucket/out")
