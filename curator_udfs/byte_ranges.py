"""Reference mode's reader: images read back from their shards as byte ranges, verified.

In reference mode `images` keeps the shard URI, the member's offset and length and its sha256
instead of the bytes. A stage that needs the bytes reads them here: the ranges of one shard
in offset order, in one `cat_ranges` call of the shard's fsspec filesystem (local files and
object stores alike; s3fs fetches the ranges concurrently). Every range is checked against
the sha256 recorded at ingest, so a sample is never processed from the wrong bytes; a shard
whose size or mtime changed since ingest is caught before that, per shard
(:func:`shard_change`), and its samples are quarantined by the job.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import pandas as pd

from curator_udfs.shard_listing import stat_shard, url_to_fs

__all__ = [
    "REFERENCE_COLUMNS",
    "UNREADABLE_REASONS",
    "fill_images",
    "filled_frames",
    "is_missing",
    "shard_change",
    "shard_changes",
]

# What a row needs for its bytes to be read back (besides `image`, NULL when referenced).
REFERENCE_COLUMNS = ("shard_uri", "image_offset", "image_bytes", "image_sha256")
# Quarantine reasons given after ingest, to samples whose bytes can no longer be read.
UNREADABLE_REASONS = ("shard_changed", "shard_unreadable", "image_changed")
MTIME_TOLERANCE = 1e-3  # seconds: object stores and file systems round differently


def shard_change(uri: str, size: int | None, mtime: float | None) -> str | None:
    """Why the shard is no longer the file ingest read ("reason: detail"), None if it is."""
    try:
        now = stat_shard(uri)
    except FileNotFoundError:
        return "shard_unreadable: the shard is gone"
    except Exception as exc:  # noqa: BLE001 - any filesystem failure: cannot trust the bytes
        return f"shard_unreadable: {type(exc).__name__}: {exc}"[:500]
    if size is not None and now.size != size:
        return f"shard_changed: size {now.size} bytes, {size} at ingest"
    if mtime is not None and now.mtime is not None and abs(now.mtime - mtime) > MTIME_TOLERANCE:
        return f"shard_changed: mtime {now.mtime:.3f}, {mtime:.3f} at ingest"
    return None


def shard_changes(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (shard_uri, size, mtime) as recorded → (shard_uri, reason, detail)
    of the shards that changed since."""
    for pdf in frames:
        out: dict[str, list[str]] = {"shard_uri": [], "reason": [], "detail": []}
        for uri, size, mtime in zip(pdf["shard_uri"], pdf["size"], pdf["mtime"], strict=True):
            why = shard_change(uri, _int_or_none(size), _float_or_none(mtime))
            if why is not None:
                reason, _, detail = why.partition(": ")
                out["shard_uri"].append(uri)
                out["reason"].append(reason)
                out["detail"].append(detail)
        yield pd.DataFrame(out, dtype=object)


def fill_images(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `image` read from the shard where only a reference is stored, and an
    `image_error` column: None, or why the bytes could not be used ("reason: detail"; the
    row's `image` is then None). Rows that hold their bytes pass through unread."""
    out = frame.copy()
    images = list(out["image"]) if "image" in out.columns else [None] * len(out)
    errors: list[str | None] = [None] * len(out)
    if "image_offset" not in out.columns:
        out["image"], out["image_error"] = images, errors
        return out
    wanted: dict[str, list[int]] = defaultdict(list)
    for i, (image, offset) in enumerate(zip(images, out["image_offset"], strict=True)):
        if is_missing(image) and not is_missing(offset):
            wanted[str(out["shard_uri"].iat[i])].append(i)
    for uri, rows in wanted.items():
        rows.sort(key=lambda i: int(out["image_offset"].iat[i]))
        starts = [int(out["image_offset"].iat[i]) for i in rows]
        ends = [s + int(out["image_bytes"].iat[i]) for s, i in zip(starts, rows, strict=True)]
        try:
            fs, path = url_to_fs(uri)
            blobs = fs.cat_ranges([path] * len(rows), starts, ends, on_error="return")
        except Exception as exc:  # noqa: BLE001 - the shard cannot be opened at all
            blobs = [exc] * len(rows)
        for i, blob in zip(rows, blobs, strict=True):
            images[i], errors[i] = _verified(blob, out["image_sha256"].iat[i])
    out["image"], out["image_error"] = images, errors
    return out


def filled_frames(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body keeping the input schema: `image` filled by :func:`fill_images`;
    a range that no longer hashes as at ingest raises (a stage that must write every row,
    like export, cannot skip one; changed shards were quarantined before it started)."""
    for pdf in frames:
        filled = fill_images(pdf)
        bad = filled["image_error"].notna()
        if bad.any():
            first = filled.loc[bad].iloc[0]
            raise ValueError(
                f"{int(bad.sum())} images cannot be read back from their shards as ingested, "
                f"e.g. {first['sample_id']}: {first['image_error']}; re-ingest those shards "
                "(ingest.retry_failed does not cover changed shards: remove their `shards` rows)"
            )
        yield filled[list(pdf.columns)]


def _verified(blob: object, sha256: object) -> tuple[bytes | None, str | None]:
    """The range's bytes if they hash to what ingest recorded, else why not."""
    if isinstance(blob, BaseException):
        return None, f"shard_unreadable: {type(blob).__name__}: {blob}"[:500]
    data = bytes(blob)  # type: ignore[call-overload]
    digest = hashlib.sha256(data).hexdigest()
    if is_missing(sha256) or digest != sha256:
        return None, f"image_changed: sha256 {digest[:16]}… of {len(data)} bytes, not as at ingest"
    return data, None


def is_missing(value: object) -> bool:
    """None, NaN or pd.NA (what a missing cell of a pandas frame from Arrow can be); arrays
    and bytes are values."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _int_or_none(value: object) -> int | None:
    return None if is_missing(value) else int(value)  # type: ignore[call-overload]


def _float_or_none(value: object) -> float | None:
    return None if is_missing(value) else float(value)  # type: ignore[arg-type]
