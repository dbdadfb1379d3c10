"""Write WebDataset tar shards: deterministic bytes, safe member names, write-then-rename.

A shard is written to `<name>.tmp` and renamed with `os.replace` once complete and synced, so
a crash never leaves a partial shard under a final name. On object storage (`s3://`,
`s3a://`), where a rename is a copy, the shard is spooled to a local temporary file and
uploaded in one PUT to its final key: an object appears whole or not at all. Member names
come from a sanitised key (ASCII letters, digits, `_` and `-` only: no `/`, no `..`, no dots
that would split the key), never from a path of the input. Tar headers are fixed (mtime,
mode, owner) so the same samples give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from curator_udfs.shard_listing import is_object_store, url_to_fs

__all__ = [
    "EXPORT_MTIME",
    "FORMAT_EXTENSIONS",
    "SHARD_NAME_FORMAT",
    "ShardInfo",
    "ShardPacker",
    "ShardWriter",
    "image_extension",
    "plan_shards",
    "sample_tar_bytes",
    "sanitize_key",
    "shard_name",
]

EXPORT_MTIME = 946_684_800  # 2000-01-01T00:00:00Z, every member
# printf-style, so Spark's format_string names shards exactly as shard_name does
SHARD_NAME_FORMAT = "%05d.tar"
FORMAT_EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
}
_EXT_OK = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY_CHARS = 80  # ustar names are <= 100 bytes: key + "." + extension
# put_file uses a single PutObject below 2 * chunksize (and S3's 5 GiB PUT limit; a larger
# shard goes as a multipart upload, which is just as invisible until it completes).
_ONE_PUT_CHUNK = 4 * 2**30
Sizes = TypeVar("Sizes", int, np.ndarray)  # a byte size, or an int64 array of them


def shard_name(n: int) -> str:
    """The n-th shard's file name: `00000.tar`, `00001.tar`, ..."""
    if n < 0:
        raise ValueError(f"shard number must be >= 0, got {n}")
    return SHARD_NAME_FORMAT % n


def sanitize_key(key: str) -> str:
    """A member-name key that is safe whatever the input: folders flattened, no dots.

    Runs of characters other than ASCII letters, digits, `_` and `-` become one `_`
    (`a/b/../c.d` -> `a_b_c_d`); leading/trailing `_` are dropped; long keys are cut and
    suffixed with a hash so different long keys stay different. An empty result is an error.
    """
    safe = _UNSAFE.sub("_", key).strip("_")
    if len(safe) > MAX_KEY_CHARS:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe[: MAX_KEY_CHARS - 13]}_{digest}"
    if not safe:
        raise ValueError(f"key {key!r} has no safe characters; give the sample another key")
    return safe


def image_extension(image_format: str | None, fallback_ext: str | None = None) -> str:
    """The extension for an image of this format (from its header), else a known fallback."""
    ext = FORMAT_EXTENSIONS.get((image_format or "").upper())
    if ext:
        return ext
    fb = (fallback_ext or "").lower().lstrip(".")
    if fb in _EXT_OK:
        return fb
    raise ValueError(f"unknown image format {image_format!r} (extension {fallback_ext!r})")


def _member_bytes(size: Sizes) -> Sizes:
    return 512 + (size + 511) // 512 * 512


def sample_tar_bytes(member_sizes: Iterable[Sizes]) -> Sizes:
    """Bytes a sample's members take in a tar (a 512-byte header each, data padded to 512);
    elementwise for arrays of sizes (one entry per sample); 0 for no members."""
    total: Any = 0
    for s in member_sizes:
        total = total + _member_bytes(s)
    return cast(Sizes, total)


class ShardPacker:
    """Greedy shard packing one sample at a time, in order: a new shard when either target
    would be passed; a sample larger than `max_shard_bytes` gets a shard of its own.

    The state carries over between calls, so a stream of any length (batches of an executor's
    sorted partition) is packed exactly as one list would be by :func:`plan_shards`.
    """

    def __init__(self, samples_per_shard: int, max_shard_bytes: int | None = None) -> None:
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.samples_per_shard, self.max_shard_bytes = samples_per_shard, max_shard_bytes
        self.shard, self.count, self.size = 0, 0, 0

    def place(self, sample_bytes: Iterable[int]) -> tuple[list[int], list[int]]:
        """Place the next samples, in order: (their shard numbers, their 0-based positions
        in those shards)."""
        shard, count, size = self.shard, self.count, self.size
        per, cap = self.samples_per_shard, self.max_shard_bytes
        shards: list[int] = []
        positions: list[int] = []
        for b in sample_bytes:
            if count >= per or (cap is not None and count > 0 and size + b > cap):
                shard, count, size = shard + 1, 0, 0
            shards.append(shard)
            positions.append(count)
            count += 1
            size += b
        self.shard, self.count, self.size = shard, count, size
        return shards, positions


def plan_shards(
    sample_bytes: Sequence[int], samples_per_shard: int, max_shard_bytes: int | None = None
) -> list[int]:
    """Shard number of each sample, in order (:class:`ShardPacker` over the list). Pure and
    deterministic: the same sizes give the same assignment."""
    return ShardPacker(samples_per_shard, max_shard_bytes).place(sample_bytes)[0]


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: its file name, samples, size and sha256 of its bytes."""

    name: str
    samples: int
    bytes: int
    sha256: str
    first_key: str | None
    last_key: str | None


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what goes through."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        self._f.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def sync_close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()


class ShardWriter:
    """Write one shard: `add()` samples, then `close()` renames `<final>.tmp` to `<final>`.

    For an `s3://`/`s3a://` path, `close()` instead uploads the locally spooled shard in one
    PUT to the final key (nothing is written under any other key). Use as a context manager:
    on an exception the temporary file is removed and nothing appears under the final name.
    """

    def __init__(self, path: str | Path) -> None:
        self.remote: str | None = str(path) if is_object_store(str(path)) else None
        if self.remote is not None:
            fd, spool = tempfile.mkstemp(prefix="curator-shard-", suffix=".tar")
            os.close(fd)
            self.path = Path(self.remote.rsplit("/", 1)[-1])  # .name is the shard's name
            self.tmp_path = Path(spool)
        else:
            self.path = Path(path)
            self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._raw = _HashingFile(self.tmp_path)
        self._tar = tarfile.open(fileobj=self._raw, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self._keys: set[str] = set()
        self.samples = 0
        self.first_key: str | None = None
        self.last_key: str | None = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        # typeshed omits TarFile.closed (undocumented, set in TarFile.__init__)
        elif not self._tar.closed:  # type: ignore[attr-defined]
            self.close()

    def add(self, key: str, members: dict[str, bytes]) -> str:
        """Add one sample: `members` maps an extension (`jpg`, `txt`, `json`) to bytes.

        The key is sanitised; members are written in sorted extension order (as webdataset's
        TarWriter does). Returns the key used. A key already in this shard is an error.
        """
        safe = sanitize_key(key)
        if safe in self._keys:
            raise ValueError(f"key {key!r} (as {safe!r}) is already in {self.path.name}")
        for ext in members:
            if not re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", ext):
                raise ValueError(f"member extension {ext!r} is not a plain extension")
        for ext in sorted(members):
            data = members[ext]
            info = tarfile.TarInfo(f"{safe}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o644, EXPORT_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.add(safe)
        self.samples += 1
        self.first_key = self.first_key or safe
        self.last_key = safe
        return safe

    def close(self) -> ShardInfo:
        """Finish the tar, fsync, rename to the final name; return what was written."""
        self._tar.close()
        self._raw.sync_close()
        if self.remote is not None:
            try:
                fs, key = url_to_fs(self.remote)
                fs.put_file(str(self.tmp_path), key, chunksize=_ONE_PUT_CHUNK)
            finally:
                self.tmp_path.unlink(missing_ok=True)
        else:
            os.replace(self.tmp_path, self.path)
        return ShardInfo(
            name=self.path.name,
            samples=self.samples,
            bytes=self._raw.size,
            sha256=self._raw.sha.hexdigest(),
            first_key=self.first_key,
            last_key=self.last_key,
        )

    def abort(self) -> None:
        """Drop the shard: close and remove the temporary file."""
        try:
            self._tar.close()
        except Exception:  # noqa: BLE001 - the tar may be half written; it is removed anyway
            pass
        self._raw.close()
        self.tmp_path.unlink(missing_ok=True)
