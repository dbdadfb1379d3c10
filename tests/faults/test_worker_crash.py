"""A Python worker dies (os._exit) inside the embed UDF: Spark retries the task, and the
`scores` table ends up exactly as in an uninterrupted run (every image once, all scored).

Local mode retries a failed task only with `local[N,M]` (M attempts); plain `local[N]` fails
the job on the first task failure, so this test runs `local[2,4]`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.faults import harness
from tests.faults.conftest import Reference, copy_warehouse

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)

RETRYING = (
    "spark.conf={spark.master: 'local[2,4]', spark.sql.shuffle.partitions: 2, "
    "spark.default.parallelism: 2}"
)


def test_worker_killed_mid_embed_is_retried_without_duplicates(
    spark: Any, reference: Reference, check_tables: Any, tmp_path: Path
) -> None:
    wh, marker = tmp_path / "wh", tmp_path / "crash-marker"
    copy_warehouse(reference.warehouse, wh, ("images", "quarantine", "shards"))  # as ingested
    proc = harness.curator(
        "embed",
        "--warehouse",
        str(wh),
        *harness.set_args(RETRYING, "embed.embedder_class=tests.faults.crashy:CrashOnceEmbedder"),
        "--json",
        extra_env={"CURATOR_CRASH_MARKER": str(marker)},
    )
    embed = harness.last_json(proc.stdout)
    harness.assert_balanced(embed)

    # the worker really died once, in an embed task, and that partition ran again
    crashed = re.search(r"partition (\d+)", marker.read_text())
    assert crashed, marker.read_text()
    calls = Path(f"{marker}.calls").read_text().splitlines()
    retried = [c for c in calls if c.startswith(f"partition {crashed[1]} attempt ")]
    assert retried and all(not c.endswith(" attempt 0") for c in retried), calls

    # every image scored exactly once, with the same values as the uninterrupted run
    got = harness.snapshot(spark, wh)
    assert embed["rows_written"] == len(got["images"]) == len(reference.tables["images"])
    assert embed["quarantined"] == 0
    harness.assert_same_tables(
        {k: got[k] for k in ("images", "scores", "scores.columns")},
        {k: reference.tables[k] for k in ("images", "scores", "scores.columns")},
    )
    check_tables(wh)
