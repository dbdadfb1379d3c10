"""Executor-side batch functions for the embed and classify jobs (``mapInArrow``/``mapInPandas``).

``make_embed_fn(spec)`` returns ``Iterator[DataFrame] -> Iterator[DataFrame]``: input frames
have ``sample_id``, ``image`` (encoded bytes) and optionally ``caption``; output frames have
``sample_id``, ``embedding`` (float32 array, None when the image failed), one double column per
head (NaN without an embedding), the signal columns ``clip_score``, ``sharpness``,
``colorfulness`` (nullable doubles) and ``grayscale`` (nullable boolean), and ``error`` (None or
the reason). ``clip_score`` is filled when :func:`clip_score_plan` says so (a text tower and a
non-blank caption), else NULL. The embedder and heads load once per
Python worker (``model_cache``, keyed by spec and device) on :func:`current_device`, and the
heads score each batch on that device right after the forward pass.

``make_embed_arrow_fn(spec)`` is the same pass for ``mapInArrow`` (Arrow record batches in
and out; the embed job's choice, as it hands the embeddings over without a per-row conversion).

``make_classify_fn(spec)`` re-scores stored embeddings (``sample_id``, ``embedding``) with the
heads only. Spec objects are small frozen dataclasses: picklable, hashable, cheap to ship.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from .byte_ranges import fill_images, is_missing
from .class_path import import_class
from .classifiers import ClassifierHead, build_head
from .device import current_device
from .embedders import ImageEmbedder, TimmImageEmbedder
from .model_cache import get_or_create
from .specs import SIGNAL_COLUMNS, EmbedSpec, HeadSpec, head_columns, open_clip_name

__all__ = [
    "build_embedder",
    "clip_score_plan",
    "classify_output_schema",
    "embed_arrow_schema",
    "embed_output_schema",
    "make_classify_fn",
    "make_embed_arrow_fn",
    "make_embed_fn",
]

FrameFn = Callable[[Iterable[pd.DataFrame]], Iterator[pd.DataFrame]]
ArrowFn = Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]
_CLASSIFY_CHUNK_ROWS = 65_536
_MAX_LIST_VALUES = 2**31 - 1  # int32 list offsets: floats per Arrow batch at most


def embed_output_schema(spec: EmbedSpec) -> str:
    """DDL schema of :func:`make_embed_fn` frames (for ``mapInPandas``)."""
    cols = "".join(f", {c} double" for c in head_columns(spec))
    signals = "".join(f", {c} {t.lower()}" for c, t in SIGNAL_COLUMNS)
    return f"sample_id string, embedding array<float>{cols}{signals}, error string"


def classify_output_schema(spec: EmbedSpec) -> str:
    """DDL schema of :func:`make_classify_fn` frames."""
    cols = "".join(f", {c} double" for c in head_columns(spec))
    return f"sample_id string{cols}"


def build_embedder(spec: EmbedSpec) -> ImageEmbedder:
    """Instantiate (not load) the embedder: timm by default, open_clip for ``open_clip:…``
    model names, or ``embedder_class``.

    A custom class gets the common keyword arguments, plus ``model_name`` (the spec's
    ``model``: timm's own name for it), ``pretrained`` and ``weights`` when its ``__init__``
    names them.
    """
    cls: type[ImageEmbedder] = TimmImageEmbedder
    if open_clip_name(spec.model) is not None:
        from .open_clip_embedder import OpenClipEmbedder

        cls = OpenClipEmbedder
    if spec.embedder_class:
        cls = import_class(spec.embedder_class, ImageEmbedder, "embed.embedder_class")
    kwargs: dict[str, Any] = {
        "batch_size": spec.batch_size,
        "num_threads_per_worker": spec.num_threads_per_worker,
        "normalize_embeddings": spec.normalize,
        "autocast": spec.autocast,
    }
    params = inspect.signature(cls.__init__).parameters
    optional = {
        "model_name": spec.model,
        "pretrained": spec.pretrained,
        "weights": spec.weights,
    }
    kwargs.update({k: v for k, v in optional.items() if k in params})
    embedder = cls(**kwargs)
    embedder.decode = spec.decode
    embedder.signals = spec.signals
    return embedder


def clip_score_plan(spec: EmbedSpec) -> tuple[bool, str]:
    """Whether the embed pass computes clip_score, and a one-line reason for the summary.

    ``spec.text`` None = when the embedder has a text tower; True without one is a ValueError
    (a configuration error: nothing could fill the column).
    """
    if spec.text is False:
        return False, "NULL: embed.text is false"
    embedder = build_embedder(spec)
    if embedder.has_text_tower:
        return True, f"image-caption cosine from {embedder.model_id}'s text tower"
    what = (
        f"embed.embedder_class {spec.embedder_class} has no text tower"
        if spec.embedder_class
        else f"{spec.model} is a timm image model without a text tower"
    )
    if spec.text:
        raise ValueError(
            f"embed.text: true, but {what}; use embed.model: open_clip:ARCH or "
            "open_clip:ARCH/TAG (a CLIP model with both towers), or set embed.text to null/false"
        )
    return False, f"NULL: {what} (for clip_score use embed.model: open_clip:ARCH/TAG)"


def make_embed_fn(spec: EmbedSpec) -> FrameFn:
    """Batch function for ``df.mapInPandas(fn, embed_output_schema(spec))``."""
    embedded = _embedding_pass(spec)

    def embed_partition(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in embedded(frames):
            yield part.frame()

    return embed_partition


def make_embed_arrow_fn(spec: EmbedSpec) -> ArrowFn:
    """Batch function for ``df.mapInArrow(fn, embed_output_schema(spec))``: the rows of
    :func:`make_embed_fn`, built as Arrow directly. The embeddings go out as one flat float32
    buffer; as a pandas column of arrays pyarrow converted them row by row (0.46 ms a row of
    1,000 floats: three quarters of a Python worker's time besides the model)."""
    embedded = _embedding_pass(spec)
    schema = embed_arrow_schema(spec)

    def embed_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for part in embedded(b.to_pandas() for b in batches):
            yield from part.record_batches(schema)

    return embed_partition


def embed_arrow_schema(spec: EmbedSpec) -> pa.Schema:
    """:func:`embed_output_schema` as an Arrow schema (what mapInArrow's batches must be)."""
    types = {"DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            *[(c, pa.float64()) for c in head_columns(spec)],
            *[(c, types[t]) for c, t in SIGNAL_COLUMNS],
            ("error", pa.string()),
        ]
    )


def make_classify_fn(spec: EmbedSpec) -> FrameFn:
    """Batch function for ``df.mapInPandas(fn, classify_output_schema(spec))``: heads only."""
    columns = head_columns(spec)

    def classify_partition(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        device = current_device()
        for frame in frames:
            yield _classify_frame(frame, spec, columns, device)

    return classify_partition


# ---- internals --------------------------------------------------------------------------------
def _cached_heads(
    specs: Sequence[HeadSpec], embedding_dim: int, device: str
) -> list[ClassifierHead]:
    """Heads on ``device``; random-init heads without input_dim take the embedder's width."""

    def make() -> list[ClassifierHead]:
        heads = []
        for h in specs:
            input_dim = h.input_dim
            if input_dim is None and h.random_init:
                input_dim = embedding_dim
            head = build_head(
                h.name,
                weights=h.weights,
                class_path=h.class_path,
                output_column=h.output_column,
                input_dim=input_dim,
                random_init=h.random_init,
            )
            head.check_dim(embedding_dim)
            heads.append(head.to(device))
        return heads

    return get_or_create(("heads", tuple(specs), embedding_dim, device), make)


def _require(frame: pd.DataFrame, columns: Sequence[str], fn: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{fn}: input frame lacks column(s) {missing}; has {list(frame.columns)}; select "
            f"{', '.join(columns)} before mapInPandas"
        )


def _embedding_pass(spec: EmbedSpec) -> Callable[[Iterable[pd.DataFrame]], Iterator[_Embedded]]:
    """The model pass over input frames, shared by the pandas and Arrow batch functions."""
    head_columns(spec)  # fail on the driver, before Spark runs anything
    with_text, _reason = clip_score_plan(spec)

    def run(frames: Iterable[pd.DataFrame]) -> Iterator[_Embedded]:
        device = current_device()
        # One loaded model per worker whatever embed.signals says: it is per-call state.
        key = ("embedder", dataclasses.replace(spec, heads=(), signals=True), device)
        embedder = get_or_create(key, lambda: build_embedder(spec).prepare(device))
        embedder.signals = spec.signals
        heads = _cached_heads(spec.heads, embedder.embedding_dim, device)
        for frame in frames:
            yield _embed(frame, embedder, heads, with_text)

    return run


@dataclasses.dataclass(frozen=True)
class _Embedded:
    """One frame's output: every column but ``embedding`` (in schema order), the ``(n, d)``
    embeddings and which rows have one (the others' ``embedding`` is NULL)."""

    columns: pd.DataFrame
    embeddings: np.ndarray
    valid: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The pandas output frame (``embedding`` an object column of float32 arrays)."""
        out = self.columns.copy()
        vectors = [e if ok else None for e, ok in zip(self.embeddings, self.valid, strict=True)]
        out.insert(1, "embedding", pd.Series(vectors, dtype=object))
        return out

    def record_batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The output as Arrow batches of ``schema``, each small enough for int32 offsets."""
        n = len(self.columns)
        dim = max(int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 1, 1)
        step = max(1, min(n, _MAX_LIST_VALUES // dim))
        for start in range(0, max(n, 1), step):
            rows = slice(start, start + step)
            cols = self.columns.iloc[rows]
            valid = self.valid[rows]
            embedding = _float_lists(self.embeddings[rows], valid)
            arrays = [
                pa.array(cols[f.name], type=f.type, from_pandas=True) if f.name != "embedding"
                else embedding
                for f in schema
            ]  # fmt: skip
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _float_lists(matrix: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Rows of ``matrix`` as an Arrow list<float> array, NULL where not ``valid``, sharing one
    flat float32 buffer."""
    n = len(valid)
    width = int(matrix.shape[1]) if matrix.ndim == 2 else 0
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    values = pa.array(np.ascontiguousarray(matrix[valid], dtype=np.float32).reshape(-1))
    return pa.ListArray.from_arrays(
        pa.array(offsets), values, type=pa.list_(pa.float32()), mask=pa.array(~valid)
    )


def _embed(
    frame: pd.DataFrame,
    embedder: ImageEmbedder,
    heads: Sequence[ClassifierHead],
    with_text: bool = False,
) -> _Embedded:
    _require(frame, ("sample_id", "image"), "embed")
    frame = fill_images(frame)  # reference mode: the bytes from the shard, verified
    unreadable = frame["image_error"].tolist()
    blobs = [None if is_missing(b) else b for b in frame["image"].tolist()]
    if with_text:
        captions = frame["caption"].tolist() if "caption" in frame.columns else [None] * len(blobs)
        result = embedder.embed_and_score(blobs, heads, captions=captions)
    else:
        result = embedder.embed_and_score(blobs, heads)  # subclasses may not take captions
    out = pd.DataFrame({"sample_id": frame["sample_id"].astype(str).to_numpy()})
    for head in heads:
        out[head.output_column] = result.scores[head.output_column]
    n = len(out)
    signals = result.signals or [None] * n
    clip = result.clip_scores if result.clip_scores is not None else np.full(n, np.nan)
    out["clip_score"] = _nullable_float(clip)
    out["sharpness"] = _nullable_float([s.sharpness if s else np.nan for s in signals])
    out["colorfulness"] = _nullable_float([s.colorfulness if s else np.nan for s in signals])
    out["grayscale"] = pd.array([s.grayscale if s else None for s in signals], dtype="boolean")
    errors = [u if u is not None else e for u, e in zip(unreadable, result.errors, strict=True)]
    out["error"] = pd.Series(errors, dtype=object)
    valid = np.array([err is None for err in result.errors], dtype=bool).reshape(n)
    return _Embedded(out, np.asarray(result.embeddings), valid)


def _nullable_float(values: Sequence[float] | np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Doubles with NaN as missing (NULL in Spark, not NaN, which sorts above every number)."""
    arr = np.asarray(values, dtype=np.float64)
    return pd.array(np.where(np.isfinite(arr), arr, np.nan), dtype="Float64")


def _classify_frame(
    frame: pd.DataFrame, spec: EmbedSpec, columns: Sequence[str], device: str
) -> pd.DataFrame:
    _require(frame, ("sample_id", "embedding"), "classify")
    values = frame["embedding"].tolist()
    valid = [i for i, v in enumerate(values) if not is_missing(v) and len(v) > 0]
    out = pd.DataFrame({"sample_id": frame["sample_id"].astype(str).to_numpy()})
    for col in columns:
        out[col] = np.full(len(frame), np.nan, dtype=np.float64)
    if not valid:
        return out
    try:
        matrix = np.stack([np.asarray(values[i], dtype=np.float32) for i in valid])
    except ValueError as exc:
        raise ValueError(
            f"classify: embeddings of different widths in one batch ({exc}); score one model's "
            "embeddings at a time (filter the scores table on its model column)"
        ) from exc
    heads = _cached_heads(spec.heads, matrix.shape[1], device)
    rows = np.asarray(valid)
    for start in range(0, len(valid), _CLASSIFY_CHUNK_ROWS):
        chunk = torch.from_numpy(matrix[start : start + _CLASSIFY_CHUNK_ROWS]).to(device)
        normed = F.normalize(chunk, dim=-1)
        idx = rows[start : start + _CLASSIFY_CHUNK_ROWS]
        for head, col in zip(heads, columns, strict=True):
            head_in = normed if head.expects_normalized else chunk
            scores = head.score(head_in).cpu().numpy().astype(np.float64)
            out.loc[idx, col] = scores
    return out
