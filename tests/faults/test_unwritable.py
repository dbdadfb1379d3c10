"""Export to a location that cannot be written: exit 1 with one clear line, tables untouched.

We run as root, so permission bits stop nothing. What does stop root: a path under a regular
file (ENOTDIR, works everywhere), a tmpfs mounted read-only (EROFS) and a tiny tmpfs that
fills up (ENOSPC). The mounts need CAP_SYS_ADMIN; those tests skip where `mount` is refused.
"""

from __future__ import annotations

import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spark_jobs import export
from spark_jobs.config import load_config
from spark_jobs.errors import failure_line
from tests.faults import harness
from tests.faults.conftest import Reference, copy_warehouse

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)


def _mount_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, f"curator-{uuid.uuid4().hex[:6]}", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: the first shard does not fit."""
    yield from _mount_tmpfs(tmp_path / "full", "size=64k,mode=0755")


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "ro", "ro,size=1m")


def _log_versions(wh: Path) -> dict[str, int]:
    db = wh / f"{harness.DB}.db"
    return {p.parent.name: len(list(p.glob("*.json"))) for p in db.glob("*/_delta_log")}


def _export_fails(wh: Path, output: Path) -> str:
    """Run `curator export` (with credentials set), expect exit 1; its stderr."""
    proc = harness.curator(
        "export",
        "--warehouse",
        str(wh),
        "--output",
        str(output),
        *harness.set_args(*harness.SECRET_SETS),
        ok=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("curator export failed: ")]
    assert len(failed) == 1, proc.stderr[-2000:]
    harness.assert_no_secret("a failed export's messages", proc.stdout + proc.stderr)
    return failed[0]


def test_export_under_a_regular_file_fails_cleanly(
    spark: Any, reference: Reference, tmp_path: Path
) -> None:
    wh = copy_warehouse(reference.warehouse, tmp_path / "wh")
    before = _log_versions(wh)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output's parent directory should be")
    line = _export_fails(wh, blocker / "curated")
    assert str(blocker) in line
    assert _log_versions(wh) == before
    got = harness.snapshot(spark, wh)
    assert got["exported"] == reference.tables["exported"]
    assert got["curated"] == reference.tables["curated"]


def test_export_to_a_full_disk_fails_cleanly_and_leaves_no_half_shard(
    spark: Any, reference: Reference, tmp_path: Path, full_dir: Path
) -> None:
    """In process (the command line's handling is the test above): the job's failure line
    carries the OS error from the executor."""
    wh = copy_warehouse(reference.warehouse, tmp_path / "wh")
    before = _log_versions(wh)
    cfg = load_config(sets=[*harness.SETS, *harness.SECRET_SETS], warehouse=str(wh))
    with pytest.raises(Exception) as failed:  # any error: the CLI prints failure_line of it
        export.run(spark, cfg, output=str(full_dir))
    line = failure_line(failed.value)
    assert "No space left on device" in line or "ENOSPC" in line, line
    harness.assert_no_secret("a failed export's message", line)
    assert _log_versions(wh) == before
    assert harness.snapshot(spark, wh)["exported"] == reference.tables["exported"]
    assert not (full_dir / export.MANIFEST).exists()
    for shard in full_dir.glob("*.tar"):  # a shard under its final name is a whole one
        with tarfile.open(shard) as tar:
            assert tar.getmembers()


def test_export_to_a_read_only_mount_raises_and_keeps_the_tables(
    spark: Any, reference: Reference, tmp_path: Path, readonly_dir: Path
) -> None:
    wh = copy_warehouse(reference.warehouse, tmp_path / "wh")
    before = _log_versions(wh)
    cfg = load_config(warehouse=str(wh))
    with pytest.raises(Exception, match="Read-only file system"):  # raised in the executors
        export.run(spark, cfg, output=str(readonly_dir))
    assert _log_versions(wh) == before
    assert list(readonly_dir.iterdir()) == []
