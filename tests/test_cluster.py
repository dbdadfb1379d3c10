"""The pipeline on a real Spark standalone cluster (tests/cluster.py), run as users run it.

`spark-submit --master spark://127.0.0.1:PORT --py-files dist/image_curator.zip --jars
$(paste -sd, dist/jars.txt) spark_jobs/<job>.py ...`, one submit per stage, on executors whose
Python has the dependencies but not the project. An executor is killed with SIGKILL in the
middle of the ingest and of the embed stage: the job still completes, each image exactly once.
The tests run in order and share one warehouse (each stage reads what the previous wrote).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import (  # noqa: F401 - `cluster` is the fixture
    BIN,
    Cluster,
    clean_env,
    cluster,
    kill_executor_when_python_runs,
    relaunched,
    step,
)
from tests.tiny import TINY

SHARDS, PER_SHARD = 4, 25


class Run:
    """The shared warehouse and inputs of this module's tests."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.shards = base / "shards"
        self.warehouse = base / "warehouse"
        self.output = base / "curated_wds"
        self.summaries: dict[str, Any] = {}
        self.samples = 0

    def args(self) -> list[str]:
        sets = [
            *TINY,
            "filter.predicates=['width >= 64']",
            "spark.conf.spark.sql.shuffle.partitions=4",
        ]
        return ["--warehouse", str(self.warehouse), *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:  # noqa: F811
    r = Run(tmp_path_factory.mktemp("cluster_run"))
    with step("curator sample-shards"):
        out = subprocess.run(
            [
                str(BIN / "curator"),
                "sample-shards",
                "--out",
                str(r.shards),
                "--shards",
                str(SHARDS),
                "--per-shard",
                str(PER_SHARD),
                "--seed",
                "3",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=r.base,
            env=clean_env(),
        )
    assert out.returncode == 0, out.stderr
    r.samples = SHARDS * PER_SHARD
    return r


def table(run: Run, name: str) -> Any:
    """A table read with delta-rs on the test side (no Spark)."""
    from deltalake import DeltaTable

    return DeltaTable(str(run.warehouse / f"curator.db/{name}")).to_pyarrow_table()


def stage(cluster: Cluster, run: Run, job: str, *extra: str, **kw: Any) -> Any:  # noqa: F811
    with step(f"spark-submit {job}"):
        sub = cluster.submit(f"{job}.py", *run.args(), *extra, cwd=run.base, **kw)  # extra wins
    run.summaries[job] = sub.summary
    # the summary is the last stdout line and valid JSON on its own
    json.dumps(sub.summary)
    return sub


def assert_recovered(cluster: Cluster, sub: Any) -> None:  # noqa: F811
    """The kill landed on a running task, Spark saw it, the master started a new executor."""
    assert sub.notes and sub.killed_app, "no executor was killed"
    lost = sub.lost_tasks()
    assert any(t["executor"] == sub.killed_executor for t in lost), (sub.notes, lost)
    assert "Lost executor" in sub.stderr, sub.stderr[-3000:]
    assert relaunched(cluster, sub.killed_app) >= 3  # two at the start, one after the kill


def test_ingest_survives_executor_loss(cluster: Cluster, run: Run) -> None:  # noqa: F811
    sub = stage(
        cluster,
        run,
        "ingest",
        "--input",
        str(run.shards),
        during=kill_executor_when_python_runs(),
    )
    assert_recovered(cluster, sub)
    s = sub.summary
    assert s["job"] == "ingest" and s["balanced"] is True
    ids = table(run, "images").column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    assert s["tables"]["images"] == len(ids) == s["rows_written"]
    assert len(ids) + s["quarantined"] == run.samples
    assert table(run, "shards").num_rows == SHARDS


def test_embed_survives_executor_loss(cluster: Cluster, run: Run) -> None:  # noqa: F811
    sub = stage(cluster, run, "embed", during=kill_executor_when_python_runs())
    assert_recovered(cluster, sub)
    images = set(table(run, "images").column("sample_id").to_pylist())
    scores = table(run, "scores").column("sample_id").to_pylist()
    assert len(scores) == len(set(scores)), Counter(scores).most_common(3)  # no duplicates
    assert set(scores) == images  # none missing: one scores row per image
    assert run.summaries["embed"]["tables"]["scores"] == len(images)


# classify gets a new head column to fill (real work on the executors: stored embeddings only)
THIRD_HEAD = (
    "classifiers=[{name: aesthetic, random_init: true}, {name: nsfw, random_init: true}, "
    "{name: aesthetic, random_init: true, output_column: aesthetic2_score}]"
)


def test_pipeline_classify_to_export(cluster: Cluster, run: Run) -> None:  # noqa: F811
    """classify, dedup (all three methods), filter, export: `spark_jobs/pipeline.py
    --from-stage classify` (`curator run`), one submit."""
    sub = stage(
        cluster,
        run,
        "pipeline",
        "--from-stage",
        "classify",
        "--output",
        str(run.output),
        "--set",
        "dedup.methods=[exact, perceptual, semantic]",
        "--set",
        THIRD_HEAD,
        timeout=480,  # four stages in one submit, beside the other worker's tests
    )
    by_job = {s["job"]: s for s in sub.summary}
    assert list(by_job) == ["classify", "dedup", "filter", "export"], list(by_job)
    assert all(s["balanced"] for s in sub.summary), sub.summary
    images = table(run, "images").num_rows
    scores = table(run, "scores")
    # classify filled the new head's column for every row, and added no row
    assert scores.num_rows == images == by_job["classify"]["tables"]["scores"]
    assert scores.column("aesthetic2_score").null_count == 0
    methods = set(table(run, "duplicates").column("method").to_pylist())
    assert {"exact", "perceptual"} <= methods, methods  # the sample shards plant both kinds
    assert by_job["dedup"]["extra"]["methods"] == "exact,perceptual,semantic"
    curated = table(run, "curated").column("sample_id").to_pylist()
    assert curated and len(curated) == len(set(curated)) == by_job["filter"]["tables"]["curated"]
    manifest = json.loads((run.output / "manifest.json").read_text())
    assert manifest["samples"] == len(curated) == by_job["export"]["rows_written"], manifest
    assert len(list(run.output.glob("*.tar"))) == len(manifest["shards"]) > 0


def test_check(cluster: Cluster, run: Run) -> None:  # noqa: F811
    # --config as a job file names it: no conf/ here, so the copy inside the zip is read
    s = stage(cluster, run, "check", "--config", "conf/curation.yaml").summary
    assert s["job"] == "check" and s["skipped"] == 0 and s["rows_in"] > 0, s
