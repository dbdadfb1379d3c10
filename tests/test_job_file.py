"""spark_jobs.job_file without Spark: reading a Jobs API file into steps, and its messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_jobs import job_file
from spark_jobs.cli import app
from spark_jobs.config import ConfigError

STAGES = ("ingest", "embed", "classify", "dedup", "filter", "export")


def _task(key: str, stage: str, params: list[str], after: str | None = None) -> dict:
    task: dict = {
        "task_key": key,
        "spark_python_task": {"python_file": f"jobsrc/{stage}.py", "parameters": params},
    }
    if after:
        task["depends_on"] = [{"task_key": after}]
    return task


def test_load_job_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        job_file.load_job(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        job_file.load_job(bad)
    for doc in ([], {"tasks": []}, {"name": "x"}):
        bad.write_text(json.dumps(doc), encoding="utf-8")
        with pytest.raises(ConfigError, match="`tasks` list"):
            job_file.load_job(bad)


def test_task_keys_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="unique `task_key`"):
        job_file.task_order({"tasks": [{"task_key": "a"}, {"task_key": "a"}]})
    with pytest.raises(ConfigError, match="unique `task_key`"):
        job_file.task_order({"tasks": [{"depends_on": []}]})


def test_task_stage_is_the_python_file_stem() -> None:
    assert job_file.task_stage(_task("x", "embed", []), STAGES) == "embed"
    with pytest.raises(ConfigError, match="report.py.*ingest, embed"):
        job_file.task_stage(_task("x", "report", []), STAGES)
    with pytest.raises(ConfigError, match="not one of"):
        job_file.task_stage({"task_key": "x"}, STAGES)


def test_project_root_is_found_upward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobsrc").mkdir()
    (tmp_path / "jobsrc" / "ingest.py").write_text("", encoding="utf-8")
    jobs = tmp_path / "conf" / "jobs"
    jobs.mkdir(parents=True)
    job = {"tasks": [_task("ingest", "ingest", [])]}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert job_file.project_root(jobs / "j.json", job) == tmp_path
    job["tasks"][0]["spark_python_task"]["python_file"] = "nowhere/ingest.py"
    assert job_file.project_root(jobs / "j.json", job) == elsewhere  # not found: the cwd


def test_parse_task_params_uses_the_stage_command() -> None:
    params = job_file.parse_task_params(
        "ingest", ["--config", "conf/x.yaml", "--set", "a=1", "--input", "s/*.tar"], app
    )
    assert str(params["config"]) == "conf/x.yaml"
    assert params["set_"] == ["a=1"] and params["inputs"] == ["s/*.tar"]
    with pytest.raises(ConfigError, match="not a command"):
        job_file.parse_task_params("no-such-stage", [], app)
    with pytest.raises(ConfigError, match="no-such-flag"):
        job_file.parse_task_params("embed", ["--no-such-flag"], app)


def test_job_steps_in_dependency_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks sorted by depends_on, configs relative to the project root, the stage's own
    options as run() keywords, and the outer --set/--warehouse winning over the tasks'."""
    (tmp_path / "jobsrc").mkdir()
    for stage in ("ingest", "embed", "export"):
        (tmp_path / "jobsrc" / f"{stage}.py").write_text("", encoding="utf-8")
    (tmp_path / "pipe.yaml").write_text("database: fromfile\n", encoding="utf-8")
    job = {
        "tasks": [
            _task("out", "export", ["--config", "pipe.yaml", "--output", "/o"], after="emb"),
            _task("in", "ingest", ["--config", "pipe.yaml", "--input", "s", "--warehouse", "w"]),
            _task("emb", "embed", ["--config", "pipe.yaml", "--retry-errors"], after="in"),
        ]
    }
    path = tmp_path / "conf" / "job.json"
    path.parent.mkdir()
    path.write_text(json.dumps(job), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "conf")  # the config is found from the project root

    steps = job_file.job_steps(path, STAGES, app=app)
    assert [(s.stage, s.label) for s in steps] == [
        ("ingest", "in (ingest)"),
        ("embed", "emb (embed)"),
        ("export", "out (export)"),
    ]
    assert steps[0].kwargs == {"inputs": ["s"]}
    assert steps[1].kwargs == {"retry_errors": True}
    assert steps[2].kwargs == {"output": "/o"}
    assert all(s.cfg.database == "fromfile" for s in steps)
    assert steps[0].cfg.warehouse_path.name == "w"

    outer = job_file.job_steps(
        path, STAGES, ["database=outer"], warehouse=str(tmp_path / "wh"), app=app
    )
    assert {s.cfg.database for s in outer} == {"outer"}
    assert {s.cfg.warehouse_path for s in outer} == {tmp_path / "wh"}

    with pytest.raises(ConfigError, match="not one of"):
        job_file.job_steps(path, ("ingest", "embed"), app=app)  # export is not a stage here
