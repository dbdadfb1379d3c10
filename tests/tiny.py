"""What several test modules share: the tiny-model settings and a spark-submit runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# `--set` items for timm's tiny random `test_vit` and random-init heads (the last item).
TINY: tuple[str, ...] = (
    "embed.model=test_vit",
    "embed.pretrained=false",
    "embed.batch_size=8",
    "embed.num_threads_per_worker=2",
    "embed.arrow_batch_size=16",
    "classifiers=[{name: aesthetic, random_init: true}, {name: nsfw, random_init: true}]",
)


def spark_submit_process(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`spark-submit spark_jobs/<script> ARGS` like the README shows (local[2], Delta's jars)."""
    from spark_jobs.paths import jar_file, versions

    jars = ",".join(str(jar_file(c)) for c in versions()["jars"])
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [
            str(BIN / "spark-submit"),
            "--properties-file",
            str(ROOT / "conf/spark/local.conf"),
            "--master",
            "local[2]",
            "--jars",
            jars,
            str(ROOT / "spark_jobs" / script),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def spark_submit(script: str, *args: str, cwd: Path) -> dict | list:
    """`spark_submit_process(... --json)` that must succeed; its summary (stdout's last line)."""
    proc = spark_submit_process(script, *args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
