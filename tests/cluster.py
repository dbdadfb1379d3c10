"""A real Spark standalone cluster on 127.0.0.1 for the cluster tests (tests/test_cluster.py).

One master and two workers (1 core, 2 GiB each) from the pyspark wheel's `spark-class`; the
executors run a bare Python (`bare_python`) that has the dependencies but not the project, so
the job only works with what travels with it (`--py-files dist/image_curator.zip`). The
artefact is built with `make cluster-bundle` in a copy of the checkout. Every wait is bounded;
every process started here runs in its own process group and is killed at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.jvm_archive import USERS_CODEGEN, jvm_flags

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPARK_HOME = Path(sysconfig.get_paths()["purelib"]) / "pyspark"
T0 = time.monotonic()


# ---- output: each step's time, straight to the terminal (pytest captures print) ----------------
_reporter: Any = None
TIMINGS: list[tuple[str, float]] = []


def say(msg: str) -> None:
    line = f"[cluster +{time.monotonic() - T0:6.1f}s] {msg}"
    if _reporter is not None:
        _reporter.write_line(line)
    else:
        print(line, file=sys.stderr, flush=True)


class step:
    """`with step("ingest"):` records and prints how long the block took."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> step:
        self.t = time.monotonic()
        say(f"{self.name} ...")
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.monotonic() - self.t
        TIMINGS.append((self.name, dt))
        say(f"{self.name}: {dt:.1f}s{' (failed)' if exc[0] else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1 only
        return json.loads(r.read())


class JobEnded(Exception):
    """Raised by a `wait_for` check when what it waits for can no longer happen."""


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except JobEnded:
            raise
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s (last error: {last!r})")


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(proc.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of our own children count as gone
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                return True
    return False


# ---- the executors' Python: dependencies only ----------------------------------------------------
def bare_python(where: Path) -> Path:
    """A venv whose site-packages points at .venv's (deps.pth) without its .pth files.

    .pth files inside a directory added by a .pth line are not processed, so the editable
    install's finder (`__editable__.image_curator-*.pth`) is not loaded: torch, pyspark, timm
    import; spark_jobs, curator_udfs and curator_conf do not.
    """
    base = Path(getattr(sys, "_base_executable", "") or shutil.which("python3.11") or "")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    py = where / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import importlib.util, json, torch, pyspark, timm, pandas, pyarrow\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
        "('spark_jobs', 'curator_udfs', 'curator_conf', 'tests')}))\n"
    )
    out = subprocess.run(
        [str(py), "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=where,
        env=clean_env(),
    )
    assert out.returncode == 0, f"dependencies do not import in {py}: {out.stderr[-2000:]}"
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(found.values()), f"the executors' Python sees the project: {found}"
    gone = subprocess.run(
        [str(py), "-c", "import spark_jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=where,
        env=clean_env(),
    )
    assert gone.returncode != 0 and "No module named 'spark_jobs'" in gone.stderr, gone.stderr
    return py


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without anything that would hand the checkout or a running Spark to a child."""
    drop = (
        "PYTHONPATH",
        "PYSPARK_GATEWAY_PORT",
        "PYSPARK_GATEWAY_SECRET",
        "SPARK_HOME",
        "PYSPARK_PYTHON",
        "PYSPARK_DRIVER_PYTHON",
        "CURATOR_CONF_DIR",
        "SPARK_CONF_DIR",
        "VIRTUAL_ENV",
        "PYTEST_CURRENT_TEST",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


# ---- the artefact, as the README builds it -------------------------------------------------------
def build_bundle(where: Path) -> Path:
    """`make cluster-bundle` in a copy of the checkout (the shared dist/ is left alone).

    The copy is the working tree (tracked and untracked, not ignored files); jars/ links to the
    checkout's. `-o install -o jars -o rapids-jar`: the venv and the jars exist already (make
    would otherwise ask Maven Central because conf/versions.yaml is newer), so exactly the
    target's own recipe runs.
    """
    src = where / "src"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        p = ROOT / rel
        if p.is_file() and not rel.startswith(("dist/", "jars/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / rel)
    (src / "jars").symlink_to(ROOT / "jars")
    out = subprocess.run(
        [
            "make",
            "-o",
            "install",
            "-o",
            "jars",
            "-o",
            "rapids-jar",
            "cluster-bundle",
            f"VENV={ROOT / '.venv'}",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    dist = src / "dist"
    assert (dist / "image_curator.zip").is_file() and (dist / "jars.txt").is_file()
    assert list(dist.glob("image_curator-*-py3-none-any.whl"))
    return dist


# ---- the cluster ---------------------------------------------------------------------------------
@dataclass
class Worker:
    proc: subprocess.Popen
    work_dir: Path
    log: Path


@dataclass
class Cluster:
    base: Path
    master_url: str
    webui: str
    python: Path  # the executors' (and the driver's) bare interpreter
    dist: Path
    master: subprocess.Popen
    workers: list[Worker] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return get_json(f"{self.webui}/json")

    def jars(self) -> str:
        """`$(paste -sd, dist/jars.txt)`: Delta's jars only (the RAPIDS and AWS SDK jars are in
        gpu-jars.txt / object-store-jars.txt; every executor would copy their 1.5 GB from the
        driver at each start, for nothing on a CPU cluster with a local warehouse)."""
        lines = (self.dist / "jars.txt").read_text().split()
        assert not any("rapids-4-spark" in line or "bundle-" in line for line in lines)
        return ",".join(str((self.dist.parent / line).resolve()) for line in lines)

    def executors(
        self, worker: Worker, app_id: str | None = None, executor_id: str | None = None
    ) -> list[int]:
        """Pids of the CoarseGrainedExecutorBackend JVMs this worker runs (for `app_id`)."""
        out = subprocess.run(
            ["pgrep", "-f", "CoarseGrainedExecutorBackend"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
        pids = []
        for pid in map(int, out):
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if worker.work_dir not in cwd.parents:
                continue
            if app_id is not None and app_id.encode() not in cmd:
                continue
            if executor_id is not None and not any(
                a == b"--executor-id" and b == executor_id.encode()
                for a, b in zip(cmd, cmd[1:], strict=False)
            ):
                continue
            pids.append(pid)
        return pids

    def submit(
        self,
        script: str,
        *args: str,
        cwd: Path,
        timeout: float = 240,
        during: Callable[[Submitted], None] | None = None,
        json_out: bool = True,
    ) -> Submitted:
        """`spark-submit --master spark://... --py-files dist/image_curator.zip --jars ...
        spark_jobs/<script> ARGS --json`, driver and executors on the bare Python.

        `during(sub)` runs in a thread while the job runs (e.g. to kill an executor)."""
        ui_port = free_port()
        event_dir = cwd / f"events.{time.monotonic_ns()}"
        event_dir.mkdir()
        cmd = [
            str(BIN / "spark-submit"),
            "--master",
            self.master_url,
            "--py-files",
            str(self.dist / "image_curator.zip"),
            "--jars",
            self.jars(),
            "--conf",
            f"spark.pyspark.python={self.python}",
            "--conf",
            f"spark.pyspark.driver.python={self.python}",
            "--conf",
            "spark.ui.enabled=true",
            "--conf",
            f"spark.ui.port={ui_port}",
            "--conf",
            "spark.port.maxRetries=50",
            "--conf",
            "spark.driver.host=127.0.0.1",
            *("--conf", "spark.eventLog.enabled=true"),  # Submitted.lost_tasks()
            *("--conf", f"spark.eventLog.dir={event_dir.as_uri()}"),
            *("--conf", "spark.eventLog.compress=false"),
            "--conf",
            "spark.driver.memory=2g",
            "--conf",
            "spark.executor.memory=1536m",
            "--conf",  # the executors' JVMs like every test JVM (tests/conftest.py)
            f"spark.executor.extraJavaOptions={jvm_flags()}",
            # but code generation as in users' jobs (tests/jvm_archive.py: INTERPRETED)
            *(arg for conf in USERS_CODEGEN for arg in ("--conf", conf)),
            # the job file of the checkout the bundle was built from (they must match)
            str(self.dist.parent / "spark_jobs" / script),
            *args,
            *(["--json"] if json_out else []),
        ]
        env = clean_env(PYSPARK_PYTHON=str(self.python), SPARK_LOCAL_IP="127.0.0.1")
        stdout, stderr = cwd / f"{script}.{time.monotonic_ns()}.out", cwd / f"{script}.err"
        with open(stdout, "w") as so, open(stderr, "a") as se:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=so, stderr=se, start_new_session=True
            )
            self.procs.append(proc)
            sub = Submitted(self, proc, f"http://127.0.0.1:{ui_port}", stdout, stderr, event_dir)
            helper = None
            if during is not None:
                helper = threading.Thread(target=sub.run_during, args=(during,), daemon=True)
                helper.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise AssertionError(
                    f"{script} did not finish within {timeout}s:\n{sub.tail()}"
                ) from None
            finally:
                kill_group(proc, grace=2)  # the driver's Python, if anything is left
            if helper is not None:
                helper.join(timeout=30)
                if helper.is_alive():
                    sub.during_error = "the `during` hook was still running after the job"
        sub.returncode = proc.returncode
        sub.stdout = stdout.read_text()
        sub.stderr = stderr.read_text()
        if sub.during_error is not None:
            raise AssertionError(f"{script}: {sub.during_error}\n{sub.tail()}")
        assert sub.returncode == 0, f"{script} exited {sub.returncode}:\n{sub.tail()}"
        if json_out:
            sub.summary = json.loads(sub.stdout.strip().splitlines()[-1])
        return sub


@dataclass
class Submitted:
    cluster: Cluster
    proc: subprocess.Popen
    ui: str
    stdout_path: Path
    stderr_path: Path
    event_dir: Path
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    summary: Any = None
    during_error: str | None = None
    killed_app: str | None = None
    killed_executor: str | None = None
    notes: list[str] = field(default_factory=list)
    _app: str | None = None

    def tail(self) -> str:
        out = self.stdout_path.read_text()[-2000:]
        err = self.stderr_path.read_text()[-4000:]
        return f"--- stdout\n{out}\n--- stderr\n{err}"

    def run_during(self, fn: Callable[[Submitted], None]) -> None:
        try:
            fn(self)
        except Exception as exc:  # noqa: BLE001 - reported by submit()
            self.during_error = f"{type(exc).__name__}: {exc}"

    def app_id(self) -> str:
        if self._app is None:
            self._app = str(get_json(f"{self.ui}/api/v1/applications")[0]["id"])
        return self._app

    def lost_tasks(self) -> list[dict[str, Any]]:
        """Tasks that ended because their executor was lost (ExecutorLostFailure), from the
        job's event log: `{"stage": ..., "task": ..., "executor": ...}` each."""
        lost = []
        for path in sorted(self.event_dir.glob("*/events_*")):  # rolling log, v2 layout
            for line in path.read_text().splitlines():
                event = json.loads(line)
                reason = event.get("Task End Reason", {})
                if (
                    event.get("Event") == "SparkListenerTaskEnd"
                    and reason.get("Reason") == "ExecutorLostFailure"
                ):
                    info = event["Task Info"]
                    lost.append(
                        {
                            "stage": event["Stage ID"],
                            "task": info["Task ID"],
                            "executor": info["Executor ID"],
                        }
                    )
        return lost


def python_workers(pid: int) -> list[int]:
    """Descendants of process `pid` that are PySpark Python workers (`pyspark.daemon`)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out = []
    for child in parent:
        p = child
        while p in parent and p != pid:
            p = parent[p]
        if p == pid and child != pid:
            try:
                if b"pyspark.daemon" in Path(f"/proc/{child}/cmdline").read_bytes():
                    out.append(child)
            except OSError:
                continue
    return out


def kill_executor_when_python_runs(timeout: float = 150) -> Callable[[Submitted], None]:
    """A `during` hook: kill -9, once, the first executor JVM (CoarseGrainedExecutorBackend)
    of the job that starts a Python UDF worker, the moment it does.

    An executor forks its `pyspark.daemon` inside the task that first needs Python, and that
    task then waits for the worker's imports (seconds), so the kill lands on it. In ingest and
    embed that task is the stage's own UDF (mapInArrow over the shards, mapInPandas over the
    images): its running task, its cached blocks and its shuffle files are lost with the
    executor. `Submitted.lost_tasks()` checks afterwards, from the event log, that it did.

    Only /proc is polled: the web UI's task list lags the scheduler under load, and a
    seconds-long task could start and end between two of its updates.
    """

    def hook(sub: Submitted) -> None:
        cluster = sub.cluster

        def target() -> tuple[int, int] | None:
            if sub.proc.poll() is not None:
                raise JobEnded("the job ended before an executor started a Python UDF worker")
            app = sub.app_id()
            for i, worker in enumerate(cluster.workers):
                for pid in cluster.executors(worker, app):
                    if python_workers(pid):
                        return i, pid
            return None

        try:
            worker, pid = wait_for("an executor with a Python UDF worker", target, timeout, 0.05)
        except (JobEnded, TimeoutError) as exc:
            sub.during_error = str(exc)
            return
        executor_id = executor_id_of(pid)
        os.kill(pid, signal.SIGKILL)
        sub.killed_app, sub.killed_executor = sub.app_id(), executor_id
        sub.notes.append(f"kill -9 executor {executor_id} (JVM {pid}, worker {worker})")
        say(sub.notes[-1])

    return hook


def executor_id_of(pid: int) -> str:
    """The `--executor-id` a CoarseGrainedExecutorBackend JVM was started with."""
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return cmd[cmd.index(b"--executor-id") + 1].decode()


def relaunched(cluster: Cluster, app_id: str) -> int:
    """Executors the workers started for `app_id` (one directory each in a work dir)."""
    return sum(len(list((w.work_dir / app_id).glob("*"))) for w in cluster.workers)


def start_cluster(base: Path) -> Cluster:
    python = bare_python(base / "bare-venv")
    env = clean_env(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(base / "logs"),
        PYSPARK_PYTHON=str(python),
        SPARK_NO_DAEMONIZE="1",
    )
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    (base / "logs").mkdir(exist_ok=True)
    log = base / "logs" / "master.log"
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=base,
    )
    cluster = Cluster(
        base, f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", python, base, master
    )
    try:
        wait_for("the master's web UI", lambda: cluster.state()["status"] == "ALIVE", 60)
        for i in range(2):
            work = base / f"worker{i}"
            local = base / f"worker{i}-local"
            work.mkdir()
            local.mkdir()
            wlog = base / "logs" / f"worker{i}.log"
            proc = subprocess.Popen(
                [
                    spark_class,
                    "org.apache.spark.deploy.worker.Worker",
                    cluster.master_url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "1",
                    "--memory",
                    "2g",
                    "--work-dir",
                    str(work),
                    "--webui-port",
                    str(free_port()),
                ],
                env={**env, "SPARK_LOCAL_DIRS": str(local)},
                stdout=open(wlog, "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=base,
            )
            cluster.workers.append(Worker(proc, work, wlog))

        def registered() -> bool:
            alive = [w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]
            for w in cluster.workers:
                assert w.proc.poll() is None, f"worker died: {w.log.read_text()[-2000:]}"
            return len(alive) == 2

        wait_for("two workers registered with the master", registered, 90)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    for proc in [*cluster.procs, *(w.proc for w in cluster.workers), cluster.master]:
        kill_group(proc)
    # executors are in their worker's process group; anything left under our dirs goes too
    for w in cluster.workers:
        for pid in cluster.executors(w):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Master + two workers on 127.0.0.1, executors on a bare Python, the artefact built."""
    global _reporter
    _reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    base = tmp_path_factory.mktemp("cluster")
    with step("start master + 2 workers, executors' bare Python"):
        c = start_cluster(base)
    try:
        with step("make cluster-bundle"):
            c.dist = build_bundle(base / "bundle")
        yield c
    finally:
        with step("stop the cluster"):
            stop_cluster(c)
        say("timings: " + ", ".join(f"{n} {t:.1f}s" for n, t in TIMINGS))
