"""Where the project's own files live: conf/, jars/ (overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """conf/ of this checkout, or $CURATOR_CONF_DIR (a wheel install on a cluster)."""
    return Path(os.environ.get("CURATOR_CONF_DIR", ROOT / "conf"))


def jars_dir() -> Path:
    """The git-ignored jars/ folder filled once by `make jars`, or $CURATOR_JARS_DIR."""
    return Path(os.environ.get("CURATOR_JARS_DIR", ROOT / "jars"))


def versions() -> dict:
    """conf/versions.yaml: the project's one version set."""
    return yaml.safe_load((conf_dir() / "versions.yaml").read_text(encoding="utf-8"))


def jar_file(coordinate: str) -> Path:
    """The file `mvn dependency:copy` writes for group:artifact:version."""
    _group, artifact, version = coordinate.split(":")
    return jars_dir() / f"{artifact}-{version}.jar"
