"""Turning a failure into the one line a user can act on (the CLI's `curator <job> failed:`)."""

from __future__ import annotations

import re

from spark_jobs.redact import redact


def worker_message(exc: BaseException) -> str | None:
    """The last `SomeError: message` line of a Python worker traceback inside a Spark error."""
    text = str(exc)
    if "Traceback" not in text:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    found = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    return found[-1] if found else None


def failure_line(exc: BaseException) -> str:
    """What went wrong in one line, secrets masked: the executor's own error when a task
    failed (e.g. `OSError: [Errno 28] No space left on device`), else the exception's first."""
    text = str(exc).strip()
    line = worker_message(exc) or (
        f"{exc.__class__.__name__}: {text.splitlines()[0]}" if text else exc.__class__.__name__
    )
    return redact(line)
