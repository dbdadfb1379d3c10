"""The export job's shard plan and shard writing: curated rows → WebDataset shards on disk.

The plan comes from sizes alone: :func:`plan_frames` runs in the executor tasks over the rows'
(sample_id, range, sizes), sorted by range then sample_id, and packs each range with
:class:`curator_udfs.wds_writer.ShardPacker` (:func:`sample_tar_estimate` per sample), giving
each sample its shard within its range and its position in it; the job numbers the ranges'
shards in order (spark_jobs.export.shard_plan), and nothing per sample goes to the driver.
:func:`task_of_shard` gives each writing task a contiguous range of shards. Each task then calls
:func:`write_shard_range` on its rows, sorted by (task, shard, sample_id), and writes every
shard with :class:`curator_udfs.wds_writer.ShardWriter` (to `NNNNN.tar.tmp`, then renamed;
on object storage one PUT to the final key). Once all shards are written the driver calls
:func:`remove_leftovers`, so only this export's shards remain. Rows are plain mappings of
column name to value (a Spark ``Row.asDict()``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curator_udfs.shard_listing import is_object_store, url_to_fs
from curator_udfs.wds_writer import (
    ShardPacker,
    ShardWriter,
    Sizes,
    image_extension,
    sample_tar_bytes,
    shard_name,
)

__all__ = [
    "JSON_OVERHEAD",
    "NOT_IN_JSON",
    "PLAN_SCHEMA",
    "plan_frames",
    "remove_leftovers",
    "sample_members",
    "sample_tar_estimate",
    "task_of_shard",
    "write_shard_range",
]

# Columns left out of a sample's `.json`: the bytes and caption have members of their own, meta
# is added parsed, the rest is bookkeeping of the curated table or of the export plan.
NOT_IN_JSON = ("image", "run_id", "curated_at", "caption", "meta", "_shard", "_task")
JSON_OVERHEAD = 600  # bytes a `.json` holds beyond `meta`: the other columns, roughly

ShardKey = tuple[int, int, str]  # (task, shard, sample_id)
PLAN_SCHEMA = "sample_id STRING, _range STRING, _local INT, _pos INT"


def sample_tar_estimate(image_bytes: Sizes, caption_bytes: Sizes, meta_bytes: Sizes) -> Sizes:
    """Bytes one sample is planned to take in a shard (a target, not an exact bound); arrays of
    sizes give an array of estimates.

    The `.json` member is estimated as meta + :data:`JSON_OVERHEAD`, since its exact size is
    only known once the row is serialised on an executor.
    """
    return sample_tar_bytes([image_bytes, caption_bytes, meta_bytes + JSON_OVERHEAD])


def task_of_shard(shard: int, n_shards: int, n_tasks: int) -> int:
    """The task that writes `shard`: contiguous, near-equal ranges of shards per task."""
    return shard * n_tasks // max(n_shards, 1)


def plan_frames(
    frames: Iterable[pd.DataFrame], samples_per_shard: int, max_shard_bytes: int | None
) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` over (sample_id, _range, img, txt, meta byte sizes) rows sorted by
    (_range, sample_id), every row of a range in this partition: each row's shard within its
    range (``_local``, from 0) and 0-based position in it (:data:`PLAN_SCHEMA`).

    Each range is packed on its own, with the packer's state carried across batches, so a
    range's plan is the one :func:`curator_udfs.wds_writer.plan_shards` gives for its whole
    sorted list, whatever the batches: the same rows always give the same shards.
    """
    packer: ShardPacker | None = None
    current: object = None
    for pdf in frames:
        ranges = pdf["_range"].to_numpy()
        # sample_tar_estimate's arithmetic is elementwise: one numpy pass per batch
        est = sample_tar_estimate(
            *[pdf[c].to_numpy(dtype=np.int64) for c in ("img", "txt", "meta")]
        )
        starts = [0, *(np.flatnonzero(ranges[1:] != ranges[:-1]) + 1).tolist(), len(pdf)]
        shards: list[int] = []
        positions: list[int] = []
        for a, b in zip(starts, starts[1:], strict=False):
            if a == b:
                continue
            if packer is None or ranges[a] != current:
                packer, current = ShardPacker(samples_per_shard, max_shard_bytes), ranges[a]
            got_shards, got_positions = packer.place(est[a:b].tolist())
            shards += got_shards
            positions += got_positions
        yield pd.DataFrame(
            {
                "sample_id": pdf["sample_id"],
                "_range": pdf["_range"],
                "_local": np.asarray(shards, dtype=np.int32),
                "_pos": np.asarray(positions, dtype=np.int32),
            }
        )


def sample_members(row: Mapping[str, Any]) -> dict[str, bytes]:
    """The members of one exported sample: image bytes, `.txt` caption, `.json` metadata.

    The image extension comes from the detected format (else the original extension); the
    `.json` holds every column but :data:`NOT_IN_JSON`, plus `meta` parsed from JSON when it
    is a JSON string (kept as the original string otherwise).
    """
    members = {image_extension(row.get("image_format"), row.get("image_ext")): bytes(row["image"])}
    if row.get("caption") is not None:
        members["txt"] = str(row["caption"]).encode("utf-8")
    meta: Any = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            pass  # kept as the original string
    doc = {k: v for k, v in row.items() if k not in NOT_IN_JSON}
    doc["meta"] = meta
    members["json"] = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False).encode()
    return members


def write_shard_range(
    rows: Iterable[tuple[ShardKey, Mapping[str, Any]]],
    out_dir: str | Path,
    fail_at_shard: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Write the shards of one task from rows sorted by (task, shard, sample_id).

    Yields one dict per finished shard (the fields of :class:`~curator_udfs.wds_writer.ShardInfo`).
    On any error the shard being written is dropped (its `.tmp` removed), so only complete
    shards ever have a final name. `fail_at_shard` is a test hook: raise after the first
    sample of that shard, as a crash would.
    """
    writer: ShardWriter | None = None
    current: int | None = None
    try:
        for (_task, shard, sid), row in rows:
            if shard != current:
                if writer is not None:
                    yield vars(writer.close())
                writer, current = ShardWriter(_join(out_dir, shard_name(shard))), shard
            assert writer is not None
            writer.add(sid, sample_members(row))
            if fail_at_shard is not None and shard == fail_at_shard:
                raise RuntimeError(f"injected failure while writing shard {shard} (test hook)")
        if writer is not None:
            yield vars(writer.close())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _join(out_dir: str | Path, name: str) -> str | Path:
    """`out_dir/name`: a Path for a local directory, a string for an object-store prefix."""
    if is_object_store(str(out_dir)):
        return f"{str(out_dir).rstrip('/')}/{name}"
    return Path(out_dir) / name


def _is_leftover(name: str, keep: set[str]) -> bool:
    stale_shard = name.endswith(".tar") and name not in keep and name[: -len(".tar")].isdigit()
    return name.endswith(".tmp") or stale_shard


def remove_leftovers(out: str | Path, keep: set[str]) -> list[str]:
    """Delete `*.tmp` files and numbered shards (`NNNNN.tar`) not in `keep`; return their names.

    Other files (a README, notes) are left alone: only what an export writes is removed.
    `out` may be an `s3://`/`s3a://` prefix (the objects directly below it).
    """
    if is_object_store(str(out)):
        fs, prefix = url_to_fs(str(out))
        try:
            entries = fs.ls(prefix, detail=True)
        except FileNotFoundError:
            return []
        names = sorted(
            str(e["name"]).rsplit("/", 1)[-1] for e in entries if e.get("type") != "directory"
        )
        stale = [n for n in names if _is_leftover(n, keep)]
        for n in stale:
            fs.rm_file(f"{prefix.rstrip('/')}/{n}")
        return stale
    out = Path(out)
    removed = []
    for p in sorted(out.iterdir()):
        stale_shard = p.suffix == ".tar" and p.name not in keep and p.stem.isdigit()
        if p.is_file() and (p.name.endswith(".tmp") or stale_shard):
            p.unlink()
            removed.append(p.name)
    return removed
