"""Recall and precision of found duplicate groups against planted ones (``_planted.json``).

Both sides are compared as groups, not as the edges that happen to link them: a planted near
copy of an exact copy belongs with both, and a found ``duplicate_of`` chain means the same
group. A pair counts as found when both samples are in one found group (of that method and
eps), and as true when both are in one planted group. Exact dedup is held to the planted exact
copies only (it cannot see a re-encode); perceptual and semantic to all planted copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

__all__ = ["MethodScore", "groups", "planted_pairs", "score_methods"]

Pair = tuple[str, str]


@dataclass(frozen=True)
class MethodScore:
    """One method (and eps) against the planted groups it is expected to find."""

    method: str
    eps: float | None
    true_pairs: int  # same-group pairs among the planted copies this method should find
    found_pairs: int  # same-group pairs among what the method found
    correct_pairs: int  # found pairs that are planted (in any planted group)
    recalled_pairs: int  # true pairs that were found

    @property
    def recall(self) -> float | None:
        return self.recalled_pairs / self.true_pairs if self.true_pairs else None

    @property
    def precision(self) -> float | None:
        return self.correct_pairs / self.found_pairs if self.found_pairs else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "eps": self.eps,
            "true_pairs": self.true_pairs,
            "found_pairs": self.found_pairs,
            "correct_pairs": self.correct_pairs,
            "recalled_pairs": self.recalled_pairs,
            "recall": self.recall,
            "precision": self.precision,
        }


def groups(edges: Iterable[Pair]) -> list[set[str]]:
    """Connected components of ``edges`` (union-find), each with at least two members."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out: dict[str, set[str]] = {}
    for x in parent:
        out.setdefault(root(x), set()).add(x)
    return [g for g in out.values() if len(g) > 1]


def _pairs(edges: Iterable[Pair]) -> set[Pair]:
    return {
        (a, b) for g in groups(edges) for a, b in combinations(sorted(g), 2)
    }  # fmt: skip


def planted_pairs(planted: Mapping[str, Sequence[Sequence[str]]], *, exact_only: bool) -> set[Pair]:
    """Same-group key pairs of ``_planted.json`` (``{"exact": [[a, b]], "near": [[a, b, k]]}``)."""
    edges = [(str(p[0]), str(p[1])) for p in planted.get("exact", [])]
    if not exact_only:
        edges += [(str(p[0]), str(p[1])) for p in planted.get("near", [])]
    return _pairs(edges)


def score_methods(
    planted: Mapping[str, Sequence[Sequence[str]]],
    found: Iterable[tuple[str, str, str, float | None]],
    runs: Iterable[tuple[str, float | None]] = (),
) -> list[MethodScore]:
    """Score each (method, eps) of ``found`` rows ``(key, duplicate_of_key, method, eps)``, and
    each of ``runs`` (the configured ones) even when it found nothing."""
    by_run: dict[tuple[str, float | None], list[Pair]] = {run: [] for run in runs}
    for key, of, method, eps in found:
        by_run.setdefault((method, eps), []).append((key, of))
    truth = {True: planted_pairs(planted, exact_only=True),
             False: planted_pairs(planted, exact_only=False)}  # fmt: skip
    everything = truth[False]
    out = []
    for (method, eps), edges in sorted(by_run.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        want = truth[method == "exact"]
        got = _pairs(edges)
        out.append(
            MethodScore(method, eps, len(want), len(got), len(got & everything), len(got & want))
        )
    return out
