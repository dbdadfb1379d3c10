"""Where the project's own files live: conf/ (packaged), jars/ (overridable by environment).

conf/ ships inside the wheel as the package `curator_conf` (pyproject.toml maps it onto the
checkout's conf/), so an install on a cluster without a checkout finds its Spark profiles,
version set, pipeline YAMLs and job files. In an editable install the package *is* the
checkout's conf/. `$CURATOR_CONF_DIR` overrides both.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF_PACKAGE = "curator_conf"


def packaged_conf() -> Traversable:
    """The conf/ tree that was installed with the code (a directory, or a folder in a zip)."""
    return resources.files(CONF_PACKAGE)


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__" or child.name.endswith(".pyc"):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            out += _walk(child, rel + "/")
        else:
            out.append((rel, child))
    return out


@lru_cache(maxsize=1)
def _extracted_conf() -> Path:
    """The packaged conf/ copied to a real directory (it sits in a zip), once per content."""
    files = [(rel, node.read_bytes()) for rel, node in _walk(packaged_conf())]
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    target = Path(tempfile.gettempdir()) / f"curator-conf-{digest.hexdigest()[:16]}"
    if (target / ".complete").is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix="curator-conf-"))
    for rel, data in files:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    (staging / ".complete").touch()
    try:
        staging.rename(target)
    except OSError:  # another process put the same content there first
        return target if (target / ".complete").is_file() else staging
    return target


def conf_dir() -> Path:
    """$CURATOR_CONF_DIR, else the packaged conf/ as a directory on disk.

    Spark and log4j need real file paths: a conf/ inside a zip (`spark-submit --py-files
    image_curator.zip`) is extracted once into the temp directory.
    """
    env = os.environ.get("CURATOR_CONF_DIR")
    if env:
        return Path(env)
    tree = packaged_conf()
    if isinstance(tree, Path):
        return tree
    return _extracted_conf()


def conf_file(*parts: str) -> Path:
    """A file of conf/, e.g. conf_file("spark", "local.conf")."""
    return conf_dir().joinpath(*parts)


def resolve_config_path(path: str | Path) -> Path:
    """A `--config` path as given when it exists; else the same file of the packaged conf/.

    Job files name `--config conf/curation.yaml` relative to a checkout. Where there is none
    (a wheel installed on a cluster), `conf/curation.yaml` and `curation.yaml` resolve to the
    copy inside the package. Any other missing path is returned unchanged, so that the caller
    reports it as missing.
    """
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts
    rel = parts[1:] if parts and parts[0] == "conf" else parts
    if rel:
        packaged = conf_dir().joinpath(*rel)
        if packaged.is_file():
            return packaged
    return p


def is_uri(location: str) -> bool:
    """True for a URI with a scheme other than `file` (`s3a://bucket/wh`, `s3://b/x`)."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+", scheme)) and scheme != "file"


class StoreURI(str):
    """An object-store location that joins like a Path (`uri / "x"`) and stays a plain URI.

    Spark and fsspec take it as a string; `Path` would collapse `s3a://` into `s3a:/`.
    """

    def __new__(cls, uri: str) -> StoreURI:
        return super().__new__(cls, str(uri).rstrip("/"))

    def __truediv__(self, part: str) -> StoreURI:
        return StoreURI(f"{self}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        """The last path segment, as `Path.name`."""
        return self.rsplit("/", 1)[-1]


def jars_dir() -> Path:
    """The git-ignored jars/ folder filled once by `make jars`, or $CURATOR_JARS_DIR."""
    return Path(os.environ.get("CURATOR_JARS_DIR", ROOT / "jars"))


def versions() -> dict[str, Any]:
    """conf/versions.yaml: the project's one version set."""
    data = yaml.safe_load(conf_file("versions.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict), "conf/versions.yaml must be a mapping"
    return data


def jar_file(coordinate: str) -> Path:
    """The file `mvn dependency:copy` writes for group:artifact:version."""
    _group, artifact, version = coordinate.split(":")
    return jars_dir() / f"{artifact}-{version}.jar"
