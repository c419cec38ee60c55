"""LoRA: adapters on timm, transformers and open_clip ViTs, their training, and merging back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, Dinov2Config, ViTConfig

from lookalike.losses import create_loss
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.embedder import Embedder
from lookalike.models.lora import merge_lora
from lookalike.models.split_attention import SplitProjectionAttention
from lookalike.train.finetune import FinetuneSpec, apply_finetune

HF_TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "image_size": 32, "patch_size": 8,
}  # fmt: skip
OPEN_CLIP_TINY: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}
QKV = {"q_proj", "k_proj", "v_proj"}
FAMILIES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "timm": (
        "timm:vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        {"qkv"},
    ),
    "hf-dinov2": ("hf:tiny/dinov2", {"config": Dinov2Config(**HF_TINY)}, QKV),
    "hf-vit": ("hf:tiny/vit", {"config": ViTConfig(**HF_TINY)}, QKV),
    "hf-clip": ("hf:tiny/clip", {"config": CLIPVisionConfig(**HF_TINY, projection_dim=16)}, QKV),
    "open_clip": ("open_clip:ViT-B-32", OPEN_CLIP_TINY, QKV),  # text tower kept, not adapted
}


def build(family: str) -> Embedder:
    name, kwargs, _ = FAMILIES[family]
    return create_embedder(name, weights=None, head="linear:8", **kwargs)


def sgd_steps(embedder: Embedder, steps: int = 2) -> None:
    loss = create_loss("arcface", embedding_dim=8, num_classes=3)
    trainable = [p for p in [*embedder.parameters(), *loss.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(embedder(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))["loss"].backward()
        optimizer.step()


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_adapters_and_merges_to_a_plain_model(family: str) -> None:
    embedder = build(family).eval()
    plain_keys = set(embedder.state_dict())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        base_output = embedder(images)

    blocks = apply_finetune(embedder, FinetuneSpec("lora", lora_r=4, lora_alpha=8))
    assert blocks == [name for name, _ in embedder.backbone.blocks()]
    backbone_trainable = {n for n, p in embedder.backbone.named_parameters() if p.requires_grad}
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in backbone_trainable}
    assert adapted == FAMILIES[family][2]
    assert all(".lora_A." in n or ".lora_B." in n for n in backbone_trainable)
    assert len(backbone_trainable) == 2 * len(adapted) * len(blocks)
    with torch.no_grad():  # B = 0 at initialisation: the adapted model is the base model
        torch.testing.assert_close(embedder(images), base_output, atol=1e-6, rtol=0)

    before = {k: v.clone() for k, v in embedder.state_dict().items()}
    embedder.train()
    sgd_steps(embedder)  # two steps: A's gradient is zero while B is
    embedder.eval()
    after = embedder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    head = {k for k, _ in embedder.head.named_parameters(prefix="head")}
    assert changed == {f"backbone.{n}" for n in backbone_trainable} | head
    with torch.no_grad():
        lora_output = embedder(images)
    assert not torch.allclose(lora_output, base_output, atol=1e-4)

    merged = merge_lora(embedder).eval()
    assert set(merged.state_dict()) == plain_keys
    assert not any("lora" in type(m).__name__.lower() for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(images), lora_output, atol=1e-5, rtol=1e-4)
    assert any(".lora_A." in k for k in embedder.state_dict())  # the original keeps its adapters


def test_merged_weight_is_base_plus_scaled_low_rank_product() -> None:
    embedder = build("timm")
    spec = FinetuneSpec("lora", lora_r=2, lora_alpha=6)
    apply_finetune(embedder, spec)
    qkv = embedder.backbone.model.blocks[1].attn.qkv
    with torch.no_grad():
        qkv.lora_B["default"].weight.normal_()
    base = qkv.base_layer.weight.detach().clone()
    a, b = qkv.lora_A["default"].weight, qkv.lora_B["default"].weight
    expected = base + (6 / 2) * b.detach() @ a.detach()
    merged = merge_lora(embedder).backbone.model.blocks[1].attn.qkv
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, expected)
    assert all(p.requires_grad for p in merge_lora(embedder).parameters())


def test_merged_embedder_saves_and_loads(tmp_path: Path) -> None:
    embedder = build("open_clip")
    apply_finetune(embedder, FinetuneSpec("lora"))
    for name, parameter in embedder.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter)
    merged = merge_lora(embedder).eval()
    loaded = load_embedder(save_embedder(merged, tmp_path / "model"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), merged(images))
    assert loaded.fingerprint() == merged.fingerprint()


def test_apply_finetune_injects_lora_once() -> None:
    embedder = build("timm")
    spec = FinetuneSpec("lora", lora_r=4)
    apply_finetune(embedder, spec)
    keys = list(embedder.state_dict())
    for epoch in (1, 2):
        apply_finetune(embedder, spec, epoch)
    assert list(embedder.state_dict()) == keys
    with pytest.raises(ValueError, match="already carries LoRA adapters of rank 4"):
        apply_finetune(embedder, FinetuneSpec("lora", lora_r=8))


def test_lora_targets_choose_the_layers() -> None:
    embedder = build("timm")
    apply_finetune(embedder, FinetuneSpec("lora", lora_targets=["fc1", "proj"]))
    adapted = {
        n.split(".lora_")[0].split("blocks.")[1]
        for n, p in embedder.backbone.named_parameters()
        if p.requires_grad
    }
    assert adapted == {"0.mlp.fc1", "0.attn.proj", "1.mlp.fc1", "1.attn.proj"}
    # patch_embed.proj lies outside the blocks and stays a plain layer
    assert type(embedder.backbone.model.patch_embed.proj) is nn.Conv2d


def test_unknown_lora_targets_list_the_linear_layers() -> None:
    with pytest.raises(ValueError, match=r"its linear layers: fc1, fc2, proj, qkv"):
        apply_finetune(build("timm"), FinetuneSpec("lora", lora_targets=["query"]))


def _attention_pair(batch_first: bool, kdim: int | None) -> tuple[nn.Module, nn.Module]:
    attention = nn.MultiheadAttention(
        16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim
    ).eval()
    with torch.no_grad():  # non-zero biases so a misplaced bias shows
        for name, parameter in attention.named_parameters():
            if "bias" in name:
                parameter.normal_()
    return attention, SplitProjectionAttention.from_multihead_attention(attention).eval()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float3d", "padding"])
def test_split_attention_matches_multihead_attention(
    batch_first: bool, kdim: int | None, need_weights: bool, masks: str
) -> None:
    attention, split = _attention_pair(batch_first, kdim)
    batch, target_len, source_len = 2, 5, 7
    query = torch.randn(batch, target_len, 16)
    key = torch.randn(batch, source_len, kdim or 16)
    value = torch.randn(batch, source_len, kdim or 16)
    if not batch_first:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    kwargs: dict[str, Any] = {"need_weights": need_weights}
    if masks == "bool":
        kwargs["attn_mask"] = torch.rand(target_len, source_len) > 0.7
        kwargs["attn_mask"][:, 0] = False
    elif masks == "float3d":
        kwargs["attn_mask"] = torch.randn(batch * 4, target_len, source_len)
    elif masks == "padding":
        kwargs["key_padding_mask"] = torch.zeros(batch, source_len, dtype=torch.bool)
        kwargs["key_padding_mask"][1, -3:] = True
    expected, expected_weights = attention(query, key, value, **kwargs)
    output, weights = split(query, key, value, **kwargs)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
    else:
        assert weights is None


@pytest.mark.parametrize("kdim", [None, 12])
def test_split_attention_converts_back_to_the_same_tensors(kdim: int | None) -> None:
    attention, split = _attention_pair(batch_first=True, kdim=kdim)
    restored = split.to_multihead_attention()
    assert type(restored) is nn.MultiheadAttention
    original, back = attention.state_dict(), restored.state_dict()
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_split_attention_rejects_what_it_cannot_reproduce() -> None:
    with pytest.raises(ValueError, match="add_bias_kv"):
        SplitProjectionAttention.from_multihead_attention(
            nn.MultiheadAttention(16, 4, add_bias_kv=True)
        )
    _, split = _attention_pair(batch_first=True, kdim=None)
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match="is_causal needs"):
        split(x, x, x, is_causal=True)


def test_lora_first_block_adapts_only_the_later_blocks(tmp_path: Path) -> None:
    """A 4-block ViT with lora_first_block=2: blocks 0-1 stay exactly pre-trained."""
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2}
    embedder = create_embedder("timm:vit_tiny_patch16_224", weights=None, **kwargs)
    spec = FinetuneSpec("lora", lora_r=2, lora_first_block=2)
    apply_finetune(embedder, spec)
    adapted = sorted({
        name.split(".lora_")[0]
        for name, parameter in embedder.backbone.named_parameters()
        if parameter.requires_grad
    })
    assert adapted == ["model.blocks.2.attn.qkv", "model.blocks.3.attn.qkv"]
    with pytest.raises(ValueError, match=r"lora_first_block must lie in \[0, 4\)"):
        other = create_embedder("timm:vit_tiny_patch16_224", weights=None, **kwargs)
        apply_finetune(other, FinetuneSpec("lora", lora_first_block=4))
