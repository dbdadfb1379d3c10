"""Credentials given as Spark settings never show up in anything a command prints or writes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from spark_jobs import report
from spark_jobs.config import load_config
from tests.faults import harness
from tests.faults.conftest import Reference

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)


def _files_text(root: Path) -> list[tuple[Path, str]]:
    """Every file under root that is text (catalog.sql, Delta commit logs, HTML, JSON)."""
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".sql", ".json", ".html", ".txt", ".crc", ".yaml", ""):
            out.append((p, p.read_text(errors="replace")))
    return out


def test_secrets_stay_out_of_output_summary_catalog_and_report(
    spark: Any, reference: Reference, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference `curator run` (every stage) ran with credentials; so does the report."""
    for job in ("ingest", "embed", "classify", "dedup", "filter", "export"):
        assert f" {job}: started" in reference.log  # every stage printed something
    harness.assert_no_secret("curator run's stdout and stderr", reference.log)
    report_dir = tmp_path / "report"
    cfg = load_config(
        sets=[*harness.SETS, *harness.SECRET_SETS], warehouse=str(reference.warehouse)
    )
    summary = report.run(spark, cfg, out=report_dir)
    summary.render()
    printed = capsys.readouterr()
    harness.assert_no_secret("the report's output", printed.out + printed.err)
    harness.assert_no_secret("the report's summary", json.dumps(summary.to_dict(), default=str))
    assert (report_dir / "index.html").is_file()
    assert (reference.warehouse / "catalog.sql").is_file()
    files = _files_text(report_dir) + _files_text(reference.warehouse)
    assert any(p.name == "catalog.sql" for p, _ in files)
    assert sum(p.parent.name == "_delta_log" for p, _ in files) >= 10
    for path, text in files:
        harness.assert_no_secret(str(path), text)


@pytest.mark.parametrize(
    "bad",
    [
        "embed.bath_size=3",  # an unknown key next to the secret
        f"spark.conf.spark.hadoop.fs.s3a.secret.key=[{harness.SECRET}]",  # wrong type: a list
        f"spark.conf.spark.hadoop.fs.s3a.secret.key={{{harness.SECRET}",  # not valid YAML
        # wrong type, as a map
        f"spark.conf={{spark.hadoop.fs.s3a.secret.key: [{harness.SECRET}]}}",
    ],
)
def test_config_errors_never_echo_a_secret(bad: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(harness.BIN / "curator"),
            "ingest",
            "--warehouse",
            str(tmp_path / "wh"),
            "--set",
            harness.SECRET_SETS[0],
            "--set",
            harness.SECRET_SETS[1],
            "--set",
            bad,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=harness.env(),
    )
    assert proc.returncode == 2, proc.stderr
    assert "configuration error" in proc.stderr and "Traceback" not in proc.stderr
    harness.assert_no_secret("a configuration error", proc.stdout + proc.stderr)
