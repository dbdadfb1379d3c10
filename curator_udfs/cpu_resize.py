"""Resize 8-bit images on the CPU with torch's native uint8 kernels instead of PIL's.

On this project's CPU workers the model transform's resize and the signals' fixed-size copy
were a third of an image's preprocessing time in PIL (1.4 ms and 1.2 ms for ~200² images).
``torch.nn.functional.interpolate`` has vectorised uint8 kernels for antialiased bilinear and
bicubic resampling on channels-last images (the ones torchvision added to match PIL); on the
same images they take 0.6 ms each. They follow PIL's resampling filters, so most values come
out equal or one level apart; on sharp edges, where bicubic overshoots and PIL clips its
intermediate row pass, a few pixels can differ by more (tests/test_cpu_resize.py bounds it).

:func:`chw_view` makes a (3, H, W) uint8 tensor of an RGB PIL image without a planar copy, and
:func:`resize_u8` resizes it as a torchvision ``Resize`` step would (same output size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["chw_view", "native_mode", "resize_u8", "resized_size"]

_NATIVE_MODES = ("bilinear", "bicubic")


def chw_view(image: Image.Image) -> torch.Tensor:
    """An RGB (or L) PIL image as a (C, H, W) uint8 tensor with channels-last strides (the
    layout the uint8 kernels want, so no planar copy is made)."""
    arr = np.array(image, dtype=np.uint8)  # writable: torch wants to own writable memory
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)


def native_mode(step: Any) -> str | None:
    """The interpolate mode of a torchvision ``Resize`` step that the uint8 kernels do as
    that step does (antialiased bilinear or bicubic), else None."""
    mode = getattr(getattr(step, "interpolation", None), "value", None)
    if mode not in _NATIVE_MODES or getattr(step, "antialias", True) is False:
        return None
    return str(mode)


def resized_size(
    height: int, width: int, size: int | tuple[int, ...] | list[int], max_size: int | None = None
) -> tuple[int, int]:
    """The (height, width) torchvision's ``Resize(size, max_size=...)`` gives an image of this
    size: a pair is taken as is; one number sets the short side, the long side keeps the aspect
    ratio (truncated) and is capped at ``max_size`` (the short side then shrinks with it)."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    target = int(size[0] if isinstance(size, (list, tuple)) else size)
    short, long_ = (height, width) if height <= width else (width, height)
    new_short, new_long = target, int(target * long_ / short)
    if max_size is not None:
        if max_size <= target:
            raise ValueError(f"max_size = {max_size} must be strictly greater than size {target}")
        if new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if height <= width else (new_long, new_short)


def resize_u8(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased ``mode`` ("bilinear" or "bicubic") resize of a CPU (C, H, W) uint8 tensor
    to ``size`` = (height, width), in uint8 (rounded and clamped, as PIL does)."""
    if image.dtype != torch.uint8 or image.device.type != "cpu" or mode not in _NATIVE_MODES:
        raise ValueError(f"resize_u8 takes CPU uint8 images and {_NATIVE_MODES}, not {mode!r}")
    batch = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(batch, size=size, mode=mode, antialias=True, align_corners=False)
    return out[0]
