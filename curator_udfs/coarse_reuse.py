"""When stored coarse centroids may be reused, and which coarse groups an incremental run redoes.

Incremental semantic dedup keeps the coarse k-means centroids of a model (table
`dedup_centroids`) and, per coarse group, its members and candidate pairs. A group's pairs
depend only on its members, the centroids and the fine-stage parameters, so a run that reuses
the centroids only has to redo the groups whose member set changed ("touched" groups). This
module holds the two decisions as plain functions (no Spark), so they are testable alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["StoredCentroids", "refit_reason", "state_basis", "touched_groups"]

AUTO_K_FACTOR = 2  # with coarse_k unset, reuse while the automatic k is within 2x of the stored


@dataclass(frozen=True)
class StoredCentroids:
    """What the `dedup_centroids` table says about a model's stored set."""

    seed: int
    k: int
    dim: int
    backend: str
    rows: int  # centroid rows stored (a fit may return fewer than k on tiny samples)
    fit_id: str  # run_id of the run that fitted them


def refit_reason(
    stored: StoredCentroids | None,
    *,
    seed: int,
    k: int,
    auto_k: bool,
    dim: int,
    backend: str,
    full: bool = False,
) -> str | None:
    """Why the coarse k-means must be refitted, or None when the stored set can be reused.

    `k` is the k this run would fit (coarse_k capped at the number of vectors, or the
    automatic number // 5000 when `auto_k`); `backend` the configured one (`auto` accepts any).
    """
    if full:
        return "--full asked for a refit"
    if stored is None:
        return "no stored centroids for this model"
    if stored.rows < 1:
        return "the stored centroid set is empty"
    if stored.seed != seed:
        return f"dedup.seed changed ({stored.seed} -> {seed})"
    if stored.dim != dim:
        return f"embedding dimension changed ({stored.dim} -> {dim})"
    if backend != "auto" and stored.backend != backend:
        return f"dedup.backend changed ({stored.backend} -> {backend})"
    if auto_k:
        if not stored.k / AUTO_K_FACTOR <= k <= stored.k * AUTO_K_FACTOR:
            return f"automatic coarse k moved from {stored.k} to {k} (more than 2x)"
    elif stored.k != k:
        return f"dedup.coarse_k changed ({stored.k} -> {k})"
    return None


def state_basis(
    fit_id: str,
    *,
    threshold: float,
    max_cluster_size: int,
    second_margin: float | None,
    backend: str,
    seed: int,
    fine_margin: float | None = None,
    assignments: int = 2,
    resplits: int = 0,
    block_size: int | None = None,
) -> str:
    """The key under which per-group state is valid: the centroid fit and the fine-stage
    parameters that change a group's pairs (the block size too: the similarity tiles' shape
    changes float32 rounding, so a pair at the threshold can flip). State written under another
    basis is ignored, and so is state of an older layout (`state=2`: fine clusters with their
    centroids, which incremental runs assign new members by)."""
    return (
        f"state=2;fit={fit_id};t={threshold!r};max={max_cluster_size};margin={second_margin!r};"
        f"backend={backend};seed={seed}"
        + ("" if fine_margin is None else f";fine={fine_margin!r}")
        + ("" if assignments == 2 else f";assign={assignments}")
        + ("" if resplits == 0 else f";resplits={resplits}")
        + ("" if block_size is None else f";block={block_size}")
    )


def touched_groups(
    changed: Iterable[int], current: Iterable[int], stored: Iterable[int], *, reset: bool
) -> list[int]:
    """The coarse groups to recompute, sorted: every group (current or stored) on a reset,
    else the groups that gained or lost a member (`changed`)."""
    if reset:
        return sorted({int(c) for c in current} | {int(c) for c in stored})
    return sorted({int(c) for c in changed})
