"""Classifier heads that score embeddings: LAION aesthetic, LAION NSFW, and your own.

A head is a small ``torch.nn.Module`` with a name, the output column it fills, and the input
width it expects. Heads run on the embedder's device right after each embedding batch (embed
job) or on stored embeddings (classify job). They are inference-only: always in eval mode, and
they refuse to score until weights are loaded, unless random init was asked for explicitly.

Default weights (``load_weights(None)``), looked up in the HF hub cache first, then downloaded
when online:

- aesthetic: ``ttj/sac-logos-ava1-l14-linearMSE`` / ``model.safetensors``, then
  ``camenduru/improved-aesthetic-predictor`` / ``sac+logos+ava1-l14-linearMSE.pth`` (both LAION's
  ``sac+logos+ava1-l14-linearMSE`` weights, keys ``layers.N.weight/bias``).
- nsfw: ``yiting/NSFWDetector`` / ``clip_autokeras_binary_nsfw.pth`` (the torch port of LAION's
  Keras detector, keys ``norm.mean, norm.variance, linear_1..4``).

Override per head class via ``HUB_WEIGHTS`` or pass a local file/directory.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .class_path import import_class
from .weights import WeightsError, hub_file, load_state_dict

__all__ = [
    "AestheticClassifier",
    "ClassifierHead",
    "NsfwClassifier",
    "build_head",
    "head_class",
    "register_head",
    "registered_heads",
]

RANDOM_INIT_SEED = 0


class ClassifierHead(nn.Module):
    """Base for heads: ``score(emb (n, input_dim)) -> (n,)`` float32 on the head's device.

    Subclasses set the class attributes and implement ``forward``. ``input_dim`` and
    ``output_column`` can be overridden per instance (tiny test embedders have other widths).
    """

    name: str = "head"
    default_output_column: ClassVar[str] = "score"
    default_input_dim: ClassVar[int] = 768
    # Shown in dimension errors: which embedder the head was trained for.
    expected_embedder: ClassVar[str] = "CLIP ViT-L/14"
    # Heads are trained on L2-normalised embeddings; the embed job normalises before scoring.
    expects_normalized: ClassVar[bool] = True
    # (repo_id, (filenames...)) candidates for load_weights(None), tried in order.
    HUB_WEIGHTS: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()

    def __init__(self, *, input_dim: int | None = None, output_column: str | None = None):
        super().__init__()
        self.input_dim = int(input_dim if input_dim is not None else self.default_input_dim)
        self.output_column = output_column or self.default_output_column
        self.weights_source: str | None = None  # path, hub file, or "random"
        self.train(False)

    def train(self, mode: bool = True) -> ClassifierHead:
        """Heads are inference-only: dropout must never be active, so eval mode always."""
        return super().train(False)

    # ---- weights ------------------------------------------------------------------------------
    def load_weights(self, path: str | Path | None) -> ClassifierHead:
        """Load a local file/directory, or with ``None`` the default weights from the HF hub."""
        if path is None:
            file = self._hub_weights_file()
        else:
            file = Path(path)
        state = load_state_dict(file)
        self._load_checked(state, str(path if path is not None else file))
        self.weights_source = str(file)
        return self

    def init_random(self, seed: int = RANDOM_INIT_SEED) -> ClassifierHead:
        """Deterministic random weights (tests, demos): every worker gets the same head."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.modules():
                reset = getattr(module, "reset_parameters", None)
                if module is not self and callable(reset):
                    reset()
            self.reset_buffers()
        self.weights_source = "random"
        return self

    def reset_buffers(self) -> None:
        """Give non-learned buffers neutral values for random init (override if any)."""

    def _hub_weights_file(self) -> Path:
        if not self.HUB_WEIGHTS:
            raise WeightsError(
                f"{self.name} head: no default weights on the HF hub; pass weights: /path/to/file"
            )
        hint = (
            f"pass a local file, e.g. classifiers: [{{name: {self.name}, weights: "
            f"/path/to/weights.safetensors}}]"
        )
        errors: list[WeightsError] = []
        for repo_id, filenames in self.HUB_WEIGHTS:
            try:
                return hub_file(repo_id, filenames, what=f"{self.name} head", local_hint=hint)
            except WeightsError as exc:
                errors.append(exc)
        raise WeightsError(" | ".join(str(e) for e in errors))

    def _load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        expected = self.state_dict()
        problems = [f"missing {k}" for k in expected if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in expected]
        problems += [
            f"{k}: file {tuple(state[k].shape)} vs head {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        if problems:
            raise WeightsError(
                f"{self.name} head: weights {source} do not fit {type(self).__name__}"
                f"(input_dim={self.input_dim}): {'; '.join(problems[:6])}; use the weights "
                f"made for this head, or a head class matching the file"
            )
        self.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)

    # ---- scoring ------------------------------------------------------------------------------
    def check_dim(self, d: int) -> None:
        """Raise ValueError when the embedder's width is not what this head was trained on."""
        if int(d) != self.input_dim:
            raise ValueError(
                f"{self.name} head expects {self.input_dim}-d embeddings "
                f"({self.expected_embedder}), but the model gives {d}-d; use a "
                f"{self.expected_embedder} embedder or a head trained for {d}-d"
            )

    def score(self, emb: torch.Tensor) -> torch.Tensor:
        """Scores ``(n,)`` float32 for embeddings ``(n, input_dim)`` (moved to the head)."""
        if self.weights_source is None:
            raise RuntimeError(
                f"{self.name} head has no weights; call load_weights(path or None), or build it "
                "with random_init=True for tests"
            )
        if emb.ndim != 2:
            raise ValueError(f"{self.name} head: embeddings must be (n, d), got {tuple(emb.shape)}")
        self.check_dim(emb.shape[1])
        param = next(self.parameters(), None)
        device = param.device if param is not None else emb.device
        with torch.inference_mode():
            out = self(emb.to(device=device, dtype=torch.float32))
        return out.float().reshape(-1)


class AestheticClassifier(ClassifierHead):
    """LAION improved-aesthetic predictor: linear MLP on L2-normalised CLIP ViT-L/14 embeddings.

    Exactly the published layout (``layers.0/2/4/6/7``), so ``sac+logos+ava1-l14-linearMSE.pth``
    loads as is. Scores are roughly 0–10.
    """

    name = "aesthetic"
    default_output_column = "aesthetic_score"
    HUB_WEIGHTS = (
        ("ttj/sac-logos-ava1-l14-linearMSE", ("model.safetensors",)),
        ("camenduru/improved-aesthetic-predictor", ("sac+logos+ava1-l14-linearMSE.pth",)),
    )

    def __init__(self, *, input_dim: int | None = None, output_column: str | None = None):
        super().__init__(input_dim=input_dim, output_column=output_column)
        self.layers = nn.Sequential(
            nn.Linear(self.input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )
        self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Normalization(nn.Module):
    """Keras ``Normalization`` as ported: ``(x - mean) / sqrt(variance)``."""

    mean: torch.Tensor
    variance: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("variance", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.variance)


class NsfwClassifier(ClassifierHead):
    """LAION CLIP-based NSFW detector (torch port): probability 0–1 that an image is NSFW."""

    name = "nsfw"
    default_output_column = "nsfw_score"
    HUB_WEIGHTS = (("yiting/NSFWDetector", ("clip_autokeras_binary_nsfw.pth",)),)

    def __init__(self, *, input_dim: int | None = None, output_column: str | None = None):
        super().__init__(input_dim=input_dim, output_column=output_column)
        self.norm = _Normalization(self.input_dim)
        self.linear_1 = nn.Linear(self.input_dim, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)
        self.act = nn.ReLU()
        self.train(False)

    def reset_buffers(self) -> None:
        self.norm.mean.zero_()
        self.norm.variance.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = self.act(self.linear_1(x))
        x = self.act(self.linear_2(x))
        x = self.act(self.linear_3(x))
        return torch.sigmoid(self.linear_4(x))


# Name -> head class for this Python process. Executors are other processes: a head registered
# on the driver only is unknown there, so Spark jobs should name custom heads by class_path.
_REGISTRY: dict[str, type[ClassifierHead]] = {
    AestheticClassifier.name: AestheticClassifier,
    NsfwClassifier.name: NsfwClassifier,
}


def register_head(name: str, cls: type[ClassifierHead]) -> None:
    """Make ``cls`` available to :func:`build_head` under ``name`` in this process."""
    if not (inspect.isclass(cls) and issubclass(cls, ClassifierHead)):
        raise TypeError(f"register_head({name!r}): {cls!r} is not a ClassifierHead subclass")
    _REGISTRY[name] = cls


def registered_heads() -> list[str]:
    """Names :func:`build_head` knows without a class_path."""
    return sorted(_REGISTRY)


def head_class(name: str, class_path: str | None = None) -> type[ClassifierHead]:
    """Resolve a head class from ``"package.module:ClassName"`` or the registry."""
    if class_path:
        cls: type[ClassifierHead] = import_class(
            class_path, ClassifierHead, f"classifiers[{name}].class_path"
        )
        return cls
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"classifiers: unknown head {name!r}; built-in: {', '.join(registered_heads())}; "
            "for your own head set class_path: 'package.module:ClassName' (register_head only "
            "affects the current process, not Spark executors)"
        ) from None


def build_head(
    name: str,
    *,
    weights: str | None,
    class_path: str | None = None,
    output_column: str | None = None,
    input_dim: int | None = None,
    random_init: bool = False,
) -> ClassifierHead:
    """Build a head with its weights: a local path, the hub default (``weights=None``), or
    seeded random init (``random_init=True``, only for tests and demos)."""
    if random_init and weights:
        raise ValueError(
            f"classifiers[{name}]: both weights and random_init given; drop one of them"
        )
    cls = head_class(name, class_path)
    head = cls(input_dim=input_dim, output_column=output_column)
    if name != cls.name:
        head.name = name  # messages and errors use the configured name
    if random_init:
        return head.init_random()
    return head.load_weights(weights)
