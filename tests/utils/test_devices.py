"""Device names are checked before use: unknown names and devices this machine lacks are refused
with one line naming the value given (CUDA is simulated, so the tests run on any machine)."""

from __future__ import annotations

import pytest
import torch

from lookalike.utils.devices import check_accelerator, check_device, resolve_device


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("name", ["cpu", "auto", torch.device("cpu")])
def test_valid_names_pass_unchanged(name: str | torch.device) -> None:
    assert check_device(name) == str(name)


@pytest.mark.parametrize("name", ["banana", "", "cuda:x", "gpu", "meta", "cpu:0:1"])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"(unknown|unsupported) device") as info:
        check_device(name)
    assert repr(name) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_a_gpu_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"device '{name}' requested but this machine has no"):
        check_device(name)


@pytest.mark.usefixtures("one_gpu")
def test_a_gpu_index_beyond_the_count_is_refused() -> None:
    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"'cuda:7' does not exist: this machine has 1 CUDA"):
        check_device("cuda:7")


def test_auto_can_be_refused_where_it_means_nothing() -> None:
    with pytest.raises(ValueError, match="'auto' is not accepted here"):
        check_device("auto", allow_auto=False)


@pytest.mark.usefixtures("no_gpu")
def test_accelerators() -> None:
    check_accelerator("cpu", 1)
    check_accelerator("auto")
    with pytest.raises(ValueError, match="unknown trainer.accelerator 'tpu-ish'"):
        check_accelerator("tpu-ish")
    with pytest.raises(ValueError, match="trainer.accelerator='gpu' needs CUDA"):
        check_accelerator("gpu", 1)


@pytest.mark.usefixtures("one_gpu")
@pytest.mark.parametrize("devices", [2, "2", [0, 1], "0,3", 0, "many"])
def test_accelerator_devices_beyond_the_machine(devices: object) -> None:
    with pytest.raises(ValueError, match="trainer.devices"):
        check_accelerator("gpu", devices)
    check_accelerator("gpu", 1)
    check_accelerator("cuda", [0])


@pytest.mark.parametrize(("gpus", "expected"), [(0, "cpu"), (1, "cuda")])
def test_auto_resolves_to_cuda_only_where_there_is_one(
    monkeypatch: pytest.MonkeyPatch, gpus: int, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.usefixtures("one_gpu")
def test_resolve_checks_the_name_first() -> None:
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="device 'cuda:3' does not exist"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="unknown device 'banana'"):
        resolve_device("banana")
