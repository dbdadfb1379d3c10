"""Classifier heads: parity with LAION's real weights, dimension checks, registry, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from curator_udfs.classifiers import (
    AestheticClassifier,
    ClassifierHead,
    NsfwClassifier,
    build_head,
    register_head,
    registered_heads,
)
from curator_udfs.weights import WeightsError
from tests.conftest import shared_models_dir

MODELS = shared_models_dir()
needs_models = pytest.mark.skipif(
    not (MODELS / "reference_scores.npz").exists(),
    reason=f"real weights and reference scores not present in {MODELS}",
)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    data = np.load(MODELS / "reference_scores.npz")
    return {k: data[k] for k in data.files}


@needs_models
def test_aesthetic_parity_with_laion_pth(reference: dict[str, np.ndarray]) -> None:
    head = build_head("aesthetic", weights=str(MODELS / "sac+logos+ava1-l14-linearMSE.pth"))
    got = head.score(torch.from_numpy(reference["embeddings"])).numpy()
    assert got.shape == (64,)
    np.testing.assert_allclose(got, reference["aesthetic"], rtol=0, atol=1e-4)


@needs_models
def test_nsfw_parity_with_torch_port(reference: dict[str, np.ndarray]) -> None:
    head = build_head("nsfw", weights=str(MODELS / "clip_autokeras_binary_nsfw.safetensors"))
    got = head.score(torch.from_numpy(reference["embeddings"])).numpy()
    np.testing.assert_allclose(got, reference["nsfw_port"], rtol=0, atol=1e-5)
    assert ((got >= 0) & (got <= 1)).all()


@needs_models
def test_aesthetic_deterministic_even_if_train_is_requested(
    reference: dict[str, np.ndarray],
) -> None:
    head = build_head("aesthetic", weights=str(MODELS / "sac+logos+ava1-l14-linearMSE.pth"))
    head.train()  # dropout must stay off
    assert not head.training
    emb = torch.from_numpy(reference["embeddings"][:8])
    assert torch.equal(head.score(emb), head.score(emb))


def test_state_dict_keys_match_published_layouts() -> None:
    aesthetic = set(AestheticClassifier().state_dict())
    assert aesthetic == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    nsfw = set(NsfwClassifier().state_dict())
    expected = {"norm.mean", "norm.variance"}
    expected |= {f"linear_{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")}
    assert nsfw == expected


def test_dimension_mismatch_message() -> None:
    head = build_head("aesthetic", weights=None, random_init=True)
    with pytest.raises(ValueError) as info:
        head.check_dim(512)
    assert str(info.value) == (
        "aesthetic head expects 768-d embeddings (CLIP ViT-L/14), but the model gives 512-d; "
        "use a CLIP ViT-L/14 embedder or a head trained for 512-d"
    )
    with pytest.raises(ValueError, match="expects 768-d"):
        head.score(torch.zeros(2, 512))


def test_weights_that_do_not_fit_are_explained(tmp_path: Path) -> None:
    save_file({"layers.0.weight": torch.zeros(4, 4)}, tmp_path / "wrong.safetensors")
    with pytest.raises(WeightsError, match="do not fit AestheticClassifier.*missing layers.2"):
        build_head("aesthetic", weights=str(tmp_path / "wrong.safetensors"))


def test_weights_roundtrip_through_safetensors(tmp_path: Path) -> None:
    head = build_head("nsfw", weights=None, random_init=True, input_dim=16)
    save_file(head.state_dict(), tmp_path / "nsfw16.safetensors")
    again = build_head("nsfw", weights=str(tmp_path / "nsfw16.safetensors"), input_dim=16)
    x = torch.randn(5, 16)
    assert torch.equal(head.score(x), again.score(x))


def test_random_init_is_deterministic_and_explicit() -> None:
    a = build_head("aesthetic", weights=None, random_init=True, input_dim=32)
    b = build_head("aesthetic", weights=None, random_init=True, input_dim=32)
    x = torch.randn(3, 32)
    assert torch.equal(a.score(x), b.score(x))
    with pytest.raises(RuntimeError, match="has no weights"):
        AestheticClassifier(input_dim=32).score(x)
    with pytest.raises(ValueError, match="both weights and random_init"):
        build_head("aesthetic", weights="x.pth", random_init=True)


def test_missing_local_weights_message(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        build_head("nsfw", weights=str(tmp_path / "missing.safetensors"))


def test_default_weights_offline_say_how_to_pass_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as info:
        build_head("aesthetic", weights=None)
    msg = str(info.value)
    assert "ttj/sac-logos-ava1-l14-linearMSE" in msg and str(tmp_path) in msg
    assert "weights: /path/to/" in msg


def test_default_weights_found_in_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from tests.test_weights import fake_hub_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = build_head("nsfw", weights=None, random_init=True)
    repo, files = NsfwClassifier.HUB_WEIGHTS[0]
    fake_hub_cache(tmp_path, repo, files[0], source.state_dict())
    head = build_head("nsfw", weights=None)
    x = torch.nn.functional.normalize(torch.randn(4, 768), dim=-1)
    assert torch.equal(head.score(x), source.score(x))
    assert repo.replace("/", "--") in (head.weights_source or "")


class DoubleNorm(ClassifierHead):
    """A user head: twice the L2 norm of the first 4 dims (weights-free)."""

    name = "double_norm"
    default_output_column = "double_norm_score"
    default_input_dim = 8
    expected_embedder = "any 8-d embedder"

    def __init__(self, *, input_dim: int | None = None, output_column: str | None = None):
        super().__init__(input_dim=input_dim, output_column=output_column)
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def reset_buffers(self) -> None:
        with torch.no_grad():
            self.scale.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :4].norm(dim=1)


def test_custom_head_by_class_path_and_registry() -> None:
    head = build_head(
        "mine", weights=None, class_path="tests.test_classifiers:DoubleNorm", random_init=True
    )
    assert head.name == "mine" and head.output_column == "double_norm_score"
    assert torch.allclose(head.score(torch.ones(2, 8)), torch.tensor([4.0, 4.0]))
    register_head("double_norm", DoubleNorm)
    assert "double_norm" in registered_heads()
    head = build_head("double_norm", weights=None, random_init=True, output_column="dn")
    assert head.output_column == "dn"


def test_unknown_head_and_bad_class_path_messages() -> None:
    with pytest.raises(ValueError, match="unknown head 'clip_iqa'.*class_path"):
        build_head("clip_iqa", weights=None)
    with pytest.raises(ValueError, match="must look like 'package.module:ClassName'"):
        build_head("x", weights=None, class_path="tests.test_classifiers.DoubleNorm")
    with pytest.raises(ValueError, match="not a ClassifierHead subclass"):
        build_head("x", weights=None, class_path="torch.nn:Linear")
    with pytest.raises(TypeError):
        register_head("bad", torch.nn.Linear)  # type: ignore[arg-type]
