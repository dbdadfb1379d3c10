"""An S3-compatible HTTP server on 127.0.0.1 for the object-storage tests: moto's server mode.

`python -m tests.s3server --port P --state DIR` serves moto's S3 API (its werkzeug app, as
`moto_server` does) with two additions a real S3 has and a test needs:
- durability across a restart: on a crash the server first saves every bucket and object
  to DIR, and a server started with the same DIR loads them again (moto keeps state in
  memory only);
- a crash on cue: `POST /_curator/crash?pattern=REGEX` arms it; the first successful PUT whose
  path matches REGEX is answered, then the process exits at once (`os._exit`), as a killed
  server would. Requests that arrive in between get `503 SlowDown` (retryable, nothing done).

`S3Server` (used by the session fixture in tests/test_object_storage.py) starts and stops it
with bounded waits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"  # moto's default account (any access key maps to it)


# ---- server side (runs in the child process) -------------------------------------------------
def _backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT]["global"]


def save_state(state: Path) -> None:
    """Every bucket and object of the server, written to `state` (replacing what was there)."""
    backend = _backend()
    objects = state / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[list[str]]] = {}
    n = 0
    for name, bucket in backend.buckets.items():
        index[name] = []
        for key_name, key in bucket.keys.items():
            if key is None or getattr(key, "is_delete_marker", False):
                continue
            (objects / str(n)).write_bytes(key.value)
            index[name].append([key_name, str(n)])
            n += 1
    tmp = state / "index.json.tmp"
    tmp.write_text(json.dumps(index), encoding="utf-8")
    tmp.replace(state / "index.json")


def load_state(state: Path) -> None:
    """Recreate the buckets and objects save_state wrote (nothing when there is none)."""
    index_file = state / "index.json"
    if not index_file.is_file():
        return
    backend = _backend()
    for name, keys in json.loads(index_file.read_text(encoding="utf-8")).items():
        backend.create_bucket(name, "us-east-1")
        for key_name, file_name in keys:
            backend.put_object(name, key_name, (state / "objects" / file_name).read_bytes())


class CrashOnCue:
    """WSGI middleware around moto's app: the `/_curator/crash` control and the crash."""

    def __init__(self, app: Any, state: Path) -> None:
        self.app, self.state = app, state
        self.pattern: re.Pattern[str] | None = None
        self.dying = False
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/_curator/crash" and method == "POST":
            from urllib.parse import parse_qs

            query = parse_qs(environ.get("QUERY_STRING", ""))
            self.pattern = re.compile(query["pattern"][0])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"armed"]
        if self.dying:
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            return [b"<Error><Code>SlowDown</Code><Message>restarting</Message></Error>"]
        status: list[str] = []

        def record(s: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(s)
            return start_response(s, headers, exc_info)

        body = b"".join(self.app(environ, record))
        pattern = self.pattern
        if (
            pattern is not None
            and method == "PUT"
            and status
            and status[0].startswith("200")
            and pattern.search(path)
        ):
            with self.lock:
                if not self.dying:
                    self.dying = True
                    save_state(self.state)  # what a durable store has at the crash
                    threading.Timer(0.1, lambda: os._exit(17)).start()
        return [body]


def serve(port: int, state: Path) -> None:
    """Run moto's S3 server on 127.0.0.1:port until killed."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    # the S3 backend is created lazily: load the saved objects once it exists
    load_state(state)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    run_simple(
        "127.0.0.1",
        port,
        CrashOnCue(app, state),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


# ---- test side -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """The server as a child process: start, wait until it answers, crash, restart, stop."""

    def __init__(self, state: Path, log: Path, port: int | None = None) -> None:
        self.state, self.log = state, log
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and wait (at most `timeout` s) until it answers HTTP."""
        self.state.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.s3server", "--port", str(self.port),
             "--state", str(self.state)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"S3 server exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except urllib.error.HTTPError:  # an HTTP answer, even an error, is an answer
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"S3 server on port {self.port} did not answer in {timeout} s")

    def arm_crash(self, pattern: str) -> None:
        """Crash after the first successful PUT whose path matches `pattern` (a regex)."""
        from urllib.parse import quote

        url = f"{self.endpoint}/_curator/crash?pattern={quote(pattern)}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
            pass

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait (bounded) for the child to end; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; only this child."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    serve(args.port, args.state)
