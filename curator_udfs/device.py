"""Pick the torch device for the current Python worker.

One code path for CPU and GPU: the embed job calls :func:`current_device` on the executor and
moves models there. The decision itself is the pure function :func:`choose_device`, so it can be
tested as a table without Spark, CUDA or a task context.
"""

from __future__ import annotations

import os

__all__ = ["choose_device", "current_device", "task_gpu_addresses"]


def choose_device(
    *,
    cuda_visible_devices: str | None,
    task_gpu_addresses: list[str] | None,
    cuda_available: bool,
) -> str:
    """Return ``"cpu"`` or ``"cuda:N"`` from the worker's environment.

    - CUDA not available: ``"cpu"`` (the same code then runs on CPU).
    - ``CUDA_VISIBLE_DEVICES`` set and non-empty: the RAPIDS plugin (and Spark's GPU scheduling
      on some platforms) has already narrowed the visible devices to this task's GPU, so the
      task's GPU is device 0 of the process: ``"cuda:0"``.
    - else the first GPU address Spark assigned to the task: ``"cuda:<address>"``.
    - else ``"cpu"``.
    """
    if not cuda_available:
        return "cpu"
    visible = (cuda_visible_devices or "").strip()
    if visible and visible not in ("-1", "NoDevFiles"):
        return "cuda:0"
    addresses = [a.strip() for a in (task_gpu_addresses or []) if a and a.strip()]
    if addresses:
        return f"cuda:{addresses[0]}"
    return "cpu"


def task_gpu_addresses() -> list[str] | None:
    """GPU addresses of the running Spark task, or None outside a task / without pyspark."""
    try:
        from pyspark import TaskContext  # lazy: curator_udfs must import without pyspark
    except Exception:  # noqa: BLE001 - no pyspark at all is a normal case (unit tests)
        return None
    try:
        ctx = TaskContext.get()
        if ctx is None:
            return None
        gpu = ctx.resources().get("gpu")
        return list(gpu.addresses) if gpu is not None else None
    except Exception:  # noqa: BLE001 - a broken/absent task context means "no GPU assigned"
        return None


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a torch without CUDA support may raise here
        return False


def current_device() -> str:
    """The device this Python worker should use (see :func:`choose_device`)."""
    return choose_device(
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        task_gpu_addresses=task_gpu_addresses(),
        cuda_available=_cuda_available(),
    )
