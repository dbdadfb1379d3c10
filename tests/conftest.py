"""Shared fixtures: one session-scoped local SparkSession; each test its own warehouse."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jvm_archive import jvm_opts

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

# Every JVM the tests start (this session's, each `curator` and spark-submit subprocess, the
# standalone cluster's daemons and executors) runs with the C1 JIT only, the serial GC and
# interpreted (not generated) Spark SQL code (tests/jvm_archive.py: INTERPRETED).
# Test JVMs live seconds to minutes on tiny data: C2 compiles of Spark's planner, Janino and
# Delta's log replay cost more CPU than they ever win back, and on two cores that CPU is
# taken from the tests. Measured on this machine: a `spark-submit` ingest of 40 samples,
# 66 s -> 36 s of CPU; tests/test_filter.py in one pytest, 178 s -> 144 s. The code paths
# are the same (a JIT choice); users' jobs keep the JVM's defaults. Once `make test` has built
# it, every test JVM also maps a class-data-sharing archive of Spark's classes (tests/jvm_archive).
TEST_JVM_OPTS = jvm_opts()
os.environ.setdefault("SPARK_SUBMIT_OPTS", TEST_JVM_OPTS)  # drivers (spark-submit, pyspark)
os.environ.setdefault("SPARK_DAEMON_JAVA_OPTS", TEST_JVM_OPTS)  # standalone master/workers

# Test files by wall time, longest first (seconds: setup, call and teardown of a file's tests in
# one `make test` on the 2-core machine, 2026-12-03). `make test` runs them in this order
# (`--no-loadscope-reorder`): xdist would otherwise start the files with the most tests first
# and leave the few-but-long ones (a cluster, kill chains) for the end, with one worker idle
# while the other runs them. The rest (under 10 s each) follow in collection order.
LONGEST_FIRST = (
    "tests/faults/test_kill.py",  # 332
    "tests/test_cluster.py",  # 241
    "tests/test_lineage.py",  # 162
    "tests/test_spark_submit.py",  # 143
    "tests/test_reference_mode.py",  # 135
    "tests/test_api.py",  # 133
    "tests/test_dedup_incremental.py",  # 120
    "tests/test_dedup_job.py",  # 108
    "tests/faults/test_bad_corpus.py",  # 96
    "tests/test_object_storage.py",  # 87
    "tests/test_pipeline.py",  # 84
    "tests/test_cli.py",  # 73
    "tests/test_dedup_bad_input.py",  # 71
    "tests/test_embed_job.py",  # 68
    "tests/test_ingest.py",  # 51
    "tests/test_check.py",  # 49
    "tests/test_open_readers.py",  # 48
    "tests/faults/test_concurrent.py",  # 45
    "tests/test_filter.py",  # 45
    "tests/test_dedup_perceptual.py",  # 42
    "tests/faults/test_worker_crash.py",  # 35
    "tests/test_export.py",  # 34
    "tests/test_clip_score.py",  # 32
    "tests/faults/test_unwritable.py",  # 32
    "tests/test_embed_write.py",  # 31
    "tests/test_dedup_resolve.py",  # 29
    "tests/test_model_choice.py",  # 24
    "tests/test_report.py",  # 13
    "tests/faults/test_security.py",  # 11
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the files by LONGEST_FIRST (a stable sort: a file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """local[2] Spark with Delta, small shuffles, no UI (like Delta's own test base)."""
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    base = tmp_path_factory.mktemp("spark")
    cfg = load_config(
        sets=[
            "spark.conf={spark.master: 'local[2]', spark.sql.shuffle.partitions: 4}",
            "spark.with_rapids_jar=true",
            "spark.with_object_store_jars=true",  # tests/test_object_storage.py: s3a warehouses
        ],
        warehouse=str(base / "warehouse"),
    )
    session = build_session(cfg, app_name="curator-tests")
    yield session
    session.stop()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable:
    """A config with its own warehouse and database, plus any `--set` overrides."""
    from spark_jobs.config import load_config

    def make(*sets: str, warehouse: Path | None = None, database: str | None = None):
        db = database or f"t_{uuid.uuid4().hex[:8]}"
        return load_config(
            sets=[f"database={db}", "spark.conf={spark.master: 'local[2]'}", *sets],
            warehouse=str(warehouse or tmp_path / "warehouse"),
        )

    return make


def shared_models_dir() -> Path:
    """The real LAION weights and reference outputs (../shared/models beside the checkout).

    $CURATOR_SHARED_MODELS wins; a clone elsewhere falls back to /work/shared/models.
    """
    env = os.environ.get("CURATOR_SHARED_MODELS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "models"]
    candidates += [Path("/work/shared/models")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


@dataclass(frozen=True)
class PipelineRun:
    """What the shared `pipeline_run` fixture made: its config, inputs and stage summaries."""

    cfg: Any  # spark_jobs.config.Config
    shards: Path
    output: Path
    summaries: dict[str, Any]  # stage name -> Summary
    samples: int  # samples in the sample shards (the truncated shard's not counted)
    exact_pairs: int  # byte-identical copies planted in the sample shards


@pytest.fixture(scope="session")
def pipeline_run(spark, tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:  # type: ignore[no-untyped-def]
    """Every stage once (`pipeline.run`) on small sample shards with the tiny random model.

    All thirteen tables get rows: dedup writes `duplicate_pairs` too, and a truncated shard puts
    one sample in `quarantine`. Shared by the tests that only read its tables: do not write
    to its warehouse (make your own with `make_cfg`).
    """
    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import pipeline
    from spark_jobs.config import load_config
    from spark_jobs.progress import Progress
    from tests import badshards
    from tests.tiny import TINY

    base = tmp_path_factory.mktemp("pipeline_run")
    shards, output = base / "shards", base / "curated"
    report = write_sample_shards(shards, shards=2, per_shard=20, seed=1)
    badshards.write_truncated_tar(shards / "truncated.tar", complete=3)
    cfg = load_config(
        sets=[
            # a Unity Catalog style `catalog.schema` (the session catalog: no UC here)
            f"database=spark_catalog.pipeline_run_{uuid.uuid4().hex[:8]}",
            "spark.conf={spark.master: 'local[2]'}",
            *TINY,
            "filter.predicates=['width >= 64']",
            "dedup.write_pairs=true",
        ],
        warehouse=str(base / "warehouse"),
    )
    # progress lines without polling Spark for row totals (fewer Spark jobs)
    quiet = Progress(len(pipeline.STAGES), rich=False)
    result = pipeline.run(spark, cfg, inputs=[str(shards)], output=str(output), progress=quiet)
    return PipelineRun(
        cfg=cfg,
        shards=shards,
        output=output,
        summaries={s.job: s for s in result.summaries},
        samples=report.samples,
        exact_pairs=report.exact_pairs,
    )
