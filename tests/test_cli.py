"""The command line end to end, as users and scheduled jobs call it (subprocesses, real Spark)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import badshards

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def curator(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "curator"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def test_sample_shards_ingest_then_sql_json(tmp_path: Path) -> None:
    shards, wh = tmp_path / "shards", tmp_path / "wh"
    curator("sample-shards", "--out", str(shards), "--shards", "2", "--per-shard", "15")
    assert sorted(p.name for p in shards.glob("*.tar")) == ["00000.tar", "00001.tar"]
    out = curator("ingest", "--warehouse", str(wh), "--input", str(shards), "--json")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        summary["rows_written"] == 30 and summary["balanced"] and summary["tables"]["images"] == 30
    )
    q = curator(
        "sql",
        "--warehouse",
        str(wh),
        "--format",
        "json",
        "SELECT key, width, height FROM curator.images ORDER BY key LIMIT 3",
    )
    rows = json.loads(q.stdout)
    assert [r["key"] for r in rows] == ["000000000", "000000001", "000000002"]
    assert all(r["width"] > 0 and r["height"] > 0 for r in rows)
    # the catalog init file lets spark-sql see the same names
    assert "curator.images" in (wh / "catalog.sql").read_text()


def test_exit_codes_and_messages(tmp_path: Path) -> None:
    bad = curator("ingest", "--set", "embed.bath_size=3", check=False)
    assert bad.returncode == 2 and "did you mean `embed.batch_size`" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = curator(
        "ingest", "--warehouse", str(tmp_path / "w"), "--input", str(tmp_path / "no"), check=False
    )
    assert missing.returncode == 2 and "no shards found" in missing.stderr
    sql_err = curator(
        "sql", "--warehouse", str(tmp_path / "w"), "SELECT * FROM curator.nope", check=False
    )
    assert sql_err.returncode == 1 and "Traceback" not in sql_err.stderr
    # one line for the error: not also PySpark's JSON log record of it and its query context
    assert "curator sql failed: AnalysisException" in sql_err.stderr
    assert "QueryContextLogger" not in sql_err.stderr and '"level": "ERROR"' not in sql_err.stderr
    usage = curator("ingest", "--no-such-flag", check=False)
    assert usage.returncode == 2


def test_killed_mid_run_then_rerun_keeps_every_sample_once(spark, tmp_path: Path) -> None:
    shards, wh = tmp_path / "shards", tmp_path / "wh"
    for i in range(3):
        badshards.write_tar(shards / f"{i:05d}.tar", badshards.good_members(8, prefix=f"s{i}_"))
    args = [
        "ingest",
        "--warehouse",
        str(wh),
        "--input",
        str(shards),
        "--set",
        "ingest.shards_per_batch=1",
    ]
    proc = subprocess.Popen(
        [str(BIN / "curator"), *args],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    images_log = wh / "curator.db" / "images" / "_delta_log"
    deadline = time.time() + 300
    # kill right after the first images commit, before the batch is recorded in `shards`
    while time.time() < deadline and not (images_log / "00000000000000000001.json").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (images_log / "00000000000000000001.json").exists(), "the run never committed"
    out = curator(*args, "--json")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["tables"]["images"] == 24 and summary["balanced"]
    ids = [r.sample_id for r in spark.read.format("delta").load(str(images_log.parent)).collect()]
    assert len(ids) == len(set(ids)) == 24
