"""Shared fixtures: one session-scoped local SparkSession; each test its own warehouse."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """local[2] Spark with Delta, small shuffles, no UI (like Delta's own test base)."""
    from spark_jobs.config import load_config
    from spark_jobs.session import build_session

    base = tmp_path_factory.mktemp("spark")
    cfg = load_config(
        sets=[
            "spark.conf={spark.master: 'local[2]', spark.sql.shuffle.partitions: 4}",
            "spark.with_rapids_jar=true",
        ],
        warehouse=str(base / "warehouse"),
    )
    session = build_session(cfg, app_name="curator-tests")
    yield session
    session.stop()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable:
    """A config with its own warehouse and database, plus any `--set` overrides."""
    from spark_jobs.config import load_config

    def make(*sets: str, warehouse: Path | None = None, database: str | None = None):
        db = database or f"t_{uuid.uuid4().hex[:8]}"
        return load_config(
            sets=[f"database={db}", "spark.conf={spark.master: 'local[2]'}", *sets],
            warehouse=str(warehouse or tmp_path / "warehouse"),
        )

    return make


def shared_models_dir() -> Path:
    """The real LAION weights and reference outputs (../shared/models beside the checkout).

    $CURATOR_SHARED_MODELS wins; a clone elsewhere falls back to /work/shared/models.
    """
    env = os.environ.get("CURATOR_SHARED_MODELS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "models"]
    candidates += [Path("/work/shared/models")]
    return next((c for c in candidates if c.is_dir()), candidates[0])
