"""Weight loading: safetensors, weights-only torch files, directories, the hub cache; never
arbitrary pickles."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from curator_udfs.weights import WeightsError, hub_file, load_state_dict


def tiny_state() -> dict[str, torch.Tensor]:
    return {"layers.0.weight": torch.arange(6.0).reshape(2, 3), "layers.0.bias": torch.ones(2)}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_safetensors_file(tmp_path: Path) -> None:
    save_file(tiny_state(), tmp_path / "w.safetensors")
    assert_same(load_state_dict(tmp_path / "w.safetensors"), tiny_state())


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_torch_file(tmp_path: Path, suffix: str) -> None:
    torch.save(tiny_state(), tmp_path / f"w{suffix}")
    assert_same(load_state_dict(str(tmp_path / f"w{suffix}")), tiny_state())


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_torch_file_wrappers_unwrapped(tmp_path: Path, wrapper: str) -> None:
    torch.save({wrapper: tiny_state(), "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pth")
    assert_same(load_state_dict(tmp_path / "ckpt.pth"), tiny_state())


def test_dataparallel_prefix_stripped(tmp_path: Path) -> None:
    torch.save({f"module.{k}": v for k, v in tiny_state().items()}, tmp_path / "dp.pt")
    assert_same(load_state_dict(tmp_path / "dp.pt"), tiny_state())


def test_directory_prefers_model_safetensors(tmp_path: Path) -> None:
    save_file(tiny_state(), tmp_path / "model.safetensors")
    torch.save({"other": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    assert_same(load_state_dict(tmp_path), tiny_state())


def test_directory_falls_back_to_pytorch_model_bin(tmp_path: Path) -> None:
    torch.save(tiny_state(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    assert_same(load_state_dict(tmp_path), tiny_state())


def test_directory_with_single_weights_file(tmp_path: Path) -> None:
    torch.save(tiny_state(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    assert_same(load_state_dict(tmp_path), tiny_state())


def test_sharded_safetensors_directory(tmp_path: Path) -> None:
    state = tiny_state()
    save_file({"layers.0.weight": state["layers.0.weight"]}, tmp_path / "a.safetensors")
    save_file({"layers.0.bias": state["layers.0.bias"]}, tmp_path / "b.safetensors")
    index = {"weight_map": {"layers.0.weight": "a.safetensors", "layers.0.bias": "b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same(load_state_dict(tmp_path), state)


def test_empty_directory_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no weights file in directory.*model.safetensors"):
        load_state_dict(tmp_path)


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(WeightsError) as info:
        load_state_dict(missing)
    msg = str(info.value)
    assert str(missing) in msg and "not found" in msg
    assert "HF hub" in msg and "HF_HOME" in msg


def test_missing_relative_path_reports_absolute_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match=str(tmp_path / "rel.safetensors").replace("+", r"\+")):
        load_state_dict("rel.safetensors")


class _Exploit:
    """Unpickling this would create a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_malicious_torch_pickle_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"layers.0.weight": torch.zeros(1), "payload": _Exploit(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(WeightsError) as info:
        load_state_dict(evil)
    msg = str(info.value)
    assert "refusing" in msg and "arbitrary code" in msg and "safetensors" in msg
    assert not marker.exists(), "the pickle's code ran"


def test_malicious_raw_pickle_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-raw"
    evil = tmp_path / "pytorch_model.bin"
    evil.write_bytes(pickle.dumps({"w": _Exploit(marker)}, protocol=2))
    with pytest.raises(WeightsError, match="refusing"):
        load_state_dict(tmp_path)  # found through the directory lookup, still refused
    assert not marker.exists(), "the pickle's code ran"


def test_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(WeightsError, match="not a readable torch"):
        load_state_dict(tmp_path / "bad.pt")


def test_non_state_dict_content(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_state_dict(tmp_path / "list.pt")


def fake_hub_cache(cache: Path, repo_id: str, filename: str, payload: dict) -> Path:
    """Lay out a file the way huggingface_hub caches it (refs/main -> snapshots/<rev>)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    if filename.endswith(".safetensors"):
        save_file(payload, snapshot / filename)
    else:
        torch.save(payload, snapshot / filename)
    return snapshot / filename


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache under tmp_path with downloads disabled."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return cache


def test_hub_file_from_cache_offline(offline_hub: Path) -> None:
    expected = fake_hub_cache(offline_hub, "org/repo", "model.safetensors", tiny_state())
    got = hub_file("org/repo", ["missing.pth", "model.safetensors"], what="t", local_hint="x")
    assert os.path.samefile(got, expected)
    assert_same(load_state_dict(got), tiny_state())


def test_hub_file_offline_miss_says_where_and_how(offline_hub: Path) -> None:
    with pytest.raises(WeightsError) as info:
        hub_file("org/repo", ["model.safetensors"], what="aesthetic head", local_hint="pass X")
    msg = str(info.value)
    assert str(offline_hub) in msg and "HF_HOME" in msg and "HF_HUB_OFFLINE" in msg
    assert "pass X" in msg and "org/repo" in msg
