"""Executor side of ingest: shard rows in, Arrow batches of images / quarantine / shard rows out.

One input row per shard; every output row carries `kind` (image | quarantine | shard), so one
pass over a shard feeds all three tables (`image_rows_only`: the image rows flow on to the
`images` write, the others go to the driver through an accumulator). Caption signals
(language, word and character counts: curator_udfs.caption_signals) are computed here, on the
executor, per sample. Memory stays bounded by `max_batch_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from curator_udfs.caption_signals import caption_signals
from curator_udfs.ids import sample_id
from curator_udfs.shard_reader import IngestedSample, IngestLimits, ShardReader

INGEST_ROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("shard_uri", pa.string()),
        ("ordinal", pa.int64()),
        ("sample_id", pa.string()),
        ("key", pa.string()),
        ("image", pa.binary()),
        ("image_format", pa.string()),
        ("image_ext", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_bytes", pa.int64()),
        ("image_offset", pa.int64()),
        ("image_sha256", pa.string()),
        ("caption", pa.string()),
        ("meta", pa.string()),
        ("caption_language", pa.string()),
        ("caption_language_score", pa.float64()),
        ("caption_words", pa.int32()),
        ("caption_chars", pa.int32()),
        ("warnings", pa.list_(pa.string())),
        ("member", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("samples", pa.int64()),
        ("images", pa.int64()),
        ("quarantined", pa.int64()),
        ("bytes_read", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("byte_mode", pa.string()),
    ]
)

# The same schema as a Spark DDL string, for mapInArrow.
INGEST_ROW_DDL = (
    "kind STRING, shard_uri STRING, ordinal BIGINT, sample_id STRING, key STRING, image BINARY, "
    "image_format STRING, image_ext STRING, width INT, height INT, image_bytes BIGINT, "
    "image_offset BIGINT, image_sha256 STRING, caption STRING, meta STRING, "
    "caption_language STRING, caption_language_score DOUBLE, caption_words INT, caption_chars INT, "
    "warnings ARRAY<STRING>, member STRING, "
    "reason STRING, detail STRING, size BIGINT, mtime DOUBLE, samples BIGINT, images BIGINT, "
    "quarantined BIGINT, bytes_read BIGINT, status STRING, error STRING, at TIMESTAMP, "
    "run_id STRING, byte_mode STRING"
)


class RowSink(Protocol):
    """Where an executor sends the few rows that are not images (a Spark accumulator)."""

    def add(self, term: Any) -> None: ...


class _Rows:
    """Column buffers that flush into a RecordBatch."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in INGEST_ROW_SCHEMA}
        self.nbytes = 0

    def add(self, **values: object) -> None:
        for name, col in self.cols.items():
            col.append(values.get(name))

    def __len__(self) -> int:
        return len(self.cols["kind"])

    def flush(self) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pydict(self.cols, schema=INGEST_ROW_SCHEMA)
        self.cols = {f.name: [] for f in INGEST_ROW_SCHEMA}
        self.nbytes = 0
        return batch


def ingest_shard_rows(
    batches: Iterator[pa.RecordBatch],
    *,
    limits: IngestLimits,
    run_id: str,
    at: datetime,
    max_batch_bytes: int = 32 << 20,
    max_batch_rows: int = 2048,
    reference: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Read every shard named in the input batches (columns shard_uri, size, mtime).

    With `reference`, image rows keep the member's offset (and length, `image_bytes`) in the
    shard instead of the bytes, where the shard has byte ranges (it is not compressed).
    """
    rows = _Rows()
    for batch in batches:
        for shard in batch.to_pylist():
            uri = shard["shard_uri"]
            reader = ShardReader(uri, limits)
            referenced = 0
            for ordinal, item in enumerate(reader):
                common = {
                    "shard_uri": uri,
                    "ordinal": ordinal,
                    "key": item.key,
                    "at": at,
                    "run_id": run_id,
                }
                if isinstance(item, IngestedSample):
                    by_ref = reference and item.image_offset is not None
                    referenced += by_ref
                    rows.add(
                        kind="image",
                        sample_id=sample_id(uri, item.key),
                        image=None if by_ref else item.image,
                        image_offset=item.image_offset,
                        image_format=item.image_format,
                        image_ext=item.image_ext,
                        width=item.width,
                        height=item.height,
                        image_bytes=len(item.image),
                        image_sha256=item.image_sha256,
                        caption=item.caption,
                        meta=item.meta,
                        **caption_signals(item.caption).as_row(),
                        warnings=list(item.warnings),
                        **common,
                    )
                    rows.nbytes += 0 if by_ref else len(item.image)
                else:
                    rows.add(
                        kind="quarantine",
                        member=item.member,
                        reason=item.reason,
                        detail=item.detail,
                        size=item.size,
                        **common,
                    )
                if rows.nbytes >= max_batch_bytes or len(rows) >= max_batch_rows:
                    yield rows.flush()
            out = reader.outcome
            assert out is not None  # set by ShardReader.__iter__ once iteration ends
            rows.add(
                kind="shard",
                shard_uri=uri,
                size=shard.get("size"),
                mtime=shard.get("mtime"),
                samples=out.samples,
                images=out.images,
                quarantined=out.quarantined,
                bytes_read=out.bytes_read,
                status=out.status,
                error=out.error,
                at=at,
                run_id=run_id,
                byte_mode="reference" if referenced else "copy",
            )
    if len(rows):
        yield rows.flush()


def image_rows_only(
    batches: Iterator[pa.RecordBatch], *, side: RowSink, **read: Any
) -> Iterator[pa.RecordBatch]:
    """`ingest_shard_rows(batches, **read)`'s image rows; its quarantine and shard rows go to
    `side`, each output batch's as a list of one Arrow IPC stream (`rows_from_ipc` reads them).

    So the image bytes flow once, straight into the `images` write, and the small rows reach
    the driver with each task's result: nothing has to be cached to feed three tables."""
    for batch in ingest_shard_rows(batches, **read):
        is_image = pc.equal(batch.column("kind"), "image")
        others = batch.filter(pc.invert(is_image))
        if others.num_rows:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, INGEST_ROW_SCHEMA) as writer:
                writer.write_batch(others)
            side.add([sink.getvalue().to_pybytes()])
        yield batch.filter(is_image)


class StreamList:
    """The accumulator parameter of `image_rows_only`'s side channel: lists of Arrow IPC
    streams, concatenated on the driver (Spark asks only for `zero` and `addInPlace`). Defined
    here, not in the job, because Spark pickles it to the executors with the accumulator."""

    def zero(self, value: list[bytes]) -> list[bytes]:
        return []

    def addInPlace(self, value1: list[bytes], value2: list[bytes]) -> list[bytes]:  # noqa: N802
        value1.extend(value2)
        return value1


def rows_from_ipc(streams: list[bytes]) -> pa.Table:
    """The rows `image_rows_only` sent, each (kind, shard_uri, ordinal) once: a task computed
    twice (a lost executor, a retried stage) sends its rows twice."""
    tables = [pa.ipc.open_stream(s).read_all() for s in streams]
    rows = pa.concat_tables(tables) if tables else INGEST_ROW_SCHEMA.empty_table()
    keys = ["kind", "shard_uri", "ordinal"]
    indexed = rows.select(keys).append_column("row", pa.array(range(rows.num_rows), pa.int64()))
    first = indexed.group_by(keys, use_threads=False).aggregate([("row", "min")])
    firsts = first.column("row_min")  # in the order they came
    return rows.take(firsts.take(pc.array_sort_indices(firsts)))
