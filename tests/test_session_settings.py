"""Which Spark settings win: on a laptop the profile; on a running cluster (spark-submit,
Databricks) what the cluster was started with, the profile only filling what it left unset;
the config's explicit `spark.conf` overrides always."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from spark_jobs.config import load_config
from spark_jobs.paths import jar_file, versions
from spark_jobs.session import (
    DIST_CLASSPATH,
    STARTUP_KEYS,
    driver_class_path,
    merge_settings,
    read_profile,
    spark_settings,
)

SHUFFLE = "spark.sql.shuffle.partitions"
ARROW = "spark.sql.execution.arrow.maxRecordsPerBatch"
BIN = Path(sys.executable).parent


def test_merge_on_a_laptop_and_on_a_cluster() -> None:
    profile = {SHUFFLE: "8", ARROW: "256", "spark.ui.enabled": "false"}
    overrides = {"spark.driver.memory": "8g"}
    assert merge_settings(profile, overrides, None) == {**profile, **overrides}
    cluster = {SHUFFLE: "200", ARROW: "512"}
    assert merge_settings(profile, overrides, cluster) == {
        "spark.ui.enabled": "false",  # unset on the cluster: the profile fills it
        "spark.driver.memory": "8g",
    }
    # an explicit override wins over the cluster too
    assert merge_settings(profile, {SHUFFLE: "64"}, cluster)[SHUFFLE] == "64"


def test_spark_settings_keep_the_cluster_values(make_cfg: Callable) -> None:
    cfg = make_cfg("spark.conf={spark.sql.adaptive.enabled: false}")
    local = read_profile("local")
    assert local[SHUFFLE] == "8" and local[ARROW] == "256"

    laptop = spark_settings(cfg, "t")
    assert laptop[SHUFFLE] == "8" and laptop["spark.sql.adaptive.enabled"] == "false"
    assert "spark.jars" not in laptop  # a new local JVM: driver_class_path (test below)
    # shipped to the executors: a cluster master, a master the config leaves to spark-defaults
    # (the gpu-cluster profile names none), or a JVM this process started before
    standalone = spark_settings(make_cfg("spark.conf={spark.master: 'spark://h:7077'}"), "t")
    gpu_cfg = load_config(sets=["spark.profile=gpu-cluster"], warehouse=str(cfg.warehouse))
    unnamed = spark_settings(gpu_cfg, "t")
    assert "spark.master" not in unnamed
    for settings in (standalone, unnamed, spark_settings(cfg, "t", new_jvm=False)):
        assert "delta-spark" in settings["spark.jars"]

    running = {SHUFFLE: "200", ARROW: "512", "spark.master": "spark://10.0.0.1:7077"}
    on_cluster = spark_settings(cfg, "t", running)
    assert SHUFFLE not in on_cluster and ARROW not in on_cluster  # the cluster's stay
    assert on_cluster["spark.sql.adaptive.enabled"] == "false"  # explicit override applies
    assert on_cluster["spark.sql.extensions"] == local["spark.sql.extensions"]  # unset: filled
    assert not set(STARTUP_KEYS) & set(on_cluster)  # master, jars, driver JVM: the cluster's
    assert on_cluster["spark.sql.warehouse.dir"] == str(cfg.warehouse_path)

    # a profile the job names explicitly still only fills what the cluster left unset
    gpu = make_cfg("spark.profile=gpu-cluster")
    named = spark_settings(gpu, "t", {ARROW: "1024", "spark.plugins": "x.Plugin"})
    assert ARROW not in named and "spark.plugins" not in named
    assert named["spark.rapids.sql.concurrentGpuTasks"] == "2"


def test_a_local_session_reads_its_jars_in_place(spark) -> None:  # type: ignore[no-untyped-def]
    """Delta's, the AWS SDK's and the RAPIDS jars are on the driver's class path after Spark's
    own (the SDK's old SLF4J API must not shadow Spark's) and nothing was copied: through
    spark.jars every local start copied their 1.5 GB into the session's temporary directory."""
    jvm = spark._jvm
    class_path = str(jvm.System.getProperty("java.class.path")).split(os.pathsep)
    names = [Path(entry).name for entry in class_path]
    vs = versions()
    coords = (*vs["jars"], *vs["object_store_jars"], vs["rapids_jar"])
    mine = [names.index(jar_file(c).name) for c in coords]
    assert min(mine) > max(i for i, n in enumerate(names) if n.startswith("spark-core_"))
    assert str(jvm.org.slf4j.LoggerFactory.getILoggerFactory().getClass().getName()).startswith(
        "org.apache.logging"
    )  # Spark's SLF4J binding to log4j2, not the no-op one an old API falls back to
    root = Path(str(jvm.org.apache.spark.SparkFiles.getRootDirectory()))
    assert not list(root.rglob("*.jar"))
    assert not spark.sparkContext.getConf().get("spark.jars")


def test_driver_class_path_is_set_only_while_the_jvm_starts(tmp_path: Path) -> None:
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    before = os.environ.get(DIST_CLASSPATH)
    try:
        os.environ[DIST_CLASSPATH] = "/opt/hadoop/*"  # a Hadoop-free Spark's: kept, ours after
        with driver_class_path(jars):
            assert os.environ[DIST_CLASSPATH] == os.pathsep.join(["/opt/hadoop/*", *map(str, jars)])
        assert os.environ[DIST_CLASSPATH] == "/opt/hadoop/*"
        del os.environ[DIST_CLASSPATH]
        with pytest.raises(RuntimeError), driver_class_path(jars):
            raise RuntimeError("the JVM did not start")
        assert DIST_CLASSPATH not in os.environ
    finally:
        os.environ.pop(DIST_CLASSPATH, None)
        if before is not None:
            os.environ[DIST_CLASSPATH] = before


def test_spark_submit_conf_wins_over_the_profile(tmp_path: Path) -> None:
    """`spark-submit --conf` values survive build_session; unset profile keys are filled."""
    script = tmp_path / "show_conf.py"
    script.write_text(
        "import json, sys\n"
        "from spark_jobs.config import load_config\n"
        "from spark_jobs.session import build_session\n"
        "cfg = load_config(sets=['spark.conf={spark.sql.adaptive.enabled: false}'],\n"
        "                  warehouse=sys.argv[1])\n"
        "spark = build_session(cfg, 'settings-check')\n"
        "keys = ['spark.sql.shuffle.partitions', 'spark.sql.execution.arrow.maxRecordsPerBatch',\n"
        "        'spark.databricks.delta.snapshotPartitions', 'spark.sql.adaptive.enabled',\n"
        "        'spark.sql.extensions']\n"
        "print(json.dumps({k: spark.conf.get(k, None) for k in keys}))\n"
        "spark.stop()\n"
    )
    jars = ",".join(str(jar_file(c)) for c in versions()["jars"])
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(
        [
            str(BIN / "spark-submit"),
            "--master",
            "local[1]",
            "--jars",
            jars,
            "--conf",
            f"{SHUFFLE}=200",
            "--conf",
            f"{ARROW}=512",
            "--conf",
            "spark.ui.enabled=false",
            str(script),
            str(tmp_path / "wh"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got[SHUFFLE] == "200" and got[ARROW] == "512"  # the cluster's, not local's 8 / 256
    assert got["spark.databricks.delta.snapshotPartitions"] == "2"  # unset: from the profile
    assert got["spark.sql.adaptive.enabled"] == "false"  # the config's explicit override
    assert "DeltaSparkSessionExtension" in got["spark.sql.extensions"]  # filled before start


def test_a_spark_env_that_replaces_the_class_path_is_a_message(tmp_path: Path) -> None:
    """A Hadoop-free Spark's spark-env.sh sets SPARK_DIST_CLASSPATH itself: Delta's jars are
    then missing from the local JVM, which Spark only warns about; curator says so and how to
    fix it, exit 2, before any table is touched."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-env.sh").write_text(f"export {DIST_CLASSPATH}={tmp_path / 'hadoop'}/*\n")
    env = {**os.environ, "SPARK_CONF_DIR": str(conf)}
    proc = subprocess.run(
        [str(BIN / "curator"), "sql", "--warehouse", str(tmp_path / "wh"), "SELECT 1"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Delta's jars are not on the class path" in proc.stderr
    assert f'export {DIST_CLASSPATH}="${DIST_CLASSPATH}:' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "wh" / "curator.db").exists()
