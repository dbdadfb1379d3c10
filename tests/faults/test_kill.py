"""SIGKILL the driver (JVM and Python workers with it) at a seeded random point of every job.

After a rerun the tables must equal those of an uninterrupted run: no sample lost, none twice.
CI runs one seed through a chain of `curator run` invocations, each killed inside the next
stage (so every job is killed once, mid-pipeline); the `slow` sweep kills each job run on its
own (`curator <job>`) for several seeds and checks every rerun's --json summary balances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spark_jobs.pipeline import STAGES
from tests.faults import harness
from tests.faults.conftest import Reference

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)

SLOW_SEEDS = [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 3)]


def _finish_and_compare(
    spark: Any, reference: Reference, wh: Path, out: Path, check_tables: Any
) -> None:
    check_tables(wh)
    harness.assert_same_tables(harness.snapshot(spark, wh), reference.tables)
    assert harness.shard_members(out) == reference.members
    assert not list(out.glob("*.tmp")), "a half-written shard was left behind"


@pytest.mark.parametrize("seed", [0, *SLOW_SEEDS])
def test_killed_in_each_stage_of_curator_run_then_rerun_matches(
    spark: Any, reference: Reference, check_tables: Any, tmp_path: Path, seed: int
) -> None:
    """Run k reruns stage k-1 (killed there last time) and is itself killed inside stage k."""
    wh, out, logs = tmp_path / "wh", tmp_path / "out", tmp_path / "logs"
    notes = []
    for k, stage in enumerate(STAGES):
        extra = ["--from-stage", STAGES[k - 1]] if k else []
        trigger = harness.pick_trigger(
            seed,
            stage,
            reference.commits(stage),
            reference.seconds(stage),
            after=f" {stage}: started",
        )
        run = harness.launch(*reference.run_args(wh, out, *extra), logs=logs)
        notes.append(f"{stage}: {harness.kill_at(run, trigger, wh)}")
        assert "Traceback" not in run.stderr_text()
    final = harness.curator(*reference.run_args(wh, out, "--from-stage", "export", "--json"))
    summaries = harness.last_json(final.stdout)
    harness.assert_balanced(summaries)
    print("\n".join(notes))
    _finish_and_compare(spark, reference, wh, out, check_tables)


def _job_args(reference: Reference, stage: str, wh: Path, out: Path) -> list[str]:
    args = [stage, "--warehouse", str(wh), *harness.set_args()]
    if stage == "ingest":
        args += ["--input", str(reference.shards)]
    if stage == "export":
        args += ["--output", str(out)]
    return args


@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_each_job_killed_on_its_own_then_rerun_matches(
    spark: Any, reference: Reference, check_tables: Any, tmp_path: Path, seed: int
) -> None:
    """`curator <job>` killed at a random point (JVM start-up included), then rerun with --json."""
    wh, out, logs = tmp_path / "wh", tmp_path / "out", tmp_path / "logs"
    notes = []
    for stage in STAGES:
        # Start-up (JVM, session, table registration) is part of the job: ~10 s here.
        trigger = harness.pick_trigger(
            seed, f"job-{stage}", reference.commits(stage), reference.seconds(stage) + 10, None
        )
        run = harness.launch(*_job_args(reference, stage, wh, out), logs=logs)
        notes.append(f"{stage}: {harness.kill_at(run, trigger, wh)}")
        rerun = harness.curator(*_job_args(reference, stage, wh, out), "--json")
        harness.assert_balanced(harness.last_json(rerun.stdout))
    print("\n".join(notes))
    _finish_and_compare(spark, reference, wh, out, check_tables)
