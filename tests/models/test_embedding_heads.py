"""Embedding heads: spec parsing, widths, and the layers they compute."""

from __future__ import annotations

import pytest
import torch

from lookalike.models.heads import HEADS, create_head, parse_head_spec


def test_parse_head_spec() -> None:
    assert parse_head_spec("none") == ("none", [])
    assert parse_head_spec("Linear:256") == ("linear", [256])
    assert parse_head_spec("mlp:1024:128") == ("mlp", [1024, 128])
    with pytest.raises(ValueError, match="valid names: identity, linear, mlp, none"):
        parse_head_spec("transformer:8")
    with pytest.raises(ValueError, match="integers"):
        parse_head_spec("linear:big")
    with pytest.raises(ValueError, match="positive"):
        parse_head_spec("linear:0")


def test_identity_heads() -> None:
    for spec in ("none", "identity"):
        head = create_head(spec, 12)
        x = torch.randn(3, 12)
        assert head.out_dim == 12 and head(x) is x


def test_linear_head_is_an_affine_map_with_dropout() -> None:
    head = create_head("linear:4", 6, dropout=0.5).eval()
    x = torch.randn(3, 6)
    weight, bias = head.projection.weight, head.projection.bias
    torch.testing.assert_close(head(x), x @ weight.T + bias)
    assert head.out_dim == 4 and head.dropout.p == 0.5
    ones = torch.ones(64, 6)
    assert not torch.allclose(head.train()(ones), head.eval()(ones))


def test_mlp_head_widths_and_layers() -> None:
    head = create_head("mlp:8", 6)
    assert head.out_dim == 8 and head.layers[0].out_features == 6
    head = create_head("mlp:16:8", 6).eval()
    assert head.layers[0].out_features == 16 and head.layers[-1].out_features == 8
    x = torch.randn(5, 6)
    first, norm, _, _, last = head.layers
    hidden = (first(x) - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    hidden = hidden * norm.weight + norm.bias
    expected = last(torch.nn.functional.gelu(hidden))
    torch.testing.assert_close(head(x), expected)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="'linear'"):
        create_head("linear", 6)
    with pytest.raises(ValueError, match="'mlp:1:2:3'"):
        create_head("mlp:1:2:3", 6)
    assert set(HEADS.names()) == {"identity", "linear", "mlp", "none"}
