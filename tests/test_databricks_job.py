"""conf/jobs/curation.json as Databricks reads it (the official databricks-sdk) and as each
task's command line parses it. No Spark, no workspace: seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
from databricks.sdk.service.jobs import JobSettings

from spark_jobs import cli
from spark_jobs.config import load_config
from spark_jobs.paths import ROOT, conf_dir, packaged_conf, resolve_config_path

JOB_FILE = ROOT / "conf" / "jobs" / "curation.json"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return json.loads(JOB_FILE.read_text(encoding="utf-8"))


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Every key lost, added or changed between two JSON documents, by path."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{where}/{k}: lost" for k in before if k not in after]
        out += [f"{where}/{k}: added" for k in after if k not in before]
        for k in before.keys() & after.keys():
            out += differences(before[k], after[k], f"{where}/{k}")
        return out
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} items became {len(after)}"]
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True))
                for d in differences(b, a, f"{where}[{i}]")]  # fmt: skip
    return [] if before == after else [f"{where}: {before!r} became {after!r}"]


def test_sdk_round_trip_loses_no_key(job: dict[str, Any]) -> None:
    """JobSettings drops what it does not know: a lost key is one Databricks would ignore."""
    settings = JobSettings.from_dict(job)
    assert differences(job, settings.as_dict()) == []
    assert differences(job, JobSettings.from_dict(settings.as_dict()).as_dict()) == []
    # typed where it matters: the enums and nested objects were recognised, not passed through
    assert settings.tasks and all(t.spark_python_task for t in settings.tasks)
    assert settings.schedule is not None and settings.schedule.pause_status is not None
    assert settings.job_clusters and settings.job_clusters[0].new_cluster is not None


def test_dependencies_name_tasks_and_form_no_cycle(job: dict[str, Any]) -> None:
    keys = [t["task_key"] for t in job["tasks"]]
    assert len(keys) == len(set(keys)), "task keys must be unique"
    deps = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
    unknown = {k: [d for d in ds if d not in deps] for k, ds in deps.items()}
    assert not any(unknown.values()), unknown
    done: list[str] = []  # Kahn's sort: a cycle leaves tasks that never become ready
    while len(done) < len(deps):
        ready = [k for k in deps if k not in done and all(d in done for d in deps[k])]
        assert ready, f"depends_on cycle among {sorted(set(deps) - set(done))}"
        done += ready
    clusters = {c["job_cluster_key"] for c in job["job_clusters"]}
    assert all(t["job_cluster_key"] in clusters for t in job["tasks"])


def _module_of(python_file: str) -> str:
    return Path(python_file).with_suffix("").as_posix().replace("/", ".")


def test_every_python_file_exists(job: dict[str, Any]) -> None:
    """In the git checkout the task names (source GIT), and in the installed package."""
    for task in job["tasks"]:
        python_file = task["spark_python_task"]["python_file"]
        assert (ROOT / python_file).is_file(), python_file
        spec = importlib.util.find_spec(_module_of(python_file))
        assert spec is not None and spec.origin and Path(spec.origin).is_file(), python_file


def _command_name(python_file: str) -> str:
    """The `curator` command a job script runs: `cli.main(<stem>)`, pipeline.py runs `run`."""
    stem = Path(python_file).stem
    return "run" if stem == "pipeline" else stem


def test_every_task_parameter_list_is_accepted_by_its_command(
    job: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed by the click command of `curator <job>` (what `spark-submit <python_file>` runs),
    and its --config found without a checkout's conf/ (cwd elsewhere: the packaged copy)."""
    group = typer.main.get_command(cli.app)
    commands = group.commands  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)  # no conf/ here, as on a cluster driver with the wheel
    for task in job["tasks"]:
        spt = task["spark_python_task"]
        name = _command_name(spt["python_file"])
        assert name in commands, f"{task['task_key']}: no `curator {name}`"
        params = [str(p) for p in spt.get("parameters", [])]
        with commands[name].make_context(name, params) as ctx:  # raises on a bad parameter
            parsed = dict(ctx.params)
        config = parsed.get("config")
        assert config is not None, f"{task['task_key']}: every task names its --config"
        resolved = resolve_config_path(config)
        assert resolved.is_file(), f"{task['task_key']}: --config {config} not found"
        assert resolved.is_relative_to(conf_dir()), resolved
        load_config(resolved, list(parsed.get("set_") or []), parsed.get("warehouse"))


def test_a_bad_parameter_is_refused() -> None:
    """The check above can fail: click refuses what `curator ingest` does not take."""
    command = typer.main.get_command(cli.app).commands["ingest"]  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="no-such-flag"):
        command.make_context("ingest", ["--no-such-flag"])


def test_resolve_config_path_prefers_a_local_file(tmp_path: Path) -> None:
    local = tmp_path / "conf" / "curation.yaml"
    local.parent.mkdir()
    local.write_text("database: here\n")
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        assert resolve_config_path("conf/curation.yaml") == Path("conf/curation.yaml")
        assert resolve_config_path("conf/demo.yaml") == conf_dir() / "demo.yaml"
        assert resolve_config_path("curation.yaml") == conf_dir() / "curation.yaml"
        assert resolve_config_path("nope.yaml") == Path("nope.yaml")  # left to load_config
        assert resolve_config_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"
    finally:
        os.chdir(cwd)


def test_job_libraries_name_the_wheel_cluster_bundle_builds(job: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wheel = f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"
    for task in job["tasks"]:
        names = [Path(lib["whl"]).name for lib in task.get("libraries", []) if "whl" in lib]
        assert names == [wheel], (task["task_key"], names)
    # and the wheel carries the job file itself, next to the profiles
    assert (packaged_conf() / "jobs" / "curation.json").is_file()
