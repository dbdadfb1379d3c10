"""open_clip CLIP models as embedders: the image tower embeds, the text tower gives clip_score.

Naming (``embed.model``): ``open_clip:ARCH`` or ``open_clip:ARCH/TAG``, ARCH an open_clip model
config (``open_clip.list_models()``, e.g. ``ViT-B-32``, ``ViT-L-14``) and TAG one of its
pretrained tags (``open_clip.list_pretrained_tags_by_model(ARCH)``, e.g. ``openai``,
``laion2b_s34b_b79k``). Weights, as for timm models: ``weights=PATH`` (file or directory,
safetensors or weights-only torch, read by :mod:`.weights`; never a pickle) wins; else
``pretrained=True`` with a TAG reads the tag's HF hub repo through the HF cache (first
``open_clip_model.safetensors``); else random init, seeded. A directory (or a file's directory)
holding ``open_clip_config.json`` (open_clip's HF layout: ``model_cfg``, ``preprocess_cfg``)
defines the architecture itself, so custom or tiny models need no registration on executors.

Tokenisation is open_clip's own (the CLIP BPE vocabulary ships inside the package, so it works
offline); captions longer than the context length (77 tokens) are truncated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .embedders import NamedModelEmbedder
from .specs import open_clip_name
from .weights import WeightsError, hub_file, load_state_dict, seeded, state_dict_mismatch

__all__ = ["CONFIG_FILE", "OpenClipEmbedder", "open_clip_config"]

CONFIG_FILE = "open_clip_config.json"
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _config_dir(weights: str | None) -> Path | None:
    """The directory with ``open_clip_config.json`` given by ``weights``, if any."""
    if not weights:
        return None
    p = Path(weights).expanduser()
    d = p if p.is_dir() else p.parent
    return d if (d / CONFIG_FILE).is_file() else None


def open_clip_config(model: str, pretrained: bool, weights: str | None) -> dict[str, Any]:
    """``{"model_cfg", "preprocess_cfg", "source", "hub_repo"}`` of an ``open_clip:`` model,
    from ``open_clip_config.json`` beside the weights or open_clip's registry; ValueError with
    the fix for unknown architectures or tags (checked on the driver, before Spark)."""
    import open_clip

    parsed = open_clip_name(model)
    if parsed is None or not parsed[0]:
        raise ValueError(
            f"embed.model: {model!r} is not an open_clip name; write open_clip:ARCH or "
            "open_clip:ARCH/TAG (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k)"
        )
    arch, tag = parsed
    local = _config_dir(weights)
    if local is not None:
        try:
            raw = json.loads((local / CONFIG_FILE).read_text())
            model_cfg = dict(raw["model_cfg"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"embed.weights: {local / CONFIG_FILE} is not a valid open_clip config "
                f"({type(exc).__name__}: {exc}); it needs a model_cfg object"
            ) from None
        return {
            "model_cfg": model_cfg,
            "preprocess_cfg": dict(raw.get("preprocess_cfg") or {}),
            "source": f"local-dir:{local}",
            "hub_repo": None,
        }
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ValueError(
            f"embed.model: unknown open_clip architecture {arch!r}; open_clip.list_models() "
            "lists them (e.g. ViT-B-32, ViT-L-14), or put an open_clip_config.json beside "
            "embed.weights"
        )
    preprocess: dict[str, Any] = {}
    hub_repo = None
    if tag is not None:
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        if not pcfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ValueError(
                f"embed.model: open_clip {arch} has no pretrained tag {tag!r}; its tags: "
                f"{', '.join(tags) or 'none'}"
            )
        keys = ("mean", "std", "interpolation", "resize_mode")
        preprocess = {k: pcfg[k] for k in keys if k in pcfg}
        if pcfg.get("quick_gelu"):
            model_cfg["quick_gelu"] = True
        hub_repo = (pcfg.get("hf_hub") or "").strip("/") or None
    elif pretrained and not weights:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(
            f"embed.model: open_clip:{arch} with embed.pretrained: true needs a pretrained tag, "
            f"open_clip:{arch}/TAG (tags: {', '.join(tags) or 'none'}); or set embed.weights, "
            "or embed.pretrained: false for random init"
        )
    return {
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess,
        "source": arch,
        "hub_repo": hub_repo,
    }


class OpenClipEmbedder(NamedModelEmbedder):
    """An open_clip CLIP model: ``encode_image`` embeds, ``encode_text`` embeds captions.

    ``model_id`` is the ``open_clip:…`` name, ``+random`` for random init (as for timm).
    """

    def __init__(
        self, model_name: str, pretrained: bool = True, *, weights: str | None = None, **kw: Any
    ) -> None:
        # weights named: build_embedder passes only the parameters __init__ names
        super().__init__(model_name, pretrained, weights=weights, **kw)
        self.tokenizer: Any = None
        self._tokenizer_error: str | None = None
        self._tokenizer_source = ""

    @property
    def has_text_tower(self) -> bool:
        return True

    def create_model(self) -> torch.nn.Module:
        """Build the open_clip model on the CPU with the configured weights (or random init)."""
        import open_clip

        cfg = open_clip_config(self.model_name, self.pretrained, self.weights)
        source = cfg["source"]
        kwargs: dict[str, Any] = {
            "load_weights": False,
            "pretrained_image": False,
            "pretrained_text": False,
            "force_quick_gelu": bool(cfg["model_cfg"].get("quick_gelu")),
            "force_preprocess_cfg": cfg["preprocess_cfg"] or None,
        }
        model = seeded(lambda: open_clip.create_model(source, **kwargs))
        path: str | None = self.weights
        if not path and self.pretrained and cfg["hub_repo"]:
            path = str(
                hub_file(
                    cfg["hub_repo"],
                    HUB_WEIGHT_FILES,
                    what=f"embed: open_clip weights of {self.model_name}",
                    local_hint="set embed.weights to a local open_clip weights file or directory",
                )
            )
        elif not path and self.pretrained:  # a tag (open_clip_config checked) without a repo
            raise WeightsError(
                f"embed: open_clip tag of {self.model_name} has no HF hub repo (URL-only "
                "weights are not fetched); download them once, convert to safetensors and set "
                "embed.weights"
            )
        if path:
            _load_open_clip_strict(model, load_state_dict(path), path, self.model_name)
        self._tokenizer_source = source
        return model

    def load(self, device: str) -> None:
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        super().load(device)
        model: Any = self.create_model().eval().to(device)
        self.model = model
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        fields = PreprocessCfg.__dataclass_fields__
        self.transform = image_transform_v2(
            PreprocessCfg(**{k: v for k, v in pp.items() if k in fields}), is_train=False
        )
        try:
            self.tokenizer = open_clip.get_tokenizer(self._tokenizer_source)
        except Exception as exc:  # noqa: BLE001 - e.g. an HF tokenizer that needs a download
            self._tokenizer_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        size = pp.get("size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        with torch.inference_mode():
            probe = model.encode_image(torch.zeros(1, 3, h, w, device=device))
        self._dim = int(probe.reshape(1, -1).shape[1])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{self.model_name}: call prepare(device) before forward()")
        return self.model.encode_image(batch)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """Token ids ``(n, context_length)``, truncated to the context length."""
        if self.tokenizer is None:
            raise RuntimeError(
                f"{self.model_name}: no tokenizer ({self._tokenizer_error or 'not loaded'}); "
                "use a model with open_clip's built-in CLIP tokenizer, or embed.text: false"
            )
        return self.tokenizer(captions)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{self.model_name}: call prepare(device) before encode_text()")
        tokens = self.tokenize(captions).to(self.device or "cpu")
        return self.model.encode_text(tokens)


def _load_open_clip_strict(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, model_name: str
) -> None:
    """Load ``sd`` strictly after open_clip's own key fix-ups (old text layout, scalar
    logit_scale, position embedding sizes); WeightsError naming the mismatches otherwise."""
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed

    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    scale = getattr(model, "logit_scale", None)
    if "logit_scale" in sd and scale is not None and scale.ndim != sd["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(scale.shape)
    bias = getattr(model, "logit_bias", None)
    if "logit_bias" not in sd and isinstance(bias, torch.Tensor):
        sd["logit_bias"] = torch.zeros_like(bias)
    try:
        resize_pos_embed(sd, model)
    except Exception:  # noqa: BLE001 - only helps; a real mismatch is reported below
        pass
    problems = state_dict_mismatch(model, sd)
    if problems:
        more = f"; … {len(problems) - 6} more" if len(problems) > 6 else ""
        raise WeightsError(
            f"embed.weights: {source} does not fit {model_name} ({len(problems)} problems: "
            f"{'; '.join(problems[:6])}{more}); use weights saved from this open_clip "
            "architecture, or change embed.model"
        )
    model.load_state_dict(sd, strict=True)
