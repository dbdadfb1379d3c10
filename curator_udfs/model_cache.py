"""Per-Python-worker cache of loaded models.

Spark reuses Python workers across tasks (``spark.python.worker.reuse``, the default), so a model
loaded once per worker process serves every partition that worker handles. This module holds the
only process-global model state of ``curator_udfs``; everything else is passed explicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["get_or_create", "clear_cache", "cached_keys"]

T = TypeVar("T")

_CACHE: dict[Hashable, Any] = {}
_LOCK = threading.Lock()


def get_or_create(key: tuple, factory: Callable[[], T]) -> T:
    """Return the object cached under ``key``, creating it with ``factory()`` on first use.

    ``key`` must be hashable and should include everything the object depends on, e.g.
    ``(spec, device)``. Creation happens under a lock so concurrent tasks in one worker (thread
    reuse) never load the same model twice; a factory that raises caches nothing.
    """
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        value = factory()
        _CACHE[key] = value
        return value


def clear_cache() -> None:
    """Drop every cached object (tests; freeing GPU memory between jobs in one process)."""
    with _LOCK:
        _CACHE.clear()


def cached_keys() -> list[Hashable]:
    """Keys currently cached (for tests and diagnostics)."""
    with _LOCK:
        return list(_CACHE)
