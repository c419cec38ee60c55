"""WiSE-FT weight interpolation against a per-tensor formula and its end points."""

from __future__ import annotations

import pytest
import torch

from lookalike.models import create_embedder
from lookalike.models.wise_ft import interpolate_state, wise_ft


def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    start = create_embedder("timm:resnet18", weights=None, pool="gap", head="linear:8")
    tuned = create_embedder("timm:resnet18", weights=None, pool="gap", head="linear:8")
    with torch.no_grad():
        for module in tuned.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.num_batches_tracked.fill_(7)
    return start.eval(), tuned.eval()


def test_every_float_tensor_is_interpolated_and_integers_are_the_finetuned() -> None:
    start, tuned = pair()
    mixed = wise_ft(start, tuned, 0.3).state_dict()
    first, second = start.state_dict(), tuned.state_dict()
    for name, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.7 * first[name] + 0.3 * second[name])
        else:
            assert torch.equal(value, second[name]), name
    assert any(not value.is_floating_point() for value in mixed.values())


def test_end_points_are_the_two_models() -> None:
    start, tuned = pair()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wise_ft(start, tuned, 0.0)(images), start(images))
        torch.testing.assert_close(wise_ft(start, tuned, 1.0)(images), tuned(images))
    assert wise_ft(start, tuned, 1.0).fingerprint() == tuned.fingerprint()


def test_mismatches_are_refused() -> None:
    start, tuned = pair()
    other = create_embedder("timm:resnet18", weights=None, pool="gap", head="linear:4")
    with pytest.raises(ValueError, match="configs differ"):
        wise_ft(other, tuned, 0.5)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got 1.5"):
        wise_ft(start, tuned, 1.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_state({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="one architecture"):
        interpolate_state({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 0.5)
