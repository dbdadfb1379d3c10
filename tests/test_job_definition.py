"""The scheduled job definition (conf/jobs/curation.json) checked against the code. No Spark."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spark_jobs import pipeline
from spark_jobs.cli import app
from spark_jobs.config import ConfigError, load_config
from spark_jobs.session import read_profile

ROOT = Path(__file__).resolve().parents[1]
JOB_FILE = ROOT / "conf" / "jobs" / "curation.json"
# Keys of the GPU profile the job cluster must carry (RAPIDS, GPU resources, Arrow batches).
RAPIDS_KEY = re.compile(
    r"^(spark\.plugins|spark\.rapids\..*|spark\.(executor|task)\.resource\.gpu\.amount"
    r"|spark\.sql\.execution\.arrow\..*)$"
)


@pytest.fixture(scope="module")
def job() -> dict:
    return json.loads(JOB_FILE.read_text(encoding="utf-8"))


def test_task_graph_is_the_pipeline_order(job: dict) -> None:
    order = [pipeline.task_stage(t) for t in pipeline.task_order(job)]
    assert tuple(order) == pipeline.STAGES
    assert [t["task_key"] for t in pipeline.task_order(job)] == list(pipeline.STAGES)
    # the edges are exactly the chain of STAGES: each stage depends on the one before it
    by_key = {t["task_key"]: t for t in job["tasks"]}
    for prev, stage in zip(pipeline.STAGES, pipeline.STAGES[1:], strict=False):
        assert [d["task_key"] for d in by_key[stage]["depends_on"]] == [prev]
    assert "depends_on" not in by_key[pipeline.STAGES[0]]


def test_every_file_exists_and_every_parameter_list_parses(job: dict) -> None:
    for task in job["tasks"]:
        spt = task["spark_python_task"]
        assert (ROOT / spt["python_file"]).is_file(), spt["python_file"]
        stage = pipeline.task_stage(task)
        params = pipeline.parse_task_params(stage, spt["parameters"], app)
        assert params["config"] is not None, f"{stage}: every task names its --config"
        config = ROOT / params["config"]
        assert config.is_file(), config
        load_config(config, list(params.get("set_") or []), params.get("warehouse"))
        assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}
    export = next(t for t in job["tasks"] if t["task_key"] == "export")
    assert "--output" in export["spark_python_task"]["parameters"]


def test_gpu_cluster_carries_the_rapids_settings(job: dict) -> None:
    (cluster,) = job["job_clusters"]
    new = cluster["new_cluster"]
    assert new["spark_version"] and new["num_workers"] >= 1 and new["node_type_id"]
    assert "gpu" in new["spark_version"]
    profile = {k: v for k, v in read_profile("gpu-cluster").items() if RAPIDS_KEY.match(k)}
    assert "spark.plugins" in profile and len(profile) >= 6
    conf = new["spark_conf"]
    assert {k: v for k, v in conf.items() if RAPIDS_KEY.match(k)} == profile
    assert conf["spark.plugins"] == "com.nvidia.spark.SQLPlugin"
    assert new.get("init_scripts") or any(t.get("libraries") for t in job["tasks"])
    assert job["max_concurrent_runs"] == 1


_QUARTZ_FIELDS = (
    (0, 59),  # seconds
    (0, 59),  # minutes
    (0, 23),  # hours
    (1, 31),  # day of month
    (1, 12),  # month
    (1, 7),  # day of week
    (1970, 2199),  # year (optional)
)
_NAMES = {
    **{m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
    **{d: i + 1 for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}


def quartz_ok(expr: str) -> bool:
    """A 6/7-field quartz cron; `?` in exactly one of day-of-month and day-of-week."""
    fields = expr.split()
    if len(fields) not in (6, 7):
        return False
    if (fields[3] == "?") == (fields[5] == "?"):
        return False
    for i, f in enumerate(fields):
        lo, hi = _QUARTZ_FIELDS[i]
        for part in f.split(","):
            if part in ("*", "?") or (i in (3, 5) and part in ("L", "LW")):
                continue
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                return False
            for v in base.split("-") if base != "*" else []:
                if i == 5:  # 6#3 = third Friday, 6L = last Friday
                    v = v.split("#")[0].removesuffix("L")
                n = _NAMES.get(v.upper()) if not v.isdigit() else int(v)
                if n is None or not lo <= n <= hi:
                    return False
    return True


def test_schedule_is_a_valid_quartz_cron(job: dict) -> None:
    sched = job["schedule"]
    assert quartz_ok(sched["quartz_cron_expression"]), sched
    assert sched["timezone_id"] and sched["pause_status"] in ("PAUSED", "UNPAUSED")
    assert quartz_ok("0 30 1 ? * MON-FRI") and quartz_ok("0 0/15 * * * ? 2030")
    assert not quartz_ok("0 2 * * *") and not quartz_ok("0 0 25 * * ?")


def test_task_order_sorts_by_depends_on_and_rejects_cycles() -> None:
    job = {
        "tasks": [
            {"task_key": "c", "depends_on": [{"task_key": "b"}]},
            {"task_key": "a"},
            {"task_key": "b", "depends_on": [{"task_key": "a"}]},
        ]
    }
    assert [t["task_key"] for t in pipeline.task_order(job)] == ["a", "b", "c"]
    job["tasks"][1]["depends_on"] = [{"task_key": "c"}]
    with pytest.raises(ConfigError, match="cycle"):
        pipeline.task_order(job)
    with pytest.raises(ConfigError, match="unknown task"):
        pipeline.task_order({"tasks": [{"task_key": "a", "depends_on": [{"task_key": "z"}]}]})


def test_stage_selection() -> None:
    assert pipeline.select_stages() == list(pipeline.STAGES)
    assert pipeline.select_stages("export,ingest") == ["ingest", "export"]
    assert pipeline.select_stages(from_stage="dedup") == ["dedup", "filter", "export"]
    assert pipeline.select_stages(from_stage="embed", to_stage="classify") == ["embed", "classify"]
    for bad in (
        {"stages": "ingest,nope"},
        {"from_stage": "export", "to_stage": "ingest"},
        {"stages": "ingest", "to_stage": "embed"},
    ):
        with pytest.raises(ConfigError):
            pipeline.select_stages(**bad)


def test_bad_task_parameters_are_messages() -> None:
    with pytest.raises(ConfigError, match="no-such-flag"):
        pipeline.parse_task_params("ingest", ["--no-such-flag"], app)
