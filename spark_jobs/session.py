"""SparkSession factory: a profile from conf/spark/, Delta, quiet logs, tables by name.

On a laptop the profile sets up Spark; on a cluster (spark-submit, Databricks) the cluster's own
settings win and the profile only fills the keys it leaves unset.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
        key, _, value = line.replace("\t", " ").partition(" ")
        out[key] = value.strip()
    return out


def required_jars(cfg: Config) -> list[Path]:
    """Delta's jars, plus hadoop-aws and its AWS SDK for a warehouse on object storage, and
    the RAPIDS jar for the GPU profile or explain-only reports."""
    vs = versions()
    coords = list(vs["jars"])
    if cfg.spark.with_object_store_jars or str(cfg.warehouse).startswith(("s3://", "s3a://")):
        coords.extend(vs["object_store_jars"])
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


S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# The standard AWS variables the Python workers need too (s3fs reads them there).
AWS_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def s3a_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """`spark.hadoop.fs.s3a.*` from the standard AWS environment, and `s3://` onto S3A.

    Keys/secret/session token, the endpoint (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`;
    then path-style access, and no TLS for an `http://` endpoint) and the region (`AWS_REGION`,
    else `AWS_DEFAULT_REGION`). What is unset is left to S3A's own credential chain (instance
    roles, profiles). `s3://` URIs always use S3AFileSystem.
    """
    h = "spark.hadoop."
    out = {
        f"{h}fs.s3.impl": S3A,
        f"{h}fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        out[f"{h}fs.s3a.access.key"] = key
        out[f"{h}fs.s3a.secret.key"] = secret
        token = environ.get("AWS_SESSION_TOKEN")
        if token:
            out[f"{h}fs.s3a.session.token"] = token
            out[f"{h}fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            )
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        out[f"{h}fs.s3a.endpoint"] = endpoint
        out[f"{h}fs.s3a.path.style.access"] = "true"
        if endpoint.lower().startswith("http://"):
            out[f"{h}fs.s3a.connection.ssl.enabled"] = "false"
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        out[f"{h}fs.s3a.endpoint.region"] = region
    return out


def configure_object_storage(
    spark: SparkSession,
    environ: Mapping[str, str] | None = None,
    keep: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Apply s3a_settings to a running session; return the Hadoop keys set.

    Spark reads `spark.hadoop.*` only when its context starts, so the keys go straight into
    the context's Hadoop configuration (every later job ships it to the executors) and the
    session's copy of it; call this before the first s3a:// access (Hadoop caches a
    filesystem per bucket with the settings it was created with). The AWS
    variables go into the Python workers' environment (for s3fs there). Keys in `keep` (what
    a cluster was started with, or explicit `spark.conf` overrides) are left alone. Secret
    values are remembered for redaction.
    """
    env = os.environ if environ is None else environ
    keep = keep or {}
    # the context's configuration, and the session's copy of it (made when the session's
    # shared state started: the catalog creates database directories with that one)
    confs = [
        spark.sparkContext._jsc.hadoopConfiguration(),
        spark._jsparkSession.sharedState().hadoopConf(),
    ]
    done: dict[str, str] = {}
    for key, value in s3a_settings(env).items():
        if key in keep:
            continue
        for conf in confs:
            conf.set(key.removeprefix("spark.hadoop."), value)
        done[key] = value
    workers = spark.sparkContext.environment
    for name in AWS_ENV_KEYS:
        if env.get(name) and f"spark.executorEnv.{name}" not in keep:
            workers[name] = env[name]
    remember_secrets(secret_values(done))
    remember_secrets(v for k, v in env.items() if is_secret_key(k))
    return done


# Settings fixed when the driver JVM starts: spark-submit (or the cluster) has set them already.
STARTUP_KEYS = (
    "spark.master",
    "spark.jars",
    "spark.driver.extraJavaOptions",
    "spark.driver.memory",
)


def running_conf() -> dict[str, str] | None:
    """What the running Spark was started with; None when this process starts its own Spark.

    A SparkContext that already exists (Databricks, a notebook, an earlier session of this
    process) gives its SparkConf and the session's SQL settings; under spark-submit
    (`PYSPARK_GATEWAY_PORT` set) the JVM's SparkConf holds spark-submit's `--conf`,
    `--properties-file` and the cluster's spark-defaults.conf.
    """
    from pyspark import SparkConf, SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        conf = dict(sc.getConf().getAll())
        session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
        if session is not None:
            conf.update(session.conf.getAll)
        return conf
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        SparkContext._ensure_initialized()  # connects to spark-submit's JVM, starts nothing
        return dict(SparkConf().getAll())
    return None


def merge_settings(
    profile: Mapping[str, str], overrides: Mapping[str, str], running: Mapping[str, str] | None
) -> dict[str, str]:
    """The profile, then the config's explicit `spark.conf` overrides.

    On a running cluster (`running` given) the profile only fills keys the cluster left unset:
    what the cluster was started with wins over the profile, the explicit overrides win over
    both.
    """
    if running is None:
        return {**profile, **overrides}
    return {**{k: v for k, v in profile.items() if k not in running}, **overrides}


def cfg_overrides(cfg: Config) -> dict[str, str]:
    """The config's explicit `spark.conf` settings, as strings."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.spark.conf.items()}


# Read by Spark's launcher (bin/spark-class): entries appended to the JVM's class path.
DIST_CLASSPATH = "SPARK_DIST_CLASSPATH"


def jars_in_place(settings: Mapping[str, str], new_jvm: bool) -> bool:
    """Whether the session's jars go on the class path of the JVM it starts (driver_class_path)
    rather than in `spark.jars`: only when a new JVM starts a master named `local...`. An unset
    master (spark-defaults, `MASTER`) may be a cluster, whose executors need `spark.jars`; a
    JVM this process started before keeps its class path, so a later session's jars must come
    through `spark.jars`."""
    return new_jvm and settings.get("spark.master", "").startswith("local")


def launches_jvm() -> bool:
    """Whether starting a session now launches a JVM: this process has no gateway yet (under
    spark-submit, running_conf has connected to spark-submit's)."""
    from pyspark import SparkContext

    return SparkContext._gateway is None


@contextmanager
def driver_class_path(jars: list[Path]) -> Iterator[None]:
    """While a local session starts, `jars` join the driver JVM's class path, read in place.

    Through `spark.jars` a local executor copies every jar into a new temporary directory at
    each start (1.5 GB with the AWS SDK and RAPIDS jars). Spark's launcher appends
    `$SPARK_DIST_CLASSPATH` after Spark's own jars, so theirs win any clash (the AWS SDK
    bundle carries unshaded copies of libraries Spark ships).
    """
    old = os.environ.get(DIST_CLASSPATH)
    if jars:
        os.environ[DIST_CLASSPATH] = os.pathsep.join([*filter(None, [old]), *map(str, jars)])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DIST_CLASSPATH, None)
        else:
            os.environ[DIST_CLASSPATH] = old


def spark_settings(
    cfg: Config, app_name: str, running: Mapping[str, str] | None = None, new_jvm: bool = True
) -> dict[str, str]:
    """Everything the session is built with: profile, overrides, jars, warehouse, logging.

    `running` is the conf of a Spark that is already up (see running_conf): then only the
    profile keys it lacks are set, and the startup settings (master, jars, driver JVM options)
    are left to it. `new_jvm`: the session starts a JVM (see jars_in_place).
    """
    overrides = cfg_overrides(cfg)
    settings = merge_settings(read_profile(cfg.spark.profile), overrides, running)
    for key, value in s3a_settings(os.environ).items():  # below the cluster's and overrides
        if key not in (running or {}) and key not in overrides:
            settings.setdefault(key, value)
    settings["spark.app.name"] = app_name
    warehouse = cfg.warehouse_path
    settings["spark.sql.warehouse.dir"] = str(warehouse)
    if running is None:
        if not jars_in_place(settings, new_jvm):  # else: driver_class_path
            jars = [str(j) for j in required_jars(cfg)]
            settings["spark.jars"] = ",".join([*jars, *filter(None, [settings.get("spark.jars")])])
        log4j = conf_dir() / "spark" / "log4j2.properties"
        java_opts = settings.get("spark.driver.extraJavaOptions", "")
        if isinstance(warehouse, Path):  # Derby needs a local directory
            java_opts = java_opts.replace("/tmp/curator-derby", str(warehouse / ".derby"))
        settings["spark.driver.extraJavaOptions"] = (
            f"{java_opts} -Dlog4j2.configurationFile=file:{log4j}".strip()
        )
    else:
        for key in STARTUP_KEYS:
            settings.pop(key, None)
    # Credentials must reach Spark but no message: later redact(text) masks these values.
    remember_secrets(secret_values(settings))
    remember_secrets(v for k, v in os.environ.items() if is_secret_key(k))
    return settings


def build_session(cfg: Config, app_name: str = "curator") -> SparkSession:
    """The session for one job.

    Launched by spark-submit, or with a Spark already running (Databricks, a notebook), it
    joins that Spark and keeps its settings; the profile only fills what they leave unset.
    """
    running = running_conf()
    new_jvm = running is None and launches_jvm()
    settings = spark_settings(cfg, app_name, running, new_jvm)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warehouse = cfg.warehouse_path
    if isinstance(warehouse, Path):  # on object storage, prefixes need no creating
        warehouse.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    local_jars = required_jars(cfg) if jars_in_place(settings, new_jvm) else []
    with driver_class_path(local_jars):
        spark = builder.getOrCreate()
    if "PYSPARK_GATEWAY_PORT" in os.environ and not os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        from spark_jobs.submit_streams import adopt_log_config

        adopt_log_config(spark.sparkContext._jvm)  # spark-submit started the JVM without ours
    # the profile's (or a cluster's) spark.log.level, WARN when none is set
    spark.sparkContext.setLogLevel(spark.sparkContext.getConf().get("spark.log.level", "WARN"))
    # a context that was already up ignores spark.hadoop.*: set the S3A keys on it directly
    configure_object_storage(spark, os.environ, keep={**(running or {}), **cfg_overrides(cfg)})
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    # Databricks runtimes have Delta built in, without the open-source session extension.
    if "DeltaSparkSessionExtension" not in extensions and not os.environ.get(
        "DATABRICKS_RUNTIME_VERSION"
    ):
        raise ConfigError(
            "spark.sql.extensions lacks io.delta.sql.DeltaSparkSessionExtension; pass "
            "--properties-file conf/spark/<profile>.conf to spark-submit"
        )
    if local_jars:
        check_class_path(spark)
    from spark_jobs.catalog import register_tables

    register_tables(spark, cfg)
    return spark


def check_class_path(spark: SparkSession) -> None:
    """Delta's classes are in the JVM that driver_class_path started; if not, stop it with a
    message. A spark-env.sh that sets SPARK_DIST_CLASSPATH itself (a "Hadoop free" Spark's)
    replaces ours, and Spark then only warns, failing later at the first table."""
    from py4j.java_gateway import JavaClass

    assert spark._jvm is not None  # a classic (py4j) session: this process started its JVM
    if isinstance(spark._jvm.io.delta.sql.DeltaSparkSessionExtension, JavaClass):
        return
    spark.stop()
    raise ConfigError(
        f"Delta's jars are not on the class path of the local Spark JVM: a spark-env.sh (in "
        f"$SPARK_CONF_DIR or $SPARK_HOME/conf) sets {DIST_CLASSPATH} and replaced the jars "
        f'curator appends to it. Make it append (export {DIST_CLASSPATH}="${DIST_CLASSPATH}:'
        f'..."), or run the job through spark-submit with --jars'
    )


ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"  # rows per Arrow batch to UDFs


@contextmanager
def session_conf(spark: SparkSession, confs: Mapping[str, str]) -> Iterator[None]:
    """Set SQL confs for the duration (they are read when a plan runs), then restore the
    previous values (unset where there was none)."""
    previous = {k: spark.conf.get(k, None) for k in confs}
    for k, v in confs.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, old in previous.items():
            if old is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, old)
