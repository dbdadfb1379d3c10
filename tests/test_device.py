"""Device choice: a table of environments -> device, and the no-Spark fallback."""

from __future__ import annotations

import pytest

from curator_udfs import device
from curator_udfs.device import choose_device, current_device


@pytest.mark.parametrize(
    ("visible", "addresses", "cuda", "expected"),
    [
        (None, None, False, "cpu"),  # laptop
        ("0", ["0"], False, "cpu"),  # GPU env but torch without CUDA
        ("3", ["3"], True, "cuda:0"),  # RAPIDS narrowed visibility: the task's GPU is cuda:0
        ("2,3", None, True, "cuda:0"),
        ("", ["1"], True, "cuda:1"),  # empty CUDA_VISIBLE_DEVICES -> task address
        ("  ", ["2", "5"], True, "cuda:2"),  # first address wins
        (None, ["1"], True, "cuda:1"),
        (None, [], True, "cpu"),  # executor without GPU resources
        (None, None, True, "cpu"),  # local mode on a GPU box: no GPU requested, none used
        ("-1", None, True, "cpu"),  # "-1" hides all devices
        (None, ["", " "], True, "cpu"),
    ],
)
def test_choose_device_table(
    visible: str | None, addresses: list[str] | None, cuda: bool, expected: str
) -> None:
    got = choose_device(
        cuda_visible_devices=visible, task_gpu_addresses=addresses, cuda_available=cuda
    )
    assert got == expected


def test_current_device_without_task_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device.task_gpu_addresses() is None  # pyspark importable, but no TaskContext here
    monkeypatch.setattr(device, "_cuda_available", lambda: False)
    assert current_device() == "cpu"


def test_current_device_gathers_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_cuda_available", lambda: True)
    monkeypatch.setattr(device, "task_gpu_addresses", lambda: ["7"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert current_device() == "cuda:7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert current_device() == "cuda:0"


def test_task_gpu_addresses_without_pyspark(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyspark(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "pyspark" or name.startswith("pyspark."):
            raise ImportError("no pyspark")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    assert device.task_gpu_addresses() is None
