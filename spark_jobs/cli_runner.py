"""How a command runs a job: configuration first (exit 2), then Spark, the job, its summary.

Exit codes: 0 done (quarantined samples are still success), 2 bad usage or configuration,
1 the job failed. Messages go to stderr; `--json` puts one JSON object on stdout's last line.
The command table itself is `spark_jobs/cli.py`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spark_jobs.config import Config, ConfigError, load_config
from spark_jobs.errors import failure_line


def err(message: str) -> None:
    """One message for the user, on stderr."""
    print(message, file=sys.stderr, flush=True)


def _debug() -> bool:
    return os.environ.get("CURATOR_DEBUG", "") not in ("", "0")


def usage_error(exc: ConfigError) -> typer.Exit:
    """Print a configuration error; the caller raises the returned exit (code 2)."""
    err(f"configuration error:\n{exc}")
    return typer.Exit(2)


def resolve_config(
    config: Path | None,
    sets: list[str] | None,
    warehouse: str | None,
    validate: Callable[[Config], Any] | None = None,
) -> Config:
    """Load (and `validate`) the configuration or exit 2 with the message, before Spark starts."""
    try:
        cfg = load_config(config, sets or [], warehouse)
        if validate is not None:
            validate(cfg)
        return cfg
    except ConfigError as exc:
        raise usage_error(exc) from None


def _session(cfg: Config, name: str) -> Any:
    from spark_jobs.session import build_session

    _quiet_error_context_logs()
    return build_session(cfg, app_name=f"curator-{name}")


def _quiet_error_context_logs() -> None:
    """PySpark logs each analysis error with its query context as a JSON line at ERROR
    before the command prints its own one-line message for it: only that line is kept
    (CURATOR_DEBUG=1 shows both)."""
    if _debug():
        return
    import logging

    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def _failed(name: str, exc: BaseException, hint: bool) -> typer.Exit:
    if _debug():
        traceback.print_exc()
    more = "\n(rerun with CURATOR_DEBUG=1 for the traceback)" if hint else ""
    err(f"curator {name} failed: {failure_line(exc)}{more}")
    return typer.Exit(1)


def run_job(job: str, cfg: Config, as_json: bool, call: Callable[[Any, Config], Any]) -> None:
    """Build the session, run the job, print its summary; map failures to exit codes."""
    try:
        summary = call(_session(cfg, job), cfg)
    except ConfigError as exc:
        raise usage_error(exc) from None
    except KeyboardInterrupt:
        err(f"curator {job}: interrupted; rerun the same command to continue where it stopped")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one message instead of a traceback
        raise _failed(job, exc, hint=True) from None
    summaries = summary if isinstance(summary, list) else [summary]
    if as_json:
        for s in summaries:
            s.render(_stderr_console())
        dicts = [s.to_dict() for s in summaries]
        print(json.dumps(dicts if len(dicts) > 1 else dicts[0], default=str))
    else:
        for s in summaries:
            s.render()


def query_command(name: str, cfg: Config, call: Callable[[Any, Config], Any]) -> Any:
    """Run a read-only command's `call(spark, cfg)`: exit 2 on configuration errors, 1 on
    failures, each as one line on stderr (CURATOR_DEBUG=1 for the traceback)."""
    try:
        return call(_session(cfg, name), cfg)
    except ConfigError as exc:
        raise usage_error(exc) from None
    except Exception as exc:  # noqa: BLE001
        raise _failed(name, exc, hint=False) from None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)
