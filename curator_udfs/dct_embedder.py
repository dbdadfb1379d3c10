"""A weight-free near-duplicate embedder: the low-frequency DCT of a small YCbCr thumbnail.

For demos and offline machines, where a CLIP model's weights cannot be had: a random-init
network maps visibly different pictures to near-identical vectors, so its "semantic
duplicates" are noise. This descriptor needs no weights and is stable under what makes a near
duplicate (re-encoding, resizing, mild crops): each channel of a ``size`` × ``size`` YCbCr
thumbnail goes through an orthonormal 2-D DCT-II, and the ``k`` × ``k`` lowest frequencies but
the DC term (the mean colour, which unrelated images share) are kept: ``3 * (k * k - 1)``
dimensions, L2-normalised by the base class. It knows nothing of meaning: two photos of the
same scene from different angles are not duplicates to it. The DCT is two matrix products per
batch, on whatever device the embedder runs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .embedders import ImageEmbedder

__all__ = ["DctImageEmbedder", "dct_matrix"]


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (``n`` × ``n``): ``D @ x`` is the DCT of ``x``."""
    k = torch.arange(n, dtype=torch.float64).reshape(-1, 1)
    i = torch.arange(n, dtype=torch.float64).reshape(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


class DctImageEmbedder(ImageEmbedder):
    """``embed.embedder_class: curator_udfs.dct_embedder:DctImageEmbedder`` (no weights)."""

    def __init__(self, *, size: int = 32, k: int = 8, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if not 2 <= k <= size:
            raise ValueError(f"DctImageEmbedder: need 2 <= k <= size, got k={k}, size={size}")
        self.size, self.k = int(size), int(k)
        self._dct = dct_matrix(self.size)[: self.k]  # only the rows of the kept frequencies

    @property
    def embedding_dim(self) -> int:
        return 3 * (self.k * self.k - 1)

    @property
    def model_id(self) -> str:
        return f"dct-ycbcr{self.size}-k{self.k}"

    def load(self, device: str) -> None:
        self._dct = self._dct.to(device)
        self.device = device

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = [
            np.asarray(
                im.convert("YCbCr").resize((self.size, self.size), Image.Resampling.BILINEAR),
                dtype=np.float32,
            )
            for im in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        d = self._dct.to(batch.device, torch.float32)
        coeffs = d @ batch.float() @ d.T  # (n, 3, k, k): the k x k lowest frequencies
        flat = coeffs.reshape(coeffs.shape[0], 3, self.k * self.k)[:, :, 1:]  # drop each DC
        return flat.reshape(flat.shape[0], -1)
