"""Shared machinery of the fault tests: `curator` subprocesses, kill triggers, table snapshots.

Every fault test runs the real command line (real Spark, real Delta, the tiny `test_vit` model
with random-init heads) and compares what is in the tables afterwards with an uninterrupted
run, by content: sets of keys and the columns that matter, never timestamps or run ids.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DB = "curator"

# Small, fast and deterministic: 2 local cores, 2 shuffle partitions, tiny random-init model.
SETS: tuple[str, ...] = (
    "spark.conf={spark.master: 'local[2]', spark.sql.shuffle.partitions: 2, "
    "spark.default.parallelism: 2}",
    "embed.model=test_vit",
    "embed.pretrained=false",
    "embed.batch_size=8",
    "embed.num_threads_per_worker=1",
    "embed.arrow_batch_size=8",
    "classifiers=[{name: aesthetic, random_init: true}, {name: nsfw, random_init: true}]",
    "filter.predicates=['width >= 32']",
    "ingest.shards_per_batch=2",  # two batches: a kill can land between commits
    "export.samples_per_shard=5",
)
# Object-store credentials as users pass them: they must never show up in any output.
ACCESS = "AKIAFAKEACCESSKEY7Q2Z"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
SECRET_SETS = (
    f"spark.conf.spark.hadoop.fs.s3a.access.key={ACCESS}",
    f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}",
)
# Columns that legitimately differ between two runs over the same input.
# `basis` (semantic dedup state) names the centroid fit by the run that made it, like run_id.
VOLATILE = {"run_id", "output", "curated_version", "error_detail", "basis"}
# Append-only logs (one row per run): more runs, more rows, by design.
LOG_TABLES = {"filter_stats"}


def set_args(*extra: str, base: tuple[str, ...] = SETS) -> list[str]:
    """`--set` arguments for the fault-test configuration plus `extra` overrides."""
    out: list[str] = []
    for s in (*base, *extra):
        out += ["--set", s]
    return out


def assert_no_secret(where: str, text: str) -> None:
    for value in (ACCESS, SECRET, SECRET.split("/")[1]):
        assert value not in text, f"a credential appears in {where}"


def env(**extra: str) -> dict[str, str]:
    """The environment of a `curator` subprocess: the repository importable by workers."""
    e = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    e.update(extra)
    return e


def curator(
    *args: str, ok: bool = True, timeout: int = 2400, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `curator ARGS` to completion; with `ok`, fail the test on a non-zero exit."""
    proc = subprocess.run(
        [str(BIN / "curator"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env(**(extra_env or {})),
    )
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"curator {args[0]} exit {proc.returncode}\nstdout:{proc.stdout[-3000:]}\n"
            f"stderr:{proc.stderr[-3000:]}"
        )
    return proc


def last_json(stdout: str) -> Any:
    """The `--json` summary: the last line of stdout."""
    return json.loads(stdout.strip().splitlines()[-1])


def assert_balanced(summaries: Any) -> None:
    """Every summary balances: rows_in = written + quarantined + skipped."""
    for s in summaries if isinstance(summaries, list) else [summaries]:
        assert s["balanced"], f"{s['job']} summary does not balance: {s}"
        assert s["rows_in"] == s["rows_written"] + s["quarantined"] + s["skipped"]


@dataclass
class Launched:
    """A `curator` process started in its own process group (JVM and workers included)."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def kill(self) -> bool:
        """SIGKILL the whole group; True when it was still running (a real kill)."""
        alive = self.proc.poll() is None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        return alive

    def wait(self, timeout: float = 900) -> int:
        return self.proc.wait(timeout=timeout)


def launch(*args: str, logs: Path, extra_env: dict[str, str] | None = None) -> Launched:
    """Start `curator ARGS` in a new session, output to files (no pipe can fill up)."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    out, err = logs / f"{n:02d}-{args[0]}.out", logs / f"{n:02d}-{args[0]}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [str(BIN / "curator"), *args],
            cwd=ROOT,
            env=env(**(extra_env or {})),
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    return Launched(proc, out, err)


def commit_files(warehouse: Path) -> set[Path]:
    """Every Delta commit file of every table in the warehouse."""
    return set((warehouse / f"{DB}.db").glob("*/_delta_log/*.json"))


def wait_until(pred: Any, proc: Launched, timeout: float = 900, poll: float = 0.02) -> bool:
    """Poll `pred()` until true (True) or the process exits first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if proc.proc.poll() is not None:
            return bool(pred())
        time.sleep(poll)
    raise AssertionError(f"trigger never fired within {timeout}s")


@dataclass
class Trigger:
    """Where to kill: after `commits` new Delta commits, or `delay` seconds after `after` shows
    up in stderr (a stage's start line), whichever the seed picked."""

    kind: str
    commits: int = 0
    delay: float = 0.0
    after: str | None = None

    def describe(self) -> str:
        since = repr(self.after) if self.after else "launch"
        if self.kind == "commit":
            return f"commit {self.commits} after {since}"
        return f"{self.delay:.2f}s after {since}"


def pick_trigger(seed: int, label: str, commits: int, seconds: float, after: str | None) -> Trigger:
    """A seeded random kill point inside a job that makes `commits` commits in `seconds`."""
    rng = random.Random(f"{label}:{seed}")
    if commits > 1 and rng.random() < 0.5:
        return Trigger("commit", commits=rng.randint(1, commits - 1), after=after)
    # half the reference time: the stage must still be running when the kill comes
    return Trigger("delay", delay=rng.uniform(0.0, max(seconds * 0.5, 0.5)), after=after)


def kill_at(run: Launched, trigger: Trigger, warehouse: Path) -> str:
    """Wait for the trigger, SIGKILL the run; a line saying what happened."""
    fired = True
    if trigger.after:
        fired = wait_until(lambda: trigger.after in run.stderr_text(), run)
    before = commit_files(warehouse)
    if fired and trigger.kind == "commit":
        wait_until(lambda: len(commit_files(warehouse) - before) >= trigger.commits, run)
    elif fired:
        time.sleep(trigger.delay)
    killed = run.kill()
    new = len(commit_files(warehouse) - before)
    state = "killed" if killed else f"had already exited ({run.proc.returncode})"
    return f"{trigger.describe()}: {state}, {new} commits made"


# ---- table snapshots ---------------------------------------------------------------------------
def _norm(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    return value


def snapshot(spark: Any, warehouse: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (sorted), without timestamps, run ids, binaries or volatile columns."""
    from pyspark.sql.types import BinaryType, TimestampType

    out: dict[str, list[tuple[Any, ...]]] = {}
    for path in sorted((warehouse / f"{DB}.db").glob("*/_delta_log")):
        name = path.parent.name
        if name in LOG_TABLES:
            continue
        df = spark.read.format("delta").load(str(path.parent))
        cols = [
            f.name
            for f in df.schema.fields
            if not isinstance(f.dataType, TimestampType | BinaryType) and f.name not in VOLATILE
        ]
        rows = [tuple(_norm(v) for v in r) for r in df.select(*cols).collect()]
        out[name] = sorted(rows, key=repr)
        out[name + ".columns"] = [tuple(cols)]
    return out


def assert_same_tables(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> None:
    """Same tables, and in each the same multiset of rows: nothing lost, nothing twice."""
    assert sorted(got) == sorted(want), "different tables"
    for name, rows in want.items():
        if name.endswith(".columns"):
            continue
        extra = Counter(got[name]) - Counter(rows)
        lost = Counter(rows) - Counter(got[name])
        assert not extra and not lost, (
            f"table {name}: {sum(lost.values())} rows lost, {sum(extra.values())} extra; "
            f"lost e.g. {list(lost)[:2]}, extra e.g. {list(extra)[:2]}"
        )


def shard_members(out_dir: Path) -> list[tuple[str, list[tuple[str, int]]]]:
    """Export output: per final shard, its member names and sizes (in order)."""
    import tarfile

    shards = []
    for p in sorted(out_dir.glob("*.tar")):
        with tarfile.open(p) as tar:
            # .json members carry curated columns (timestamps among them): names only
            members = [(m.name, -1 if m.name.endswith(".json") else m.size) for m in tar]
            shards.append((p.name, members))
    return shards
