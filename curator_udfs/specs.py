"""The small frozen specs the driver builds once and ships to executors (embed and classify).

Plain dataclasses: picklable, hashable (the per-worker model cache is keyed by them), cheap to
ship. They are built from the pipeline configuration by ``spark_jobs/config.py`` and from
loaded objects by the notebook API; nothing here knows config files or Spark. Importing this
module does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "DECODE_MODES",
    "DEFAULT_MODEL",
    "OPEN_CLIP_PREFIX",
    "SIGNAL_COLUMNS",
    "DecodeMode",
    "EmbedSpec",
    "HeadSpec",
    "head_columns",
    "open_clip_name",
    "timm_model_id",
]

DEFAULT_MODEL = "vit_large_patch14_clip_quickgelu_224.openai"
# `embed.model: open_clip:ARCH` (random init / embed.weights) or `open_clip:ARCH/TAG` (an
# open_clip pretrained tag, weights from the HF hub cache), e.g. open_clip:ViT-B-32/openai.
OPEN_CLIP_PREFIX = "open_clip:"
# `embed.decode`: auto = nvJPEG batches on CUDA (curator_udfs.tensor_decode), else PIL threads.
DecodeMode = Literal["auto", "pil", "torchvision"]
DECODE_MODES: tuple[str, ...] = get_args(DecodeMode)
# The columns the embed pass fills besides embedding and heads, with their SQL types.
SIGNAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("clip_score", "DOUBLE"),
    ("sharpness", "DOUBLE"),
    ("colorfulness", "DOUBLE"),
    ("grayscale", "BOOLEAN"),
)


def open_clip_name(model: str) -> tuple[str, str | None] | None:
    """``(architecture, pretrained tag or None)`` of an ``open_clip:ARCH[/TAG]`` model name,
    None for any other (timm) name."""
    if not model.startswith(OPEN_CLIP_PREFIX):
        return None
    rest = model[len(OPEN_CLIP_PREFIX) :].strip()
    arch, _, tag = rest.partition("/")
    return arch.strip(), (tag.strip() or None)


def timm_model_id(model: str, pretrained: bool, weights: str | None) -> str:
    """The `model` column value of a timm model: its name, `+random` for random init (so test
    scores never mix with real ones)."""
    return f"{model}+random" if not pretrained and not weights else model


@dataclass(frozen=True)
class HeadSpec:
    """One classifier head: registered name (or class path), weights, output column."""

    name: str
    weights: str | None = None
    class_path: str | None = None
    output_column: str | None = None
    random_init: bool = False
    input_dim: int | None = None

    @classmethod
    def coerce(cls, value: HeadSpec | Mapping[str, Any]) -> HeadSpec:
        """Accept a HeadSpec or a mapping like ``{name: aesthetic, weights: null}``."""
        if isinstance(value, HeadSpec):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(value) - known
            if unknown:
                raise ValueError(
                    f"classifiers: unknown key(s) {sorted(unknown)} in {dict(value)}; "
                    f"allowed: {sorted(known)}"
                )
            return cls(**dict(value))
        raise TypeError(f"classifiers: expected a mapping or HeadSpec, got {value!r}")

    @property
    def column(self) -> str:
        """The output column this head fills: its `output_column`, else its class's default
        (ValueError for a head that is neither registered nor importable)."""
        if self.output_column:
            return self.output_column
        from .classifiers import head_class

        return head_class(self.name, self.class_path).default_output_column


@dataclass(frozen=True)
class EmbedSpec:
    """Everything an executor needs to build the embedder and heads."""

    model: str = DEFAULT_MODEL
    pretrained: bool = True
    weights: str | None = None
    batch_size: int = 256
    num_threads_per_worker: int = 4
    normalize: bool = True
    autocast: bool = True
    decode: str = "auto"  # one of DECODE_MODES (checked where it is used)
    signals: bool = True  # image signals (sharpness, colorfulness, grayscale) in the same pass
    heads: tuple[HeadSpec, ...] = ()
    embedder_class: str | None = None
    # clip_score: True = compute (the model must have a text tower), False = never,
    # None = when the embedder has a text tower (open_clip models).
    text: bool | None = None

    def __post_init__(self) -> None:
        # Lists or mappings become a tuple of HeadSpec: hashable for the cache key.
        object.__setattr__(self, "heads", tuple(HeadSpec.coerce(h) for h in self.heads))


def head_columns(spec: EmbedSpec) -> list[str]:
    """Output column per head, in order; two heads writing one column is an error."""
    columns = [h.column for h in spec.heads]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ValueError(
            f"classifiers: several heads write {duplicates}; give each an output_column"
        )
    return columns
