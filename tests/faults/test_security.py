"""Credentials given as Spark settings never show up in anything a command prints or writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.faults import harness
from tests.faults.conftest import Reference

# Subprocess Spark runs: minutes each on a busy 2-core machine (the default is 900 s).
pytestmark = pytest.mark.timeout(3600)

ACCESS = "AKIAFAKEACCESSKEY7Q2Z"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
SECRET_SETS = (
    f"spark.conf.spark.hadoop.fs.s3a.access.key={ACCESS}",
    f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}",
)


def assert_no_secret(where: str, text: str) -> None:
    for value in (ACCESS, SECRET, SECRET.split("/")[1]):
        assert value not in text, f"a credential appears in {where}"


def _files_text(root: Path) -> list[tuple[Path, str]]:
    """Every file under root that is text (catalog.sql, Delta commit logs, HTML, JSON)."""
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".sql", ".json", ".html", ".txt", ".crc", ".yaml", ""):
            out.append((p, p.read_text(errors="replace")))
    return out


def test_secrets_stay_out_of_output_summary_catalog_and_report(
    reference: Reference, tmp_path: Path
) -> None:
    wh = reference.warehouse
    sets = harness.set_args(*SECRET_SETS)
    ingest = harness.curator(
        "ingest", "--warehouse", str(wh), "--input", str(reference.shards), *sets, "--json"
    )
    summary = harness.last_json(ingest.stdout)
    assert summary["job"] == "ingest" and summary["balanced"]
    report_dir = tmp_path / "report"
    report = harness.curator(
        "report", "--warehouse", str(wh), "--out", str(report_dir), *sets, "--json"
    )
    assert (report_dir / "index.html").is_file()
    for name, proc in (("ingest", ingest), ("report", report)):
        assert_no_secret(f"curator {name} stdout", proc.stdout)
        assert_no_secret(f"curator {name} stderr", proc.stderr)
    assert (wh / "catalog.sql").is_file()
    files = _files_text(report_dir) + _files_text(wh)
    assert any(p.name == "catalog.sql" for p, _ in files)
    for path, text in files:
        assert_no_secret(str(path), text)


@pytest.mark.parametrize(
    "bad",
    [
        "embed.bath_size=3",  # an unknown key next to the secret
        f"spark.conf.spark.hadoop.fs.s3a.secret.key=[{SECRET}]",  # wrong type: a list
        f"spark.conf.spark.hadoop.fs.s3a.secret.key={{{SECRET}",  # not valid YAML
        f"spark.conf={{spark.hadoop.fs.s3a.secret.key: [{SECRET}]}}",  # wrong type, as a map
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
            SECRET_SETS[0],
            "--set",
            SECRET_SETS[1],
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
    assert_no_secret("a configuration error", proc.stdout + proc.stderr)
