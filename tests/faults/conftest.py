"""The fault tests' shared reference: one uninterrupted `curator run` over a small corpus."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from curator_udfs.sample_shards import write_sample_shards
from tests import badshards
from tests.faults import harness

# Which tables each stage commits to (its commits are the commit-trigger's range).
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "ingest": ("images", "quarantine", "shards"),
    "embed": ("scores",),
    "classify": (),
    "dedup": ("duplicates", "phashes"),
    "filter": ("curated", "filter_stats"),
    "export": ("exported",),
}


@dataclass
class Reference:
    """The uninterrupted run every fault test compares with."""

    shards: Path
    warehouse: Path
    output: Path
    summaries: list[dict[str, Any]]
    tables: dict[str, list[tuple[Any, ...]]]
    members: list[tuple[str, list[tuple[str, int]]]]
    log: str = ""  # the run's stdout + stderr (it ran with credentials set)

    def seconds(self, stage: str) -> float:
        return float(next(s["seconds"] for s in self.summaries if s["job"] == stage))

    def commits(self, stage: str) -> int:
        """Commits the stage made in the reference warehouse (it started empty)."""
        db = self.warehouse / f"{harness.DB}.db"
        return sum(len(list((db / t / "_delta_log").glob("*.json"))) for t in STAGE_TABLES[stage])

    def run_args(self, warehouse: Path, output: Path, *extra: str) -> list[str]:
        """`curator run` arguments over the same input, into another warehouse and output."""
        return [
            "run",
            "--warehouse",
            str(warehouse),
            "--input",
            str(self.shards),
            "--output",
            str(output),
            *harness.set_args(),
            *extra,
        ]


def write_corpus(d: Path) -> None:
    """Two realistic shards (planted duplicates) and one truncated shard (a quarantined cut)."""
    write_sample_shards(d, shards=2, per_shard=6, seed=5)
    badshards.write_truncated_tar(d / "cut.tar", complete=2)


@pytest.fixture(scope="session")
def reference(spark: Any, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Reference:
    """Run the whole pipeline once, uninterrupted, with object-store credentials set (the
    security test checks none leaks); snapshot every table.

    Under xdist the run is made once for all workers (in the run's shared temp directory,
    under a file lock); each worker snapshots it with its own session.
    """
    from filelock import FileLock

    if worker_id == "master":  # no xdist: this process's own temp directory
        base = tmp_path_factory.mktemp("reference")
    else:
        base = tmp_path_factory.getbasetemp().parent / "reference"
        base.mkdir(exist_ok=True)
    shards, wh, out = base / "shards", base / "wh", base / "out"
    ref = Reference(shards, wh, out, [], {}, [])
    done, log = base / "stdout.txt", base / "log.txt"
    with FileLock(str(base / ".lock")):
        if not done.is_file():
            write_corpus(shards)
            proc = harness.curator(
                *ref.run_args(wh, out, "--json", *harness.set_args(*harness.SECRET_SETS, base=()))
            )
            log.write_text(proc.stdout + proc.stderr)
            done.write_text(proc.stdout)  # last: its presence means the run is complete
    ref.log = log.read_text()
    ref.summaries = harness.last_json(done.read_text())
    harness.assert_balanced(ref.summaries)
    ref.tables = harness.snapshot(spark, wh)
    ref.members = harness.shard_members(out)
    return ref


def copy_warehouse(src: Path, dst: Path, tables: tuple[str, ...] | None = None) -> Path:
    """The reference's tables (all, or `tables`) in a warehouse of a test's own (not its
    catalog/metastore): later stages start from there without rerunning earlier ones."""
    db = f"{harness.DB}.db"
    if tables is None:
        shutil.copytree(src / db, dst / db)
    for t in tables or ():
        shutil.copytree(src / db / t, dst / db / t)
    return dst


@pytest.fixture
def check_tables(spark: Any) -> Callable[[Path], None]:
    """`curator check`'s invariants, in process (no extra JVM): all must hold."""
    from spark_jobs import check
    from spark_jobs.config import load_config

    def run(warehouse: Path) -> None:
        cfg = load_config(warehouse=str(warehouse))
        broken = [i for i in check.invariants(spark, cfg) if i.violations]
        assert not broken, f"curator check: {broken}"

    return run
