"""Pooling layers against closed forms and naive loops."""

from __future__ import annotations

import pytest
import torch

from lookalike.models.pooling import POOLINGS, resolve_pooling


def naive_gem(features: torch.Tensor, p: float, eps: float) -> torch.Tensor:
    """``(B, C, P)`` -> ``(B, C)``: the GeM formula written out element by element."""
    batch, channels, positions = features.shape
    out = torch.empty(batch, channels, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            total = 0.0
            for i in range(positions):
                total += max(float(features[b, c, i]), eps) ** p
            out[b, c] = (total / positions) ** (1.0 / p)
    return out


def test_registered_names() -> None:
    assert POOLINGS.names() == ["cls", "gap", "gem", "identity", "max"]


def test_gap_on_maps_and_tokens() -> None:
    maps = torch.randn(2, 5, 3, 4)
    gap = POOLINGS.create("gap")
    torch.testing.assert_close(gap(maps), maps.sum(dim=(2, 3)) / 12)
    tokens = torch.randn(2, 7, 5)
    with_cls = POOLINGS.create("gap", has_cls_token=True)
    torch.testing.assert_close(with_cls(tokens), tokens[:, 1:].sum(dim=1) / 6)
    torch.testing.assert_close(gap(tokens), tokens.sum(dim=1) / 7)


def test_gem_matches_naive_formula_on_maps_and_tokens() -> None:
    maps = torch.randn(2, 3, 2, 3).abs()
    gem = POOLINGS.create("gem", p=3.0)
    expected = naive_gem(maps.flatten(2), 3.0, 1e-6)
    torch.testing.assert_close(gem(maps).double(), expected, rtol=1e-5, atol=1e-6)
    tokens = torch.randn(2, 5, 3)  # negatives are clamped to eps
    gem_cls = POOLINGS.create("gem", has_cls_token=True, p=2.5, eps=1e-3)
    expected = naive_gem(tokens[:, 1:].transpose(1, 2), 2.5, 1e-3)
    torch.testing.assert_close(gem_cls(tokens).double(), expected, rtol=1e-5, atol=1e-6)


def test_gem_with_p_one_is_gap_and_large_p_approaches_max() -> None:
    maps = torch.rand(2, 4, 3, 3) + 0.1
    torch.testing.assert_close(POOLINGS.create("gem", p=1.0)(maps), POOLINGS.create("gap")(maps))
    near_max = POOLINGS.create("gem", p=200.0)(maps.double())
    torch.testing.assert_close(near_max, maps.double().amax(dim=(2, 3)), rtol=2e-2, atol=0)


def test_gem_p_is_learned_unless_frozen() -> None:
    gem = POOLINGS.create("gem")
    gem(torch.rand(2, 3, 2, 2)).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs() > 0
    assert not POOLINGS.create("gem", learnable=False).p.requires_grad
    with pytest.raises(ValueError, match="positive"):
        POOLINGS.create("gem", p=0.0)


def test_max_cls_identity() -> None:
    maps = torch.randn(2, 3, 4, 4)
    expected = torch.stack([torch.stack([maps[b, c].max() for c in range(3)]) for b in range(2)])
    torch.testing.assert_close(POOLINGS.create("max")(maps), expected)
    tokens = torch.randn(2, 5, 3)
    max_tokens = POOLINGS.create("max", has_cls_token=True)(tokens)
    torch.testing.assert_close(max_tokens, tokens[:, 1:].amax(1))
    torch.testing.assert_close(POOLINGS.create("cls", has_cls_token=True)(tokens), tokens[:, 0])
    pooled = torch.randn(2, 3)
    assert POOLINGS.create("identity")(pooled) is pooled


def test_wrong_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="CLS token"):
        POOLINGS.create("cls", has_cls_token=False)
    with pytest.raises(ValueError, match="identity"):
        POOLINGS.create("gap")(torch.randn(2, 3))
    with pytest.raises(ValueError, match="pooled"):
        POOLINGS.create("identity")(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="valid names: cls, gap, gem, identity, max"):
        POOLINGS.create("avg")


@pytest.mark.parametrize(
    ("pool", "kind", "cls", "expected"),
    [
        ("auto", "tokens", True, "cls"),
        ("auto", "tokens", False, "gap"),
        ("auto", "map", False, "gap"),
        ("auto", "pooled", False, "identity"),
        ("GeM", "map", False, "gem"),
    ],
)
def test_resolve_pooling(pool: str, kind: str, cls: bool, expected: str) -> None:
    assert resolve_pooling(pool, kind, cls) == expected


def test_resolve_pooling_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="already pooled"):
        resolve_pooling("gem", "pooled", False)
    with pytest.raises(ValueError, match="needs pooled"):
        resolve_pooling("identity", "map", False)
    with pytest.raises(ValueError, match="valid names"):
        resolve_pooling("median", "map", False)
