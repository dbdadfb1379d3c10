"""Spark glue for the Python API: executor-side embedders and heads over DataFrames.

The functions keep every input column and append the new ones, using the same executor-side
batch functions as the embed and classify jobs; head scores of rows without an embedding are
NULL (never NaN, which Spark SQL sorts above every number). `spec_for`/`head_spec` turn loaded
objects into the specs executors rebuild them from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import StructType

from curator_udfs.byte_ranges import REFERENCE_COLUMNS
from curator_udfs.classifiers import ClassifierHead, head_class
from curator_udfs.embed_batches import (
    classify_output_schema,
    embed_output_schema,
    make_classify_fn,
    make_embed_fn,
)
from curator_udfs.embedders import ImageEmbedder, TimmImageEmbedder
from curator_udfs.specs import EmbedSpec, HeadSpec, head_columns
from spark_jobs.embed import nan_to_null


def _appended_schema(df: DataFrame, ddl: str) -> StructType:
    # a column-list DDL always parses to a StructType (fromDDL is typed as any DataType)
    extra = cast(StructType, StructType.fromDDL(ddl))
    clash = [f.name for f in extra.fields if f.name != "sample_id" and f.name in df.columns]
    if clash:
        raise ValueError(f"input already has column(s) {clash}; drop or rename them first")
    return StructType(df.schema.fields + [f for f in extra.fields if f.name != "sample_id"])


class _HeadCommon(TypedDict):
    """The HeadSpec fields :func:`head_spec` sets whatever the weights."""

    name: str
    class_path: str | None
    output_column: str | None
    input_dim: int | None


class _EmbedCommon(TypedDict):
    """The EmbedSpec fields :func:`spec_for` takes from any embedder."""

    batch_size: int
    num_threads_per_worker: int
    normalize: bool
    autocast: bool
    decode: str
    signals: bool
    heads: tuple[HeadSpec, ...]


def _with_originals(fn: Any, column: str, out_name: str) -> Any:
    """Wrap a batch function so each output frame is the input frame plus the new columns.

    Images of a reference-mode table travel with their reference columns, which the batch
    function reads the bytes by."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        originals: list[pd.DataFrame] = []

        def feed() -> Iterator[pd.DataFrame]:
            for frame in frames:
                originals.append(frame)
                cols = {"sample_id": np.arange(len(frame)).astype(str)}
                cols[out_name] = frame[column].to_numpy()
                if out_name == "image" and set(REFERENCE_COLUMNS) <= set(frame.columns):
                    cols.update({c: frame[c].to_numpy() for c in REFERENCE_COLUMNS})
                yield pd.DataFrame(cols)

        for out in fn(feed()):
            orig = originals.pop(0).reset_index(drop=True)
            yield pd.concat([orig, out.drop(columns=["sample_id"])], axis=1)

    return run


def embed_dataframe(df: DataFrame, spec: EmbedSpec, *, image_col: str = "image") -> DataFrame:
    """`df` plus `embedding` (array<float>), one double per head, and `error` per row."""
    if image_col not in df.columns:
        raise ValueError(f"no column {image_col!r} with encoded image bytes in {df.columns}")
    schema = _appended_schema(df, embed_output_schema(spec))
    out = df.mapInPandas(_with_originals(make_embed_fn(spec), image_col, "image"), schema)
    return nan_to_null(out, head_columns(spec))


def score_dataframe(
    df: DataFrame, spec: EmbedSpec, *, embedding_col: str = "embedding"
) -> DataFrame:
    """`df` plus one double column per head of `spec`, scored from `embedding_col`."""
    if embedding_col not in df.columns:
        raise ValueError(f"no column {embedding_col!r} with embeddings in {df.columns}")
    schema = _appended_schema(df, classify_output_schema(spec))
    fn = _with_originals(make_classify_fn(spec), embedding_col, "embedding")
    return nan_to_null(df.mapInPandas(fn, schema), head_columns(spec))


def head_spec(head: ClassifierHead) -> HeadSpec:
    """The HeadSpec that rebuilds `head` on executors: its class, width, column and weights.

    Executors rebuild the head from its weights file (or seeded random init), not from the
    driver's object: weights changed in memory after loading are not shipped, and the file
    must be readable on the executors (local mode: always). A class that is not the registered
    one for its name is named by class path, so it must be importable there (`--py-files`).
    """
    source = head.weights_source
    if source is None:
        raise ValueError(
            f"{head.name} head has no weights; call .load_weights(path) (or .load_weights(None) "
            "for the default weights, .init_random() for tests) before applying it"
        )
    cls = _executor_class(type(head))
    try:
        registered = head_class(head.name) is cls
    except ValueError:
        registered = False
    common: _HeadCommon = {
        "name": head.name,
        "class_path": None if registered else f"{cls.__module__}:{cls.__qualname__}",
        "output_column": head.output_column,
        "input_dim": head.input_dim,
    }
    if source == "random":
        return HeadSpec(random_init=True, **common)
    path = Path(source)
    return HeadSpec(weights=str(path.resolve()) if path.exists() else source, **common)


def _head_specs(heads: Sequence[Any]) -> list[HeadSpec | dict]:
    return [head_spec(h) if isinstance(h, ClassifierHead) else h for h in heads]


def _executor_class(cls: type) -> type:
    """The executor-side class behind an API wrapper (`spark_jobs.api.TimmImageEmbedder`)."""
    return cast(type, getattr(cls, "executor_class", cls))


def spec_for(embedder: ImageEmbedder | None, heads: Sequence[Any] = ()) -> EmbedSpec:
    """The EmbedSpec that rebuilds `embedder` (None: heads only) on executors, custom classes
    by class path; `heads` are HeadSpecs, config mappings or loaded ClassifierHead objects."""
    # mappings among them are fine: EmbedSpec.__post_init__ coerces each to a HeadSpec
    head_specs = cast("tuple[HeadSpec, ...]", tuple(_head_specs(heads)))
    if embedder is None:
        return EmbedSpec(heads=head_specs)
    common: _EmbedCommon = {
        "batch_size": embedder.batch_size,
        "num_threads_per_worker": embedder.num_threads_per_worker,
        "normalize": embedder.normalize_embeddings,
        "autocast": embedder.autocast,
        "decode": embedder.decode,
        "signals": embedder.signals,
        "heads": head_specs,
    }
    cls = _executor_class(type(embedder))
    path = None if cls is TimmImageEmbedder else f"{cls.__module__}:{cls.__qualname__}"
    return EmbedSpec(
        model=getattr(embedder, "model_name", "custom"),
        pretrained=bool(getattr(embedder, "pretrained", False)),
        weights=getattr(embedder, "weights", None),
        embedder_class=path,
        **common,
    )
