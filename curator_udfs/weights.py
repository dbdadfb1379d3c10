"""Load model weights from local files, directories or the HF hub cache — never via pickle.

Weights are untrusted input: a ``.pth`` is a pickle and unpickling can run arbitrary code.
Everything here reads tensors only: safetensors files, or torch files through
``torch.load(weights_only=True)``, which refuses any object that is not a tensor container.
Errors are :class:`WeightsError` and say where we looked and how to fix it.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "WeightsError",
    "load_state_dict",
    "find_weights_file",
    "hub_file",
    "hub_cache_dir",
    "WEIGHT_SUFFIXES",
    "load_strict",
    "seeded",
    "state_dict_mismatch",
]

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
# Looked for, in this order, when a directory is given.
DIRECTORY_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "open_clip_pytorch_model.bin",
    "model.pth",
    "model.pt",
    "model.bin",
    "model.ckpt",
)
# Wrappers training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")

_CONVERT_HINT = (
    "if you trust the file, convert it once to safetensors on a machine of your own: "
    "python -c \"import torch, safetensors.torch as st; sd = torch.load('{path}', "
    "weights_only=False); sd = sd.get('state_dict', sd); st.save_file({{k: v.contiguous() "
    "for k, v in sd.items()}}, '{stem}.safetensors')\" and point the config at the new file"
)


class WeightsError(RuntimeError):
    """Weights are missing, unreadable, unsafe or do not fit the model."""


def hub_cache_dir() -> str:
    """Where huggingface_hub caches downloads (``$HF_HUB_CACHE``, default ``$HF_HOME/hub``)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - only used in messages
        home = os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def find_weights_file(path: str | Path) -> Path:
    """Resolve a file or directory argument to the one weights file to read.

    A directory is searched for the names in ``DIRECTORY_CANDIDATES`` (HF/timm/open_clip
    conventions) and then for a single file with a weights suffix.
    """
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    where = p if p.is_absolute() else Path.cwd() / p
    if p.is_file():
        return p
    if p.is_dir():
        for name in DIRECTORY_CANDIDATES:
            if (p / name).is_file():
                return p / name
        found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return found[0]
        if found:
            raise WeightsError(
                f"weights: directory {where} holds several weight files "
                f"({', '.join(q.name for q in found)}) and none of the standard names; "
                "pass the file itself"
            )
        raise WeightsError(
            f"weights: no weights file in directory {where}; looked for "
            f"{', '.join(DIRECTORY_CANDIDATES)} and any *{'/*'.join(WEIGHT_SUFFIXES)}; "
            "pass a file or a directory that contains one"
        )
    raise WeightsError(
        f"weights: {path} not found (looked at {where}); pass an existing local file or "
        "directory (safetensors or torch weights), or set weights: null to use the HF hub "
        f"cache ({hub_cache_dir()}, set HF_HOME to move it)"
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> CPU tensor) from a file or directory, safely.

    ``.safetensors`` via safetensors; ``.pth/.pt/.bin/.ckpt`` via
    ``torch.load(weights_only=True, map_location="cpu")``, unwrapping ``{"state_dict": ...}``,
    ``{"model": ...}`` and a DataParallel ``module.`` prefix; sharded checkpoints via their
    ``*.index.json``. A pickle that needs more than tensors is refused, unexecuted.
    """
    file = find_weights_file(path)
    if file.name.endswith(".index.json"):
        return _load_sharded(file)
    kind = _file_kind(file)
    raw = _load_safetensors(file) if kind == "safetensors" else _load_torch(file)
    return _tensors_only(_unwrap(raw), file)


def _file_kind(file: Path) -> str:
    """``safetensors`` or ``torch``, from the suffix or, for other names, the first bytes."""
    if file.suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if file.suffix in TORCH_SUFFIXES:
        return "torch"
    with open(file, "rb") as fh:
        head = fh.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip archive / legacy pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return "safetensors"
    raise WeightsError(
        f"weights: {file} is neither safetensors nor a torch file (suffix {file.suffix!r}); "
        f"use one of {', '.join(WEIGHT_SUFFIXES)}"
    )


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"weights: {file} is not a readable safetensors file ({exc}); re-download or "
            "re-convert it"
        ) from exc


def _load_torch(file: Path) -> object:
    try:
        return torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"weights: refusing {file}: it is a pickle that holds more than tensors, and "
            "loading it could run arbitrary code (torch.load weights_only=True said: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            + _CONVERT_HINT.format(path=file, stem=file.with_suffix(""))
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"weights: {file} is not a readable torch weights file ({exc}); re-download it or "
            "use a .safetensors file"
        ) from exc


def _unwrap(obj: object) -> object:
    """Peel ``{"state_dict": {...}}``-style wrappers until we reach the tensors."""
    for _ in range(4):
        if not isinstance(obj, Mapping) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _tensors_only(obj: object, file: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"weights: {file} holds a {type(obj).__name__}, not a state dict (name -> tensor); "
            "save model.state_dict() instead of the model"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(
            f"weights: {file} has no tensors at the top level or under "
            f"{', '.join(_WRAPPER_KEYS)} (keys: {', '.join(map(str, list(obj)[:8]))}); "
            "save model.state_dict()"
        )
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel / DDP
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights: {index} is not a valid shard index ({exc})") from exc
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(load_state_dict(index.parent / shard))
    return out


def hub_file(repo_id: str, filenames: Sequence[str], *, what: str, local_hint: str) -> Path:
    """Find ``repo_id/filename`` in the HF hub cache, downloading it when online.

    The cache is tried first for every candidate name (no network needed after the first
    download); then, unless ``HF_HUB_OFFLINE`` is set, ``hf_hub_download``. ``what`` and
    ``local_hint`` go into the error (e.g. ``"aesthetic head"`` and the config key to set).
    """
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError as exc:
        raise WeightsError(
            f"{what}: huggingface_hub is not installed, so weights cannot come from the hub; "
            f"{local_hint}"
        ) from exc
    for name in filenames:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    errors: list[str] = []
    if not constants.HF_HUB_OFFLINE:
        for name in filenames:
            try:
                return Path(hf_hub_download(repo_id, name))
            except Exception as exc:  # noqa: BLE001 - network, auth, missing file: all reported
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    cause = "; ".join(errors) if errors else "HF_HUB_OFFLINE is set, so no download was tried"
    raise WeightsError(
        f"{what}: weights {repo_id}/{{{','.join(filenames)}}} are not in the HF hub cache "
        f"({hub_cache_dir()}; HF_HOME={os.environ.get('HF_HOME', '<unset>')}) and could not be "
        f"downloaded ({cause}). Fix: {local_hint}; or download once with network "
        f"(`hf download {repo_id} {filenames[0]}`) and copy the cache directory to the workers"
    )


# ---- building and strict loading (the embedders) --------------------------------------------
RANDOM_INIT_SEED = 0


def seeded(build: Any) -> Any:
    """Run ``build()`` with a fixed torch seed, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def state_dict_mismatch(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Shape mismatches first (the most telling), then unexpected, then missing keys."""
    expected = model.state_dict()
    problems = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    problems += [f"unexpected {k}" for k in sd if k not in expected]
    problems += [f"missing {k}" for k in expected if k not in sd]
    return problems


def load_strict(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, model_name: str
) -> None:
    """Load ``sd`` strictly; retry through the timm module's checkpoint_filter_fn, which maps
    OpenAI / open_clip checkpoints to timm's key layout."""
    problems = state_dict_mismatch(model, sd)
    if problems:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                filtered = filter_fn(dict(sd), model)
            except Exception:  # noqa: BLE001 - the filter only helps; report the raw mismatch
                filtered = None
            if filtered is not None and not state_dict_mismatch(model, filtered):
                sd, problems = filtered, []
    if problems:
        more = f"; … {len(problems) - 6} more" if len(problems) > 6 else ""
        shown = "; ".join(problems[:6]) + more
        raise WeightsError(
            f"embed.weights: {source} does not fit {model_name} ({len(problems)} problems: "
            f"{shown}); use weights saved from this exact timm model, or change embed.model"
        )
    model.load_state_dict(sd, strict=True)
