"""Batch JPEG decoding with torchvision (nvJPEG on a CUDA device) and the model's transform on
the decoded tensors, so that on a GPU worker the pixels never pass through PIL or the CPU.

`embed.decode` picks the decoder: ``auto`` (the default) uses this module where the task's
device is CUDA and PIL threads (:mod:`.decode`) elsewhere; ``torchvision`` uses this module on
any device (on the CPU, torchvision's libjpeg-turbo decoder: the path the tests check against
PIL on a machine without a GPU); ``pil`` never uses it.

Each image is treated like :func:`.decode.decode_rgb` treats it: the same header refusals (size
limit, corrupt header) with the same messages, EXIF orientation, the 4:1 aspect bound, then the
steps of the model's own eval transform (resize, center crop, scale to 0..1, normalise) applied
to the tensor. What this path cannot treat exactly the same way (not a JPEG, MPO, CMYK or YCCK
JPEGs, a transform step that only takes PIL images, a JPEG the batch decoder rejects) comes back
as ``None``: the caller decodes that image with PIL, so no image is lost and errors keep one
wording. Image signals come from a SIGNAL_SIZE² copy resized on the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .cpu_resize import native_mode, resize_u8, resized_size
from .decode import bound_aspect_box, open_checked
from .image_signals import SIGNAL_SIZE, ImageSignals, signals_of_rgb
from .specs import DECODE_MODES

__all__ = [
    "DECODE_MODES",
    "Decoded",
    "TensorDecoder",
    "TensorTransform",
    "signals_of_tensor",
    "use_tensor_decode",
]

# One image's result, as the embedders' PIL path returns it: (tensor, error, signals).
Decoded = tuple[torch.Tensor | None, str | None, ImageSignals | None]

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112
# JPEG colour modes that decode_jpeg(mode=RGB) converts as PIL's convert("RGB") does.
_PLAIN_MODES = frozenset({"RGB", "L"})
# torchvision marks its image decoders deprecated in favour of torchcodec; they still are the
# nvJPEG entry point of this torch line. Matched by module, so no other warning is hidden.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")

# EXIF orientation -> the tensor operation of PIL's exif_transpose on (C, H, W).
_ORIENT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda x: x.flip(-1),  # FLIP_LEFT_RIGHT
    3: lambda x: x.flip((-2, -1)),  # ROTATE_180
    4: lambda x: x.flip(-2),  # FLIP_TOP_BOTTOM
    5: lambda x: x.transpose(-2, -1),  # TRANSPOSE
    6: lambda x: torch.rot90(x, -1, (-2, -1)),  # ROTATE_270
    7: lambda x: x.transpose(-2, -1).flip((-2, -1)),  # TRANSVERSE
    8: lambda x: torch.rot90(x, 1, (-2, -1)),  # ROTATE_90
}


def use_tensor_decode(mode: str, device: str) -> bool:
    """Whether `embed.decode` = ``mode`` means this module's decoder on ``device``."""
    if mode not in DECODE_MODES:
        raise ValueError(f"embed.decode: {mode!r} is not one of {', '.join(DECODE_MODES)}")
    return mode == "torchvision" or (mode == "auto" and str(device).startswith("cuda"))


@dataclass(frozen=True)
class TensorTransform:
    """A model's eval transform as steps that take a (C, H, W) uint8 tensor on any device;
    ``None`` marks the step that scales to float 0..1 (ToTensor's place)."""

    steps: tuple[Any, ...]

    @classmethod
    def of(cls, transform: Any) -> TensorTransform | None:
        """The steps of a torchvision ``Compose`` of Resize / CenterCrop / (Maybe)ToTensor /
        Normalize (timm's eval transforms); None for anything else (the PIL path stays)."""
        from torchvision import transforms as T

        steps: list[Any] = []
        for step in getattr(transform, "transforms", None) or ():
            if isinstance(step, T.Resize) and step.antialias is not False:
                steps.append(step)
            elif isinstance(step, T.CenterCrop | T.Normalize):
                steps.append(step)
            elif type(step).__name__ in ("ToTensor", "MaybeToTensor"):
                steps.append(None)
            else:
                return None
        if steps.count(None) != 1 or not steps:
            return None
        return cls(tuple(steps))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The steps on a (C, H, W) uint8 tensor; a Resize of a CPU image runs torch's uint8
        kernels (:mod:`.cpu_resize`), elsewhere torchvision's own (float) resize."""
        x = image
        for step in self.steps:
            mode = native_mode(step) if step is not None and _on_cpu_u8(x) else None
            if step is None:
                x = x.float().div_(255.0)
            elif mode is not None:
                size = resized_size(int(x.shape[-2]), int(x.shape[-1]), step.size, step.max_size)
                x = resize_u8(x, size, mode)
            else:
                x = step(x)
        return x


def signals_of_tensor(image: torch.Tensor) -> ImageSignals:
    """The image signals of a (3, H, W) uint8 tensor: its SIGNAL_SIZE² bilinear copy made on
    the tensor's device (uint8 kernels on the CPU), then :func:`signals_of_rgb`."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if _on_cpu_u8(image):
        small = resize_u8(image, (SIGNAL_SIZE, SIGNAL_SIZE), "bilinear")
    else:
        small = TF.resize(
            image, [SIGNAL_SIZE, SIGNAL_SIZE], InterpolationMode.BILINEAR, antialias=True
        )
    return signals_of_rgb(small.permute(1, 2, 0).cpu().numpy())


def _on_cpu_u8(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8 and x.device.type == "cpu" and x.ndim == 3


class TensorDecoder:
    """Decode a batch of encoded images on ``device`` and apply ``transform`` there."""

    def __init__(
        self,
        transform: TensorTransform,
        device: str,
        *,
        max_pixels: int | None = None,
        signals: bool = True,
    ) -> None:
        self.transform = transform
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.signals = signals  # False: no SIGNAL_SIZE² copy, signals None (embed.signals)

    def decode(self, blobs: Sequence[bytes | None]) -> list[Decoded | None]:
        """One result per blob: a transformed tensor on the device, a refusal (the PIL path's
        message), or None where the image must go through PIL instead."""
        out: list[Decoded | None] = [None] * len(blobs)
        todo: list[tuple[int, bytes, int]] = []  # (row, data, EXIF orientation)
        for i, blob in enumerate(blobs):
            if blob is None or not bytes(blob[:3]) == _JPEG_MAGIC:
                continue
            data = bytes(blob)
            try:
                header = open_checked(data, max_pixels=self.max_pixels)
            except ValueError as exc:
                out[i] = (None, str(exc), None)
                continue
            if header.format != "JPEG" or header.mode not in _PLAIN_MODES:
                continue
            todo.append((i, data, _orientation(header)))
        images = self._decode_jpegs([data for _, data, _ in todo])
        for (i, _, orientation), image in zip(todo, images, strict=True):
            if image is not None:
                out[i] = self._finish(image, orientation)
        return out

    def _decode_jpegs(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """The batch decoder on the whole list; when it rejects the batch, one at a time (a
        JPEG it still rejects is None: PIL decodes it or words the error)."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not datas:
            return []
        inputs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:
            return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            pass
        images: list[torch.Tensor | None] = []
        for one in inputs:
            try:
                images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                images.append(None)
        return images

    def _finish(self, image: torch.Tensor, orientation: int) -> Decoded:
        """Orientation, aspect bound, the model's transform and the signals of one image."""
        if orientation in _ORIENT:
            image = _ORIENT[orientation](image)
        box = bound_aspect_box(int(image.shape[-1]), int(image.shape[-2]))
        if box is not None:
            left, top, right, bottom = box
            image = image[:, top:bottom, left:right]
        try:
            tensor = self.transform(image)
        except Exception as exc:  # noqa: BLE001 - e.g. a degenerate size a transform rejects
            return None, f"preprocess: {type(exc).__name__}: {exc}", None
        return tensor, None, signals_of_tensor(image) if self.signals else None


def _orientation(header: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable, as decode_rgb ignores it then)."""
    try:
        return int(header.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not fail a decodable image
        return 1
