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
    with pytest.raises(ValueError, match="'mlp'"):
        create_head("mlp", 6)
    with pytest.raises(ValueError, match="valid names: gelu, relu, silu, tanh"):
        create_head("mlp:8", 6, activation="swish")
    assert set(HEADS.names()) == {"identity", "linear", "mlp", "none"}


def test_deep_mlp_head_against_a_naive_forward() -> None:
    """``mlp:H1:H2:D`` with ReLU, BatchNorm and Dropout: two hidden layers, then the output."""
    head = create_head("mlp:12:10:4", 6, activation="relu", dropout=0.3).eval()
    assert head.out_dim == 4
    linears = [layer for layer in head.layers if isinstance(layer, torch.nn.Linear)]
    norms = [layer for layer in head.layers if isinstance(layer, torch.nn.BatchNorm1d)]
    assert [layer.out_features for layer in linears] == [12, 10, 4] and len(norms) == 2
    for norm in norms:  # non-trivial running statistics
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 6)
    hidden = x
    for linear, norm in zip(linears[:-1], norms, strict=True):
        hidden = linear(hidden)
        hidden = (hidden - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        hidden = torch.relu(hidden * norm.weight + norm.bias)
    torch.testing.assert_close(head(x), linears[-1](hidden))
    assert sum(isinstance(layer, torch.nn.Dropout) and layer.p == 0.3 for layer in head.layers) == 2


def test_mlp_head_without_batchnorm() -> None:
    head = create_head("mlp:8:3", 5, batchnorm=False, activation="tanh").eval()
    first, _, _, last = head.layers
    x = torch.randn(4, 5)
    torch.testing.assert_close(head(x), last(torch.tanh(first(x))))
