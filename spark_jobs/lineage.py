"""Lineage: what happened to every sample (the `fates` view). Being written; see issue 8."""

from __future__ import annotations

from typing import Any

FATES_VIEW = "fates"


def fates_select(spark: Any, cfg: Any, as_of: Any = None) -> str | None:
    """The SELECT behind `fates`, or None while the warehouse has no images."""
    return None
