"""SparkSession factory: a profile from conf/spark/, Delta, quiet logs, tables by name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from spark_jobs.config import Config, ConfigError
from spark_jobs.paths import conf_dir, jar_file, versions
from spark_jobs.redact import is_secret_key, remember_secrets, secret_values


def read_profile(profile: str) -> dict[str, str]:
    """Parse a spark-defaults style file: `key  value` lines, `#` comments."""
    path = Path(profile) if profile.endswith(".conf") else conf_dir() / "spark" / f"{profile}.conf"
    if not path.is_file():
        available = sorted(p.stem for p in (conf_dir() / "spark").glob("*.conf"))
        raise ConfigError(
            f"config key `spark.profile`: no profile {profile!r} ({path} does not exist); "
            f"use one of {available} or a path to a .conf file"
        )
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def required_jars(cfg: Config) -> list[Path]:
    """Delta's jars, plus the RAPIDS jar for the GPU profile or explain-only reports."""
    vs = versions()
    coords = list(vs["jars"])
    if cfg.spark.with_rapids_jar or "gpu" in cfg.spark.profile:
        coords.append(vs["rapids_jar"])
    jars = [jar_file(c) for c in coords]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        raise ConfigError(
            f"JVM jars not found: {', '.join(missing)}. Run `make jars` once (it fetches them from "
            "Maven Central into jars/), or set CURATOR_JARS_DIR to a folder that has them"
        )
    return jars


def spark_settings(cfg: Config, app_name: str) -> dict[str, str]:
    """Everything the session is built with: profile, overrides, jars, warehouse, logging."""
    settings = read_profile(cfg.spark.profile)
    settings.update(
        {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.spark.conf.items()}
    )
    settings["spark.app.name"] = app_name
    jars = [str(j) for j in required_jars(cfg)]
    if settings.get("spark.jars"):
        jars.append(settings["spark.jars"])
    settings["spark.jars"] = ",".join(jars)
    warehouse = cfg.warehouse_path
    settings["spark.sql.warehouse.dir"] = str(warehouse)
    log4j = conf_dir() / "spark" / "log4j2.properties"
    java_opts = settings.get("spark.driver.extraJavaOptions", "")
    java_opts = java_opts.replace("/tmp/curator-derby", str(warehouse / ".derby"))
    settings["spark.driver.extraJavaOptions"] = (
        f"{java_opts} -Dlog4j2.configurationFile=file:{log4j}".strip()
    )
    # Credentials must reach Spark but no message: later redact(text) masks these values.
    remember_secrets(secret_values(settings))
    remember_secrets(v for k, v in os.environ.items() if is_secret_key(k))
    return settings


def build_session(cfg: Config, app_name: str = "curator") -> SparkSession:
    """The session for one job; reuses spark-submit's JVM when launched by spark-submit."""
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    settings = spark_settings(cfg, app_name)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    cfg.warehouse_path.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    if under_submit:
        # spark-submit already fixed master, jars and static settings; keep them.
        for key in (
            "spark.master",
            "spark.jars",
            "spark.driver.extraJavaOptions",
            "spark.driver.memory",
        ):
            settings.pop(key, None)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if "DeltaSparkSessionExtension" not in (spark.conf.get("spark.sql.extensions", "") or ""):
        raise ConfigError(
            "spark.sql.extensions lacks io.delta.sql.DeltaSparkSessionExtension; pass "
            "--properties-file conf/spark/<profile>.conf to spark-submit"
        )
    from spark_jobs.tables import register_tables

    register_tables(spark, cfg)
    return spark
