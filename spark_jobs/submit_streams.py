"""Under spark-submit: messages on stderr, the summary alone on stdout, Spark's logging at WARN.

Spark's PythonRunner starts the driver's Python with stderr merged into stdout
(`redirectErrorStream`) and copies both to the JVM's System.out: every message would reach
the user's stdout, and one printed after `--json`'s summary would break its last-line contract.
The JVM was started by spark-submit before any of our code ran, with Spark's default logging
(INFO) unless the user gave a log4j configuration; Spark's INFO lines then bury the job's
messages. `adopt_submit_streams` (before the job) and `adopt_log_config` (once the context is
up) fix both from the Python side.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import Any

from spark_jobs.paths import conf_file


class JvmStderr(io.TextIOBase):
    """A text stream that writes to the JVM's System.err (the user's stderr)."""

    def __init__(self, stream: Any, fallback: Any) -> None:
        self._stream, self._fallback = stream, fallback

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        try:
            self._stream.print(text)
        except Exception:  # the gateway is gone (interpreter shutdown): the merged stream
            self._fallback.write(text)
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except Exception:
            self._fallback.flush()


def stderr_merged_into_stdout() -> bool:
    """Whether fds 1 and 2 are one pipe (how Spark's PythonRunner starts the driver)."""
    try:
        out, err = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    same = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
    return same and stat.S_ISFIFO(out.st_mode)


def adopt_submit_streams() -> bool:
    """Under spark-submit (a gateway to its JVM in the environment) with merged streams: route
    sys.stderr to the JVM's System.err. False (nothing done) anywhere else."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ or not stderr_merged_into_stdout():
        return False
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, starts nothing
    jvm = SparkContext._jvm
    assert jvm is not None
    sys.stderr = JvmStderr(jvm.java.lang.System.err, sys.__stderr__)
    return True


def user_log_config(jvm: Any) -> bool:
    """Whether the driver JVM was given a log4j configuration (a system property, or a
    `log4j2.properties` on the classpath such as SPARK_CONF_DIR's)."""
    system = jvm.java.lang.System
    if system.getProperty("log4j2.configurationFile") or system.getProperty(
        "log4j.configurationFile"
    ):
        return True
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    return any(loader.getResource(n) is not None for n in ("log4j2.properties", "log4j2.xml"))


def adopt_log_config(jvm: Any) -> bool:
    """conf/spark/log4j2.properties on a driver JVM that spark-submit started without a log
    configuration; True if applied.

    Spark re-applies its INFO defaults while a SparkContext starts, so this runs once the
    context is up; `spark.log.level=WARN` (in the profiles) quiets the start itself but for
    three version lines. `--driver-java-options -Dlog4j2.configurationFile=...` silences those.
    """
    if user_log_config(jvm):
        return False
    uri = jvm.java.io.File(str(conf_file("spark", "log4j2.properties"))).toURI()
    jvm.org.apache.logging.log4j.LogManager.getContext(False).setConfigLocation(uri)
    return True
