"""Spark glue for the Python API: `TimmImageEmbedder(...)(images_df)` and friends.

`curator_udfs` must not import pyspark at module level, so `ImageEmbedder.__call__` imports this
module lazily. The functions keep every input column and append the new ones, using the same
executor-side batch functions as the embed and classify jobs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import StructType

from curator_udfs.embed_batches import (
    EmbedSpec,
    HeadSpec,
    classify_output_schema,
    embed_output_schema,
    make_classify_fn,
    make_embed_fn,
)
from curator_udfs.embedders import ImageEmbedder, TimmImageEmbedder


def _appended_schema(df: DataFrame, ddl: str) -> StructType:
    extra = StructType.fromDDL(ddl)
    clash = [f.name for f in extra.fields if f.name != "sample_id" and f.name in df.columns]
    if clash:
        raise ValueError(f"input already has column(s) {clash}; drop or rename them first")
    return StructType(df.schema.fields + [f for f in extra.fields if f.name != "sample_id"])


def _with_originals(fn: Any, column: str, out_name: str) -> Any:
    """Wrap a batch function so each output frame is the input frame plus the new columns."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        originals: list[pd.DataFrame] = []

        def feed() -> Iterator[pd.DataFrame]:
            for frame in frames:
                originals.append(frame)
                ids = np.arange(len(frame)).astype(str)
                yield pd.DataFrame({"sample_id": ids, out_name: frame[column].to_numpy()})

        for out in fn(feed()):
            orig = originals.pop(0).reset_index(drop=True)
            yield pd.concat([orig, out.drop(columns=["sample_id"])], axis=1)

    return run


def embed_dataframe(df: DataFrame, spec: EmbedSpec, *, image_col: str = "image") -> DataFrame:
    """`df` plus `embedding` (array<float>), one double per head, and `error` per row."""
    if image_col not in df.columns:
        raise ValueError(f"no column {image_col!r} with encoded image bytes in {df.columns}")
    schema = _appended_schema(df, embed_output_schema(spec))
    return df.mapInPandas(_with_originals(make_embed_fn(spec), image_col, "image"), schema)


def score_dataframe(
    df: DataFrame, spec: EmbedSpec, *, embedding_col: str = "embedding"
) -> DataFrame:
    """`df` plus one double column per head of `spec`, scored from `embedding_col`."""
    if embedding_col not in df.columns:
        raise ValueError(f"no column {embedding_col!r} with embeddings in {df.columns}")
    schema = _appended_schema(df, classify_output_schema(spec))
    fn = _with_originals(make_classify_fn(spec), embedding_col, "embedding")
    return df.mapInPandas(fn, schema)


def spec_for(embedder: ImageEmbedder, heads: Sequence[HeadSpec | dict] = ()) -> EmbedSpec:
    """The EmbedSpec that rebuilds `embedder` on executors (custom classes by class path)."""
    common = {
        "batch_size": embedder.batch_size,
        "num_threads_per_worker": embedder.num_threads_per_worker,
        "normalize": embedder.normalize_embeddings,
        "autocast": embedder.autocast,
        "heads": tuple(heads),
    }
    cls = type(embedder)
    path = None if cls is TimmImageEmbedder else f"{cls.__module__}:{cls.__qualname__}"
    return EmbedSpec(
        model_name=getattr(embedder, "model_name", "custom"),
        pretrained=bool(getattr(embedder, "pretrained", False)),
        weights=getattr(embedder, "weights", None),
        embedder_class_path=path,
        **common,
    )
