"""Deterministic identifiers for shards and samples.

A rerun of ingest must give every shard the same ``shard_uri`` and every sample the same
``sample_id``, whatever spelling of the path the user passed (relative, absolute, ``file:``).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote

__all__ = ["normalize_shard_uri", "sample_id", "SAMPLE_ID_HEX_CHARS"]

SAMPLE_ID_HEX_CHARS = 24

# RFC 3986 scheme followed by "://"; single-letter schemes are Windows drive letters, not URIs.
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def _local_uri(path: str) -> str:
    """Resolve a local path to ``file:///abs/path`` (symlinks resolved, no percent-encoding)."""
    resolved = Path(os.path.expanduser(path)).resolve()
    return "file://" + resolved.as_posix()


def normalize_shard_uri(path_or_uri: str) -> str:
    """Return the canonical uri of a shard.

    Local paths and ``file:`` uris (``file:/a``, ``file:///a``, ``file://localhost/a``) become
    ``file:///abs/path`` with the path resolved, so the same file always gets the same uri.
    Any other uri (``s3://``, ``hdfs://``, ``gs://``, ...) is returned unchanged.
    """
    text = path_or_uri.strip()
    if not text:
        raise ValueError("empty shard path")
    match = _URI_RE.match(text)
    if match:
        if match.group(1).lower() != "file":
            return text
        rest = text[len(match.group(0)) :]
        # file://host/path: only an empty host or localhost is local.
        host, sep, path = rest.partition("/")
        if host and host.lower() != "localhost":
            raise ValueError(f"file uri with a remote host is not supported: {path_or_uri!r}")
        return _local_uri(unquote("/" + path if sep else "/"))
    if text.lower().startswith("file:"):
        return _local_uri(unquote(text[len("file:") :]))
    return _local_uri(text)


def sample_id(shard_uri: str, key: str) -> str:
    """Deterministic sample id: first 24 hex chars of sha256(shard_uri + NUL + key).

    ``shard_uri`` must already be normalised with :func:`normalize_shard_uri`.
    """
    digest = hashlib.sha256(f"{shard_uri}\x00{key}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:SAMPLE_ID_HEX_CHARS]
