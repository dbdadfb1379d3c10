"""Stream one WebDataset tar shard into ingestable samples and quarantine items.

A shard is read once, as a stream of tar members grouped by key (webdataset's rule: the key
is the member path up to the first dot of its basename, members of a sample are consecutive).
Only the current sample is held in memory, and a member is read only after its header size
has been checked. Bad data never raises: every problem becomes a QuarantinedItem (with a short
reason code) or a warning on a sample that is still ingested, so nothing disappears silently.
Caption and JSON bytes become text in curator_udfs/sample_text.py.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import fsspec

from curator_udfs.image_probe import (
    IMAGE_EXTENSIONS,
    ImageRejected,
    ext_matches_format,
    probe_image,
)
from curator_udfs.sample_text import decode_caption, parse_meta
from curator_udfs.shard_listing import storage_options
from curator_udfs.tar_members import TarMembers

__all__ = [
    "IngestLimits",
    "IngestedSample",
    "QuarantinedItem",
    "ShardOutcome",
    "ShardReader",
    "split_member_name",
]


@dataclass(frozen=True)
class IngestLimits:
    """Size caps for untrusted input (pixels from the header, bytes from the tar header)."""

    max_image_pixels: int = 89_478_485
    max_image_bytes: int = 50_000_000
    max_caption_bytes: int = 1_000_000
    max_json_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_image_pixels", "max_image_bytes", "max_caption_bytes", "max_json_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"IngestLimits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class IngestedSample:
    """A sample that goes to the images table: original image bytes plus caption and meta."""

    key: str
    image: bytes
    image_ext: str
    image_format: str
    width: int
    height: int
    image_sha256: str
    caption: str | None
    meta: str | None
    warnings: list[str]
    members: list[str]
    # where the image's bytes start in the shard file; None when the shard is compressed
    # (an offset into the decompressed stream is no byte range of the file)
    image_offset: int | None = None


@dataclass
class QuarantinedItem:
    """A sample, member or whole shard that could not be ingested, with why and how big."""

    key: str
    member: str | None
    reason: str
    detail: str
    size: int


@dataclass
class ShardOutcome:
    """Per-shard totals for the shards table; ``samples == images + quarantined``."""

    status: str
    error: str | None
    samples: int
    images: int
    quarantined: int
    bytes_read: int


def split_member_name(name: str) -> tuple[str, str]:
    """Split a member name into (key, lowercased extension) like webdataset does.

    ``a/b/000123.jpg`` -> (``a/b/000123``, ``jpg``); ``x.seg.PNG`` -> (``x``, ``seg.png``);
    a basename without a dot gives an empty extension.
    """
    directory, slash, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return directory + slash + stem, ext.lower()


class _CountingReader:
    """Read-only file wrapper counting the raw bytes read from the shard (read-ahead too)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        return data


# typeshed omits these undocumented HeaderError subclasses (present since Python 3.2).
_CUT_HEADER_ERRORS = (
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)
# Errors of the byte stream itself (I/O, compression); anything else is a bug and propagates.
_STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _member_kind(info: tarfile.TarInfo) -> str:
    for kind in ("issym", "islnk", "ischr", "isblk", "isfifo"):
        if getattr(info, kind)():
            return {
                "issym": "symlink",
                "islnk": "hardlink",
                "ischr": "character device",
                "isblk": "block device",
                "isfifo": "fifo",
            }[kind]
    return f"special (type {info.type!r})"


@dataclass
class _Sample:
    """Members gathered so far for one key; bytes are dropped as soon as it is doomed."""

    key: str
    members: list[str] = field(default_factory=list)
    size: int = 0
    image_member: str | None = None
    image_ext: str = ""
    image_size: int = 0
    image_offset: int | None = None
    image: bytes | None = None
    caption_raw: bytes | None = None
    caption_truncated: bool = False
    json_raw: bytes | None = None
    json_member: str | None = None
    json_too_large: bool = False
    txt_member: str | None = None
    warnings: list[str] = field(default_factory=list)
    problem: QuarantinedItem | None = None

    def fail(self, reason: str, member: str | None, detail: str, size: int) -> None:
        """Mark the sample quarantined (the first problem wins) and free what it holds."""
        if self.problem is None:
            self.problem = QuarantinedItem(self.key, member, reason, detail, size)
        self.image = self.caption_raw = self.json_raw = None

    def second(self, reason: str, what: str, first: str | None, member: str, size: int) -> bool:
        """Quarantine the sample when it already has a `what` member (`first`); True if so."""
        if first is not None:
            self.fail(reason, member, f"second {what} member (first {first!r})", size)
        return first is not None


class ShardReader:
    """Iterate a shard's samples in order: IngestedSample or QuarantinedItem, never raising.

    After iteration (also when the consumer stops early) ``outcome`` holds the shard totals:
    status ``ok``, ``truncated`` (the stream ended mid-archive; earlier samples are kept) or
    ``failed`` (not a tar, or an I/O error).
    """

    def __init__(self, shard_uri: str, limits: IngestLimits | None = None) -> None:
        self.shard_uri = shard_uri
        self.limits = limits if limits is not None else IngestLimits()
        self.outcome: ShardOutcome | None = None
        self._status = "ok"
        self._error: str | None = None
        self._counter: _CountingReader | None = None

    def __iter__(self) -> Iterator[IngestedSample | QuarantinedItem]:
        self._status, self._error, self._counter = "ok", None, None
        self.outcome = None
        images = quarantined = 0
        try:
            for item in self._read_shard():
                if isinstance(item, IngestedSample):
                    images += 1
                else:
                    quarantined += 1
                yield item
        finally:
            bytes_read = self._counter.bytes_read if self._counter is not None else 0
            self.outcome = ShardOutcome(
                status=self._status,
                error=self._error,
                samples=images + quarantined,
                images=images,
                quarantined=quarantined,
                bytes_read=bytes_read,
            )

    # -- shard level -------------------------------------------------------------------

    def _shard_failed(self, status: str, reason: str, detail: str) -> QuarantinedItem:
        self._status, self._error = status, f"{reason}: {detail}"
        return QuarantinedItem(key="", member=None, reason=reason, detail=detail, size=0)

    def _read_shard(self) -> Iterator[IngestedSample | QuarantinedItem]:
        try:
            raw = fsspec.open(self.shard_uri, "rb", **storage_options(self.shard_uri)).open()
        except Exception as exc:  # noqa: BLE001 - any filesystem failure fails this shard only
            yield self._shard_failed("failed", "read_error", f"cannot open: {_describe(exc)}")
            return
        try:
            self._counter = _CountingReader(raw)
            yield from self._read_tar(self._counter)
        finally:
            try:
                raw.close()
            except Exception:  # noqa: BLE001 - closing a read-only stream cannot lose data
                pass

    def _read_tar(self, stream: _CountingReader) -> Iterator[IngestedSample | QuarantinedItem]:
        try:
            tar = TarMembers(stream)
        except tarfile.TarError as exc:
            yield self._shard_failed("failed", "not_a_tar", _describe(exc))
            return
        except _STREAM_ERRORS as exc:
            yield self._shard_failed("failed", "read_error", _describe(exc))
            return
        header_errors = tar.header_errors
        current: _Sample | None = None
        seen: set[str] = set()
        try:
            while True:
                header_errors.clear()
                info = tar.next()
                if info is None:
                    break
                if info.isdir():
                    if current is not None:
                        yield self._finish(current)
                        current = None
                    yield QuarantinedItem(
                        info.name, info.name, "directory_member", "directory entry in a shard", 0
                    )
                    continue
                key, ext = split_member_name(info.name)
                if current is None or key != current.key:
                    if current is not None:
                        yield self._finish(current)
                    current = _Sample(key)
                    if key in seen:
                        current.fail(
                            "duplicate_key",
                            None,
                            f"key {key!r} already appeared earlier in this shard",
                            0,
                        )
                    seen.add(key)
                self._add_member(tar, current, info, ext)
        except _STREAM_ERRORS as exc:
            cut = isinstance(exc, EOFError) or "unexpected end of data" in str(exc)
            cut = cut or any(isinstance(e, _CUT_HEADER_ERRORS) for e in header_errors)
            if cut:
                yield self._broken(current, "truncated", "truncated_tar", _describe(exc))
            else:
                yield self._broken(current, "failed", "read_error", _describe(exc))
            return
        end = header_errors[-1] if header_errors else None
        # typeshed omits the undocumented tarfile.EOFHeaderError (present since Python 3.2)
        if end is None or isinstance(end, tarfile.EOFHeaderError):  # type: ignore[attr-defined]
            if current is not None:
                yield self._finish(current)
            return
        # A short, missing or garbled header after the first member: the archive is cut.
        detail = f"archive ends without end-of-archive marker ({_describe(end)})"
        yield self._broken(current, "truncated", "truncated_tar", detail)

    def _broken(
        self, current: _Sample | None, status: str, reason: str, detail: str
    ) -> QuarantinedItem:
        """The item for the sample being read when the stream broke (key "" if none)."""
        self._status, self._error = status, f"{reason}: {detail}"
        if current is None:
            return QuarantinedItem("", None, reason, detail, 0)
        member = current.members[-1] if current.members else None
        return QuarantinedItem(current.key, member, reason, detail, current.size)

    # -- sample level ------------------------------------------------------------------

    def _add_member(
        self, tar: TarMembers, sample: _Sample, info: tarfile.TarInfo, ext: str
    ) -> None:
        """Record one member; read its bytes only when they are needed and within limits."""
        name, size, limits = info.name, max(info.size, 0), self.limits
        duplicate = name in sample.members
        sample.members.append(name)
        sample.size += size
        if duplicate:
            sample.fail("duplicate_member", name, "member name appears twice in the sample", size)
        if not info.isreg():
            sample.fail(
                "link_member", name, f"{_member_kind(info)} member; links are never followed", size
            )
        if sample.problem is not None:
            return  # doomed sample: read nothing more of it
        if ext in IMAGE_EXTENSIONS:
            if sample.second("multiple_images", "image", sample.image_member, name, size):
                return
            sample.image_member, sample.image_ext, sample.image_size = name, ext, size
            sample.image_offset = tar.data_offset(info)
            if size > limits.max_image_bytes:
                sample.fail(
                    "image_too_large",
                    name,
                    f"{size} bytes > max_image_bytes {limits.max_image_bytes}",
                    size,
                )
                return
            sample.image = _read(tar, info, size)
        elif ext == "txt":
            if sample.second("duplicate_member", "caption", sample.txt_member, name, size):
                return
            sample.txt_member = name
            sample.caption_truncated = size > limits.max_caption_bytes
            sample.caption_raw = _read(tar, info, min(size, limits.max_caption_bytes))
        elif ext == "json":
            if sample.second("duplicate_member", "json", sample.json_member, name, size):
                return
            sample.json_member = name
            if size > limits.max_json_bytes:
                sample.json_too_large = True
            else:
                sample.json_raw = _read(tar, info, size)
        else:
            sample.warnings.append(f"ignored_member:{ext}")

    def _finish(self, sample: _Sample) -> IngestedSample | QuarantinedItem:
        """Turn a complete sample into an IngestedSample, or quarantine it."""
        if sample.problem is not None:
            return sample.problem
        if sample.image_member is None or sample.image is None:
            return QuarantinedItem(
                sample.key,
                None,
                "missing_image",
                f"no image member among {sample.members}",
                sample.size,
            )
        try:
            info = probe_image(sample.image, max_pixels=self.limits.max_image_pixels)
        except ImageRejected as exc:
            return QuarantinedItem(
                sample.key, sample.image_member, exc.reason, exc.detail, sample.image_size
            )
        warnings = list(sample.warnings)
        if not ext_matches_format(sample.image_ext, info.format):
            warnings.append("extension_mismatch")
        caption = None
        if sample.caption_raw is not None:
            caption, caption_warnings = decode_caption(sample.caption_raw, sample.caption_truncated)
            warnings.extend(caption_warnings)
        meta = None
        if sample.json_too_large:
            warnings.append("json_too_large")
        elif sample.json_raw is not None:
            meta = parse_meta(sample.json_raw)
            if meta is None:
                warnings.append("invalid_json")
        return IngestedSample(
            key=sample.key,
            image=sample.image,
            image_ext=sample.image_ext,
            image_format=info.format,
            width=info.width,
            height=info.height,
            image_sha256=hashlib.sha256(sample.image).hexdigest(),
            caption=caption,
            meta=meta,
            warnings=warnings,
            members=sample.members,
            image_offset=sample.image_offset,
        )


def _read(tar: TarMembers, info: tarfile.TarInfo, size: int) -> bytes:
    """Read the first ``size`` bytes of the current member (one place, so tests can spy)."""
    return tar.read(info, size)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
