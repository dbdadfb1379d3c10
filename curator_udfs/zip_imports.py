"""Zip archives on ``sys.path`` re-read only when they change (Python 3.10 and 3.11).

PySpark's worker calls ``importlib.invalidate_caches()`` at the start of every task. On Python
3.10 and 3.11 that makes every ``zipimporter`` re-read its archive's whole directory at once
(CPython gh-103200, made lazy in 3.12), and a PySpark worker holds one importer per package it
imported from ``pyspark.zip`` plus the ``spark-core`` jar that PySpark puts on the workers' path:
measured here, 0.1-0.9 s of CPU per task, half of an ingest job's Python time.

:func:`reread_zips_only_when_changed` keeps the meaning of the call (an archive changed on disk
is read again) and drops the cost: an importer re-reads its directory only when the archive's
size, mtime, ctime, inode or device differ from when it last read it. On Python 3.12+ it does
nothing. The patch is process-wide (the driver's too), and only skips re-reading an archive
that has not changed.
Importing :mod:`curator_udfs` applies it, so every executor-side function has it from its
first task on.
"""

from __future__ import annotations

import functools
import os
import sys
import zipimport
from collections.abc import Callable
from typing import Any

_PATCHED = "_curator_reread_only_when_changed"
_SEEN = "_curator_archive_stat"


def _stat_key(path: object) -> tuple[int, ...] | None:
    """What changes when the file is replaced or rewritten (ctime: no tool can set it back);
    None when it cannot be stat-ed, and then the archive is always re-read."""
    try:
        st = os.stat(path)  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _guarded(original: Callable[[Any], None]) -> Callable[[Any], None]:
    @functools.wraps(original)
    def invalidate_caches(self: Any) -> None:
        """Re-read the archive's directory if the archive changed since it was last read."""
        key = _stat_key(getattr(self, "archive", None))
        if key is not None and getattr(self, _SEEN, None) == key:
            return
        original(self)
        setattr(self, _SEEN, key)

    setattr(invalidate_caches, _PATCHED, True)
    return invalidate_caches


def reread_zips_only_when_changed() -> bool:
    """Patch ``zipimporter.invalidate_caches`` (Python < 3.12, once per process); True if the
    patch is in place after the call."""
    if sys.version_info >= (3, 12):
        return False
    cls: Any = zipimport.zipimporter
    current = getattr(cls, "invalidate_caches", None)
    if current is None:
        return False
    if not getattr(current, _PATCHED, False):
        cls.invalidate_caches = _guarded(current)
    return True
