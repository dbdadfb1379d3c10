"""The `model` column value: which embedding model a `scores` row belongs to (one rule)."""

from __future__ import annotations

from .specs import EmbedSpec, timm_model_id

__all__ = ["model_id", "timm_model_id"]


def model_id(spec: EmbedSpec) -> str:
    """The `model` value of `spec`'s rows: the timm name (`+random` for random init), or what a
    custom embedder class says (built, not loaded). Torch is imported only for custom classes."""
    if spec.embedder_class:
        from .embed_batches import build_embedder

        return build_embedder(spec).model_id
    return timm_model_id(spec.model, spec.pretrained, spec.weights)
