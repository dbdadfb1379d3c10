"""A class-data-sharing (CDS) archive of the classes a Spark + Delta JVM loads, for the tests.

The tests start about a hundred short-lived JVMs (`curator` and spark-submit subprocesses, the
pytest workers' sessions). Each one loads and verifies the same ~20,000 classes of Spark,
Scala and Delta's dependencies from the jars. A dynamic CDS archive (JDK 13+) keeps them
parsed and verified in one file that every JVM maps read-only: measured on this machine, a
`curator ingest` of 40 samples, 41-43 s -> 31-32 s of CPU. `make test` builds it once
(`python -m tests.jvm_archive`) with a small `curator run`; a JVM whose class path or JDK does
not match the archive ignores it, silently (`-Xlog:cds*=off`), and runs as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# C1 only and the serial GC: see tests/conftest.py. The archive is dumped with the same flags.
# Interpreted expressions and operators instead of generated Java (Spark's own test suites run
# both modes; results are the same): on test-sized data, Janino compiling a class for every
# plan costs more CPU than the generated code wins back. Measured on this machine: a 12-sample
# `curator dedup`, 52 -> 42 s; a 12-sample `curator run`, 116 -> 93 s of CPU. Set as system
# properties of the drivers, which every SparkConf reads (a config's spark.conf or --conf
# still wins; executors take SQL settings from the driver and may not be given Spark
# properties as JVM options). tests/cluster.py gives its jobs Spark's defaults back
# (USERS_CODEGEN): one end-to-end run generates code as users' jobs do.
INTERPRETED = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"
USERS_CODEGEN = ("spark.sql.codegen.wholeStage=true", "spark.sql.codegen.factoryMode=FALLBACK")
# C1 alone gets a 48 MB code cache by default (tiered gets 240 MB): a whole `curator run` in
# one JVM filled it (CI, tests/faults/test_bad_corpus.py: "CodeCache is full. Compiler has
# been disabled", then a failed localCheckpoint), so the tests' JVMs get the tiered size.
BASE_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m"
QUIET = "-Xlog:cds*=off"


def archive_path() -> Path:
    """Where the archive of this JDK + pyspark's jars lives (a new JDK or pyspark: a new file)."""
    import pyspark

    java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin"))
    java = java or shutil.which("java") or "java"
    jars = sorted(p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    # dumped under spark-submit --jars (build): the archive's class path is Spark's jars alone
    how = "spark-submit --jars"
    key = "\n".join(
        [os.path.realpath(java), pyspark.__version__, BASE_OPTS, INTERPRETED, how, *jars]
    )
    return ROOT / ".cache" / "jvm" / f"spark-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def jvm_flags() -> str:
    """The test JVMs' flags (executors' too): the base flags, plus the archive once built."""
    path = archive_path()
    return f"{BASE_OPTS} {QUIET} -XX:SharedArchiveFile={path}" if path.is_file() else BASE_OPTS


def jvm_opts() -> str:
    """The test drivers' and daemons' JVM options: the flags and the INTERPRETED properties."""
    return f"{jvm_flags()} {INTERPRETED}"


def build(path: Path) -> None:
    """Dump the archive at the normal exit of a small run of every stage (every stage's
    classes), with the fault tests' configuration (tests/faults/harness.py).

    It runs under `spark-submit --jars`, which loads Delta's jars in a class loader of its own:
    the archive's class path is then Spark's jars alone, which every test JVM's class path
    starts with. A JVM whose class path is shorter than the archive's rejects it (JDK 17), and
    a local `curator` session appends Delta's jars to its class path (spark_jobs/session.py)
    where spark-submit runs and the standalone cluster's daemons have none."""
    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs.paths import jar_file, versions
    from tests.faults import harness

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    try:
        with tempfile.TemporaryDirectory(prefix="jvm-archive-") as tmp:
            base = Path(tmp)
            write_sample_shards(base / "shards", shards=1, per_shard=12, seed=1)
            jars = ",".join(str(jar_file(c)) for c in versions()["jars"])
            submit = [str(BIN / "spark-submit"), "--properties-file",
                      str(ROOT / "conf/spark/local.conf"), "--jars", jars,
                      str(ROOT / "spark_jobs" / "pipeline.py")]  # fmt: skip
            args = ["--warehouse", str(base / "wh"), "--input", str(base / "shards"),
                    "--output", str(base / "out"), *harness.set_args()]  # fmt: skip
            opts = f"{BASE_OPTS} {INTERPRETED} -XX:ArchiveClassesAtExit={partial}"
            subprocess.run([*submit, *args], check=True, cwd=base,
                           env=harness.env(SPARK_SUBMIT_OPTS=opts), capture_output=True,
                           text=True, timeout=900)  # fmt: skip
        if not partial.is_file():
            raise SystemExit(f"jvm archive: the JVM wrote no archive at {partial}")
        partial.replace(path)  # atomic: a concurrent reader sees the old state or the whole file
    finally:
        partial.unlink(missing_ok=True)


def main() -> None:
    path = archive_path()
    if path.is_file():
        print(f"jvm archive: {path.relative_to(ROOT)} (up to date)")
        return
    for old in path.parent.glob("spark-*.jsa"):  # another JDK's or pyspark's: never used again
        old.unlink()
    try:
        build(path)
    except (subprocess.SubprocessError, SystemExit) as err:  # an optimisation: tests run without
        detail = getattr(err, "stderr", "") or ""
        print(f"jvm archive: not built ({err}); the tests run without it\n{detail[-2000:]}")
        return
    print(f"jvm archive: built {path.relative_to(ROOT)} ({path.stat().st_size >> 20} MiB)")


if __name__ == "__main__":
    main()
