"""Gradient checkpointing (``trainer.grad_checkpointing``): the same gradients as without, the
blocks really recomputed, a clear refusal where the library has none, and a training run with it
on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lookalike.models import create_backbone
from lookalike.models.backbones.base import Backbone
from lookalike.models.backbones.timm_backbone import TimmBackbone
from lookalike.train.run import run_training
from tiny_training import tiny_config, write_images

OPEN_CLIP_TINY: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}


def hf_vit_config() -> dict[str, Any]:
    return {
        "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "image_size": 32, "patch_size": 8,
    }  # fmt: skip


TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "timm_vit": ("timm:vit_tiny_patch16_224", {"img_size": 32}),
    "timm_cnn": ("timm:test_efficientnet_gn", {}),
    "open_clip_vit": ("open_clip:ViT-B-32/openai", OPEN_CLIP_TINY),
    "hf_vit": ("hf:tiny/vit", {"config": hf_vit_config()}),
}


def gradients(
    backbone: Backbone, images: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any], int]:
    """The features, every parameter's gradient of a fixed function of them, and the bytes of
    activations the forward pass kept for the backward pass (what checkpointing saves)."""
    backbone.zero_grad(set_to_none=True)
    kept = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, nn.Parameter):
            kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        features = backbone(images)
    weights = torch.linspace(-1, 1, features.numel()).reshape(features.shape)
    (features * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in backbone.named_parameters() if p.grad is not None}
    return features.detach(), grads, kept[0]


def count_block_calls(backbone: Backbone) -> list[int]:
    """A counter of forward calls of the first layer the backbone's first block runs (a layer
    inside: transformers checkpoints a block's ``forward``, leaving its own hooks outside; the
    first: recomputation stops once the tensors backward needs are back)."""
    calls = [0]
    first: list[nn.Module] = []
    _, block = backbone.blocks()[0]

    def count(module: nn.Module, *_: Any) -> None:
        if not first:
            first.append(module)
        calls[0] += module is first[0]

    for module in block.modules():
        if not list(module.children()):
            module.register_forward_hook(count)
    return calls


@pytest.mark.parametrize("family", sorted(TINY))
def test_checkpointing_gives_the_same_gradients_and_recomputes_blocks(family: str) -> None:
    name, kwargs = TINY[family]
    torch.manual_seed(0)
    backbone = create_backbone(name, weights=None, **kwargs)
    backbone.train()  # transformers and timm checkpoint only in training mode
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calls = count_block_calls(backbone)

    plain_features, plain, plain_kept = gradients(backbone, images)
    plain_calls, calls[0] = calls[0], 0
    backbone.set_grad_checkpointing(True)
    features, checkpointed, kept = gradients(backbone, images)

    assert plain_calls == 1
    assert calls[0] == 2, "the first block was not recomputed in the backward pass"
    assert kept < 0.7 * plain_kept, f"{kept} of {plain_kept} activation bytes still kept"
    torch.testing.assert_close(features, plain_features, rtol=1e-5, atol=1e-6)
    assert checkpointed.keys() == plain.keys() and len(plain) > 4
    for key, grad in plain.items():
        torch.testing.assert_close(checkpointed[key], grad, rtol=1e-4, atol=1e-6, msg=key)

    backbone.set_grad_checkpointing(False)
    calls[0] = 0
    gradients(backbone, images)
    assert calls[0] == 1


@pytest.mark.parametrize("name", ["torchvision:resnet18", "efficientnet_lite:lite0"])
def test_backbones_without_checkpointing_refuse_it_in_one_line(name: str) -> None:
    backbone = create_backbone(name, weights=None)
    with pytest.raises(ValueError, match="does not support gradient checkpointing.*"
                       "trainer.grad_checkpointing=false"):
        backbone.set_grad_checkpointing(True)
    backbone.set_grad_checkpointing(False)  # turning it off is always fine


def test_a_model_without_checkpointing_support_is_refused() -> None:
    backbone = create_backbone("hf:tiny/vit", weights=None, config=hf_vit_config())
    backbone.model.supports_gradient_checkpointing = False  # an architecture without it
    with pytest.raises(ValueError, match=r"hf:tiny/vit \(ViTModel\) does not support"):
        backbone.set_grad_checkpointing(True)


def test_training_with_checkpointing_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(
        write_images(tmp_path / "img"), tmp_path / "run", "trainer.grad_checkpointing=true",
        "trainer.max_epochs=1", "data.val_split=none",
    )
    asked: list[bool] = []
    enable = TimmBackbone.set_grad_checkpointing

    def spy(self: TimmBackbone, enabled: bool = True) -> None:
        asked.append(enabled)
        enable(self, enabled)
        assert self.model.grad_checkpointing is enabled

    monkeypatch.setattr(TimmBackbone, "set_grad_checkpointing", spy)
    outcome = run_training(config)
    assert asked == [True]
    assert outcome.epochs == 1 and outcome.model_dir.is_dir()

    refused = tiny_config(
        write_images(tmp_path / "img2"), tmp_path / "run2", "trainer.grad_checkpointing=true",
        "model.backbone=torchvision:resnet18", "model.head=none",
    )
    with pytest.raises(ValueError, match="torchvision:resnet18 does not support gradient"):
        run_training(refused)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_freeing_cached_gpu_memory_returns_the_allocators_unused_blocks() -> None:
    from lookalike.utils.devices import free_cached_gpu_memory

    block = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    del block  # freed to the caching allocator, still reserved
    reserved = torch.cuda.memory_reserved()
    assert reserved >= 64 << 20
    released = free_cached_gpu_memory()
    assert released == reserved - torch.cuda.memory_reserved() and released >= 64 << 20
