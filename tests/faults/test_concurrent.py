"""Two runs of the same job at once on one warehouse: each commits or fails cleanly (exit 1,
a one-line message, no traceback), and after a rerun the tables are exactly right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults import harness
from tests.faults.conftest import Reference, copy_warehouse

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)

INGEST_TABLES = ("images", "quarantine", "shards")


def _both(args: list[str], logs: Path) -> list[tuple[int, str]]:
    """Start two identical commands at once; (exit code, stderr) of each."""
    runs = [harness.launch(*args, logs=logs) for _ in range(2)]
    codes = [r.wait() for r in runs]
    return [(c, r.stderr_text()) for c, r in zip(codes, runs, strict=True)]


def _assert_clean(results: list[tuple[int, str]], job: str) -> None:
    for code, err in results:
        assert code in (0, 1), err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        if code == 1:
            failed = [ln for ln in err.splitlines() if ln.startswith(f"curator {job} failed: ")]
            assert len(failed) == 1, err[-2000:]


def _subset(tables: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in tables.items() if k.split(".")[0] in names}


def test_two_ingests_at_once_then_rerun_gives_every_sample_once(
    spark: Any, reference: Reference, check_tables: Any, tmp_path: Path
) -> None:
    wh = tmp_path / "wh"
    args = [
        "ingest",
        "--warehouse",
        str(wh),
        "--input",
        str(reference.shards),
        *harness.set_args(),
    ]
    results = _both(args, tmp_path / "logs")
    _assert_clean(results, "ingest")
    print("exit codes of the two ingests:", [c for c, _ in results])
    rerun = harness.curator(*args, "--json")
    harness.assert_balanced(harness.last_json(rerun.stdout))
    check_tables(wh)
    harness.assert_same_tables(
        _subset(harness.snapshot(spark, wh), INGEST_TABLES),
        _subset(reference.tables, INGEST_TABLES),
    )


@pytest.mark.slow
def test_two_filters_at_once_leave_the_curated_table_right(
    spark: Any, reference: Reference, check_tables: Any, tmp_path: Path
) -> None:
    wh = tmp_path / "wh"
    copy_warehouse(reference.warehouse, wh)
    args = ["filter", "--warehouse", str(wh), *harness.set_args()]
    results = _both(args, tmp_path / "logs")
    _assert_clean(results, "filter")
    if any(code for code, _ in results):
        harness.assert_balanced(harness.last_json(harness.curator(*args, "--json").stdout))
    check_tables(wh)
    harness.assert_same_tables(
        _subset(harness.snapshot(spark, wh), ("curated",)),
        _subset(reference.tables, ("curated",)),
    )
