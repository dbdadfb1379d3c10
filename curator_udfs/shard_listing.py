"""List WebDataset shards from directories, globs, single files and fsspec uris.

Ingest runs this on the driver; each ShardFile becomes one row (one Spark task) with a stable
uri, so that the shards table can tell which shards are already ingested.

Object storage (`s3://`, `s3a://`) goes through s3fs, configured from the standard AWS
environment of the process (:func:`s3_storage_options`): the driver's for listing, each
Python worker's for reading and writing (the session copies the driver's AWS variables into
the workers' environment). :func:`url_to_fs` is the one way this package opens a filesystem.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from curator_udfs.ids import normalize_shard_uri

__all__ = [
    "ShardFile",
    "list_shards",
    "SHARD_SUFFIXES",
    "is_shard_name",
    "OBJECT_STORE_PROTOCOLS",
    "is_object_store",
    "s3_storage_options",
    "storage_options",
    "url_to_fs",
    "stat_shard",
]

SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")
OBJECT_STORE_PROTOCOLS: tuple[str, ...] = ("s3", "s3a")


def is_object_store(url: str) -> bool:
    """True for an `s3://` or `s3a://` uri (any case)."""
    scheme, sep, _ = str(url).partition("://")
    return bool(sep) and scheme.lower() in OBJECT_STORE_PROTOCOLS


def s3_storage_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs options from the standard AWS environment (`os.environ` by default).

    `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` become key/secret/token,
    `AWS_ENDPOINT_URL_S3` (else `AWS_ENDPOINT_URL`) the endpoint, with path-style addressing
    (S3-compatible servers rarely resolve `bucket.host`), `AWS_REGION` (else
    `AWS_DEFAULT_REGION`) the region. Unset variables are left to botocore's own chain
    (profiles, instance roles). Listings are never cached: Spark writes the same keys.
    """
    env = os.environ if environ is None else environ
    opts: dict[str, Any] = {"use_listings_cache": False}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        opts["key"] = env["AWS_ACCESS_KEY_ID"]
        opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            opts["token"] = env["AWS_SESSION_TOKEN"]
    client: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
        opts["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if client:
        opts["client_kwargs"] = client
    return opts


def storage_options(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fsspec options for `url`: :func:`s3_storage_options` for s3/s3a, else none."""
    return s3_storage_options(environ) if is_object_store(url) else {}


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """`fsspec.core.url_to_fs` with this process's object-store options for s3/s3a uris."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


@dataclass(frozen=True)
class ShardFile:
    """One shard: canonical uri, size in bytes and modification time (epoch seconds) if known."""

    uri: str
    size: int
    mtime: float | None


def is_shard_name(path: str) -> bool:
    """True when the file name ends in a shard suffix (.tar, .tar.gz, .tgz; any case)."""
    return path.lower().endswith(SHARD_SUFFIXES)


def _mtime(info: dict[str, Any]) -> float | None:
    """Modification time from an fsspec info dict; the key differs between filesystems."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "modificationTime"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            # HDFS (webhdfs/pyarrow) reports milliseconds.
            return float(value) / 1000.0 if name == "modificationTime" else float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Canonical uri for a path of ``fs``: file:///abs for local files, protocol://path else."""
    if isinstance(fs, LocalFileSystem):
        return normalize_shard_uri(path)
    return fs.unstrip_protocol(path)


def _shard_file(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> ShardFile:
    return ShardFile(uri=_uri(fs, path), size=int(info.get("size") or 0), mtime=_mtime(info))


def _shards_below(fs: fsspec.AbstractFileSystem, root: str) -> list[ShardFile]:
    """All shard files below a directory, recursively."""
    found = fs.find(root, detail=True)
    return [
        _shard_file(fs, path, info)
        for path, info in found.items()
        if info.get("type") != "directory" and is_shard_name(path)
    ]


def _expand(pattern: str) -> list[ShardFile]:
    """Shards named by one pattern (dir, glob, file or uri); [] when it matches nothing."""
    fs, path = url_to_fs(pattern)
    if _glob.has_magic(path):
        found: list[ShardFile] = []
        for match, info in fs.glob(path, detail=True).items():
            if info.get("type") == "directory":
                found.extend(_shards_below(fs, match))
            elif is_shard_name(match):
                found.append(_shard_file(fs, match, info))
        return found
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return []
    if info.get("type") == "directory":
        return _shards_below(fs, path)
    # A file named explicitly is taken whatever its suffix.
    return [_shard_file(fs, path, info)]


def list_shards(patterns: list[str]) -> list[ShardFile]:
    """Expand patterns into shards, deduplicated by uri and sorted by uri.

    Each pattern is a directory (every ``*.tar``, ``*.tar.gz``, ``*.tgz`` below it,
    recursively), a glob (matching files must have a shard suffix; matching directories are
    searched), a single file (taken as is), or any fsspec uri of those. A pattern that
    matches no shard raises FileNotFoundError naming the pattern, so a typo in a config does
    not look like an empty input.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    by_uri: dict[str, ShardFile] = {}
    for pattern in patterns:
        shards = _expand(pattern)
        if not shards:
            raise FileNotFoundError(f"no shards found for input pattern {pattern!r}")
        for shard in shards:
            by_uri.setdefault(shard.uri, shard)
    return [by_uri[uri] for uri in sorted(by_uri)]


def stat_shard(uri: str) -> ShardFile:
    """The shard's size and mtime now, as listing reports them (FileNotFoundError if gone)."""
    fs, path = url_to_fs(uri)
    return _shard_file(fs, path, fs.info(path))
