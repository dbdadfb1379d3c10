"""Image embedders: bytes in, L2-normalised embeddings out, in batches on one device.

:class:`ImageEmbedder` owns the batch loop every embedder shares — decoding and
preprocessing (in threads beside a GPU's forward, in the task's thread on the CPU, or batch JPEG
decoding on the device, :mod:`.tensor_decode`), batching, ``inference_mode``, fp16 autocast and
pinned-memory copies on CUDA, L2 normalisation, per-image error capture — so a subclass only
supplies ``load``, ``preprocess``, ``forward``, ``embedding_dim`` and ``model_id``.
:class:`TimmImageEmbedder` is the default: any timm model, with the preprocessing of its own
pretrained config.

Two by-products of the same pass: image signals (:mod:`.image_signals`) from each decoded
image, and, for embedders with a text tower (``has_text_tower``, e.g. open_clip models), the
``clip_score`` of each image with its caption: the cosine of the L2-normalised image embedding
and the L2-normalised text embedding, computed on the same device in the same batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cpu_resize import chw_view
from .decode import decode_rgb
from .device import current_device
from .image_signals import ImageSignals, image_signals
from .specs import DEFAULT_MODEL, timm_model_id
from .tensor_decode import (
    Decoded,
    TensorDecoder,
    TensorTransform,
    signals_of_tensor,
    use_tensor_decode,
)
from .weights import WeightsError, hub_cache_dir, load_state_dict, load_strict, seeded

__all__ = [
    "DEFAULT_MODEL",
    "EmbedResult",
    "ImageEmbedder",
    "NamedModelEmbedder",
    "Scorer",
    "TimmImageEmbedder",
    "clean_caption",
]

# Captions are cut to this many characters before tokenising (the tokenizer then truncates to
# its context length, 77 tokens for CLIP): BPE over a megabyte of scraped text would be slow.
MAX_CAPTION_CHARS = 2000


def clean_caption(value: object) -> str | None:
    """A caption fit to tokenise, or None (missing, not text, or blank: clip_score NULL)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text[:MAX_CAPTION_CHARS] if text else None


class Scorer(Protocol):
    """What :meth:`ImageEmbedder.embed_and_score` needs from a head (a ClassifierHead fits)."""

    output_column: str

    def score(self, emb: torch.Tensor) -> torch.Tensor: ...


@dataclass
class EmbedResult:
    """Embeddings ``(n, d)`` float32 (NaN rows on error), head scores ``(n,)``, error strings,
    image signals per row (None on error) and clip scores ``(n,)`` (NaN where not computed;
    None when no captions were given)."""

    embeddings: np.ndarray
    errors: list[str | None]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    signals: list[ImageSignals | None] = field(default_factory=list)
    clip_scores: np.ndarray | None = None


class ImageEmbedder:
    """Base class: subclasses implement ``load``, ``preprocess``, ``forward`` and the two
    properties; :meth:`embed_bytes` then works unchanged.

    Contract for subclasses: ``load(device)`` builds the model on ``device`` (call
    ``super().load(device)`` or leave ``self.device`` to :meth:`prepare`); ``preprocess`` turns a
    list of RGB PIL images into a float tensor ``(n, C, H, W)`` on the CPU and must be
    thread-safe (on a GPU it is called for one image at a time from ``num_threads_per_worker``
    threads);
    ``forward`` maps a batch on the device to features ``(n, d)``.
    """

    def __init__(
        self,
        *,
        batch_size: int = 256,
        num_threads_per_worker: int = 4,
        normalize_embeddings: bool = True,
        autocast: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"embed.batch_size must be >= 1, got {batch_size}")
        if num_threads_per_worker < 1:
            raise ValueError(
                f"embed.num_threads_per_worker must be >= 1, got {num_threads_per_worker}"
            )
        self.batch_size = int(batch_size)
        self.num_threads_per_worker = int(num_threads_per_worker)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.autocast = bool(autocast)
        self.device: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.decode = "auto"  # embed.decode (curator_udfs.tensor_decode)
        self.signals = True  # embed.signals: image signals from the decoded pixels, or None
        self._tensor_decoder: TensorDecoder | None = None
        self._pil_steps: TensorTransform | None = None

    # ---- the part subclasses provide -------------------------------------------------------
    def load(self, device: str) -> None:
        """Build or move the model onto ``device``; the base class only records the device."""
        self.device = device

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> float tensor ``(n, C, H, W)`` on the CPU."""
        raise NotImplementedError(f"{type(self).__name__} must implement preprocess()")

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Batch on the device -> features ``(n, embedding_dim)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding vectors."""
        raise NotImplementedError(f"{type(self).__name__} must define embedding_dim")

    @property
    def model_id(self) -> str:
        """Identifier stored in the ``model`` column of the scores table."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @property
    def has_text_tower(self) -> bool:
        """Whether :meth:`encode_text` works (known before loading); False for image models."""
        return False

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> text features ``(n, embedding_dim)`` on the device (text towers only)."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    # ---- shared machinery -------------------------------------------------------------------
    def prepare(self, device: str) -> ImageEmbedder:
        """Load onto ``device`` and remember it (works whether or not ``load`` calls super)."""
        self.load(device)
        self.device = device
        on_device = use_tensor_decode(self.decode, device)  # also checks the mode
        steps = self.tensor_transform() if self.decode != "pil" else None
        self._tensor_decoder = (
            TensorDecoder(steps, device, signals=self.signals)
            if steps is not None and on_device
            else None
        )
        # Images PIL decodes go through the same steps as uint8 tensors (torch's resize
        # kernels, curator_udfs.cpu_resize); `embed.decode: pil` keeps PIL's resize throughout.
        self._pil_steps = steps
        return self

    def tensor_transform(self) -> TensorTransform | None:
        """``preprocess`` as steps on decoded tensors (batch decoding on the device), or None:
        then every image goes through PIL and ``preprocess``. None unless a subclass says."""
        return None

    def embed_bytes(self, blobs: Sequence[bytes | None]) -> tuple[np.ndarray, list[str | None]]:
        """Embed encoded images: ``(n, d)`` float32 array and one error (or None) per blob.

        A blob that cannot be decoded or preprocessed gets an error string and a NaN row; it
        never raises. Loads the model on :func:`current_device` if not prepared yet.
        """
        result = self.embed_and_score(blobs)
        return result.embeddings, result.errors

    def embed_and_score(
        self,
        blobs: Sequence[bytes | None],
        heads: Sequence[Scorer] = (),
        captions: Sequence[object] | None = None,
    ) -> EmbedResult:
        """Like :meth:`embed_bytes`, also running ``heads`` on each batch on the same device,
        and with ``captions`` (one per blob) the clip score of each image with its caption.

        Heads always receive L2-normalised embeddings (what the LAION heads were trained on),
        whatever ``normalize_embeddings`` says about the stored embedding. A missing or blank
        caption gives a NaN clip score.
        """
        if captions is not None and len(captions) != len(blobs):
            raise ValueError(f"{len(captions)} captions for {len(blobs)} images")
        texts = [clean_caption(c) for c in captions] if captions is not None else None
        if self.device is None:
            self.prepare(current_device())
        n = len(blobs)
        dim = int(self.embedding_dim)
        embeddings = np.full((n, dim), np.nan, dtype=np.float32)
        scores = {h.output_column: np.full(n, np.nan, dtype=np.float64) for h in heads}
        errors: list[str | None] = [None] * n
        signals: list[ImageSignals | None] = [None] * n
        clip = np.full(n, np.nan, dtype=np.float64) if texts is not None else None
        chunks = [range(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]
        pending = self._submit(blobs, chunks[0]) if chunks else []
        for k, rows in enumerate(chunks):
            futures = pending
            # Decode the next batch while this one runs through the model.
            pending = self._submit(blobs, chunks[k + 1]) if k + 1 < len(chunks) else []
            tensors: list[torch.Tensor] = []
            ok_rows: list[int] = []
            for i, fut in zip(rows, futures, strict=True):
                tensor, error, signal = fut.result()
                if error is not None:
                    errors[i] = error
                else:
                    tensors.append(tensor)
                    ok_rows.append(i)
                    signals[i] = signal
            if not tensors:
                continue
            batch_texts = [texts[i] for i in ok_rows] if texts is not None else None
            emb, head_scores, batch_clip = self._run_batch(tensors, heads, dim, batch_texts)
            embeddings[ok_rows] = emb
            for col, values in head_scores.items():
                scores[col][ok_rows] = values
            if clip is not None and batch_clip is not None:
                clip[ok_rows] = batch_clip
        return EmbedResult(
            embeddings=embeddings, errors=errors, scores=scores, signals=signals, clip_scores=clip
        )

    def close(self) -> None:
        """Stop the decoding threads (they are otherwise reused between calls)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None  # thread pools do not pickle; a fresh one is made on use
        return state

    def _submit(self, blobs: Sequence[bytes | None], rows: range) -> list[Future]:
        """One future per row: its (tensor, error, signals), decoded now or by the pool."""
        if self._tensor_decoder is not None:
            self._tensor_decoder.signals = self.signals  # may change after prepare()
        batch = (
            self._tensor_decoder.decode([blobs[i] for i in rows]) if self._tensor_decoder else []
        )
        # On a CPU device decode in this thread: Spark runs one task per core already, and a
        # decode thread beside the forward only contends for the same cores (10 % fewer
        # images/s with one per worker on 2 cores). On a GPU the threads overlap its forward.
        inline = not str(self.device or "cpu").startswith("cuda")
        if not inline and self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.num_threads_per_worker, thread_name_prefix="curator-decode"
            )
        futures: list[Future] = []
        for j, i in enumerate(rows):
            ready = batch[j] if j < len(batch) else None
            if ready is not None:
                done: Decoded = ready
            elif self._pool is not None and not inline:  # the PIL path
                futures.append(self._pool.submit(self._decode_one, blobs[i]))
                continue
            else:
                done = self._decode_one(blobs[i])
            futures.append(Future())
            futures[-1].set_result(done)
        return futures

    def _decode_one(
        self, blob: bytes | None
    ) -> tuple[torch.Tensor | None, str | None, ImageSignals | None]:
        """Decode + preprocess one image in a worker thread, and take its image signals from
        the decoded pixels; failures become error strings."""
        if blob is None:
            return None, "decode: no image bytes (image is null)", None
        try:
            image = decode_rgb(bytes(blob))
        except ValueError as exc:
            return None, str(exc), None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is per-image bad data
            return None, f"decode: {type(exc).__name__}: {exc}", None
        pixels = chw_view(image) if self._pil_steps is not None else None
        try:
            if self._pil_steps is not None and pixels is not None:
                tensor = self._pil_steps(pixels)
            else:
                tensor = self.preprocess([image])
        except Exception as exc:  # noqa: BLE001 - e.g. a degenerate size a transform rejects
            return None, f"preprocess: {type(exc).__name__}: {exc}", None
        if tensor.ndim == 4:
            tensor = tensor[0]
        if not self.signals:
            return tensor, None, None
        return tensor, None, image_signals(image) if pixels is None else signals_of_tensor(pixels)

    def _run_batch(
        self,
        tensors: list[torch.Tensor],
        heads: Sequence[Scorer],
        dim: int,
        texts: list[str | None] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        device = torch.device(self.device or "cpu")
        on_cuda = device.type == "cuda"
        host = all(t.device.type == "cpu" for t in tensors)  # else some are decoded on device
        try:
            batch = torch.stack(tensors if host else [t.to(device) for t in tensors])
        except RuntimeError as exc:
            raise ValueError(
                f"{type(self).__name__}.preprocess returned tensors of different shapes ({exc}); "
                "resize/crop to a fixed size in preprocess"
            ) from exc
        if on_cuda and host:
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        amp = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if on_cuda and self.autocast
            else contextlib.nullcontext()
        )
        with torch.inference_mode():
            with amp:
                feats = self.forward(batch)
            feats = feats.float().reshape(feats.shape[0], -1)
            if feats.shape[1] != dim:
                raise ValueError(
                    f"{type(self).__name__}.forward gave {feats.shape[1]}-d features but "
                    f"embedding_dim says {dim}; make them agree"
                )
            normed = F.normalize(feats, dim=-1)
            out = normed if self.normalize_embeddings else feats
            head_scores = {}
            for h in heads:
                head_in = normed if getattr(h, "expects_normalized", True) else feats
                values = h.score(head_in).float().reshape(-1).cpu().numpy()
                head_scores[h.output_column] = values.astype(np.float64)
            clip = None
            if texts is not None:
                clip = np.full(len(tensors), np.nan, dtype=np.float64)
                rows = [j for j, t in enumerate(texts) if t]
                if rows:
                    with amp:
                        text_feats = self.encode_text([str(texts[j]) for j in rows])
                    text_normed = F.normalize(text_feats.float().reshape(len(rows), -1), dim=-1)
                    if text_normed.shape[1] != dim:
                        raise ValueError(
                            f"{type(self).__name__}.encode_text gave {text_normed.shape[1]}-d "
                            f"features but the image embedding is {dim}-d; make them agree"
                        )
                    cos = (normed[rows] * text_normed).sum(dim=-1)
                    clip[rows] = cos.cpu().numpy().astype(np.float64)
            return out.cpu().numpy(), head_scores, clip


class NamedModelEmbedder(ImageEmbedder):
    """An embedder built from a model name, ``pretrained`` and optional local ``weights``.

    Shared by the timm and open_clip embedders: ``model_id`` is :func:`timm_model_id` of the
    three (``+random`` for random init), and ``embedding_dim`` is known once loaded.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        *,
        batch_size: int = 256,
        num_threads_per_worker: int = 4,
        normalize_embeddings: bool = True,
        autocast: bool = True,
        weights: str | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_threads_per_worker=num_threads_per_worker,
            normalize_embeddings=normalize_embeddings,
            autocast=autocast,
        )
        self.model_name = model_name
        self.pretrained = bool(pretrained)
        self.weights = weights
        self.model: Any = None
        self.transform: Any = None
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        return timm_model_id(self.model_name, self.pretrained, self.weights)

    @property
    def embedding_dim(self) -> int:
        if self._dim is None:
            raise RuntimeError(
                f"{self.model_name}: embedding_dim is known once loaded; call prepare(device)"
            )
        return self._dim

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> the model's transform of each, stacked (``self.transform``, set by
        ``load``)."""
        if self.transform is None:
            raise RuntimeError(f"{self.model_name}: call prepare(device) before preprocess()")
        return torch.stack([self.transform(img) for img in images])

    def tensor_transform(self) -> TensorTransform | None:
        """``self.transform`` on tensors, when it is made of steps that take them and
        ``preprocess`` is this one (a subclass's own preprocess is never bypassed)."""
        if type(self).preprocess is not NamedModelEmbedder.preprocess:
            return None
        return TensorTransform.of(self.transform)


class TimmImageEmbedder(NamedModelEmbedder):
    """Any timm image model, classifier/projection head kept, preprocessing from its config.

    Weights: ``weights=PATH`` (file or directory; safetensors or weights-only torch files)
    wins; else ``pretrained=True`` uses timm's HF hub resolution (cache first); else random
    init, seeded so every worker builds the same model. ``model_id`` is ``model_name``, with
    ``+random`` appended for random init so test scores never mix with real ones.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        pretrained: bool = True,
        *,
        weights: str | None = None,
        **kw: Any,  # batch_size, num_threads_per_worker, ... (ImageEmbedder)
    ) -> None:
        super().__init__(model_name, pretrained, weights=weights, **kw)
        self.data_config: dict[str, Any] = {}

    def create_model(self) -> torch.nn.Module:
        """Build the timm model (head kept) with the configured weights, on the CPU."""
        import timm

        arch, _tag = timm.models.split_model_name_tag(self.model_name)
        if not timm.is_model(arch):
            raise ValueError(
                f"embed.model: unknown timm model {self.model_name!r}; list candidates with "
                "timm.list_models('*clip*') (e.g. vit_large_patch14_clip_quickgelu_224.openai, "
                "or test_vit for tests)"
            )
        if self.weights:
            model = seeded(lambda: timm.create_model(self.model_name, pretrained=False))
            load_strict(model, load_state_dict(self.weights), self.weights, self.model_name)
            return model
        if not self.pretrained:
            return seeded(lambda: timm.create_model(self.model_name, pretrained=False))
        try:
            return timm.create_model(self.model_name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - network/cache/auth failures all end here
            cfg = timm.models.get_pretrained_cfg(self.model_name)
            hub_id = getattr(cfg, "hf_hub_id", None) or self.model_name
            raise WeightsError(
                f"embed: could not get pretrained weights for {self.model_name} (HF hub repo "
                f"{hub_id}); looked in the HF hub cache {hub_cache_dir()} "
                "(HF_HOME / HF_HUB_CACHE) and on the hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}). "
                "Fix: set embed.weights to a local file or directory with the weights, or "
                "download once with network and copy the HF cache (set HF_HUB_OFFLINE=1 on "
                "air-gapped workers), or use embed.pretrained: false for a random-init test model"
            ) from exc

    def load(self, device: str) -> None:
        from timm.data import create_transform, resolve_data_config

        super().load(device)
        model = self.create_model().eval().to(device)
        self.model = model
        self.data_config = resolve_data_config({}, model=model)
        self.transform = create_transform(**self.data_config)
        channels, height, width = self.data_config["input_size"]
        with torch.inference_mode():
            probe = model(torch.zeros(1, channels, height, width, device=device))
        self._dim = int(probe.reshape(1, -1).shape[1])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{self.model_name}: call prepare(device) before forward()")
        return self.model(batch)
