"""A test-only embedder whose Python worker dies (os._exit) the first time it embeds.

Workers import it by class path (`embed.embedder_class=tests.faults.crashy:CrashOnceEmbedder`),
so the repository root must be on their PYTHONPATH. $CURATOR_CRASH_MARKER names a file created
with O_EXCL by the attempt that dies: exactly one attempt in the whole run fires. Every call
that gets past the crash appends a line to `<marker>.calls`, so a test can see the retry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from curator_udfs.embedders import TimmImageEmbedder


class CrashOnceEmbedder(TimmImageEmbedder):
    """TimmImageEmbedder that kills its own worker process once, inside a Spark task."""

    def embed_and_score(self, blobs: Sequence[bytes | None], heads: Sequence[Any] = ()) -> Any:
        from pyspark import TaskContext

        marker = os.environ.get("CURATOR_CRASH_MARKER")
        ctx = TaskContext.get()
        if marker and ctx is not None:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"stage {ctx.stageId()} partition {ctx.partitionId()}\n".encode())
                os.close(fd)
                os._exit(17)  # the worker dies mid-task, no cleanup, no exception to catch
            with open(marker + ".calls", "a", encoding="utf-8") as f:
                f.write(f"partition {ctx.partitionId()} attempt {ctx.attemptNumber()}\n")
        return super().embed_and_score(blobs, heads)
