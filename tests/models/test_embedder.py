"""The embedder: composition, config rebuild, fingerprint, save/load round trip and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Dinov2Config

from lookalike.models import create_embedder, load_embedder, read_embedder_info, save_embedder
from lookalike.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from lookalike.utils.folders import ArtefactError, read_manifest, verify_folder, write_manifest


def tiny_vit(**kwargs: object):
    return create_embedder("timm:vit_tiny_patch16_224", weights=None, img_size=32, **kwargs)


def test_composition_matches_manual_pipeline() -> None:
    embedder = create_embedder(
        "timm:resnet18", pool="gem", head="linear:8", weights=None, pool_kwargs={"p": 2.0}
    ).eval()
    images = torch.randn(3, 3, 32, 32)
    features = embedder.backbone(images).clamp(min=1e-6)
    descriptors = features.pow(2.0).mean(dim=(2, 3)).sqrt()
    expected = embedder.head.projection(descriptors)
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(embedder(images), expected, rtol=1e-4, atol=1e-5)
    assert embedder.embedding_dim == 8
    raw = create_embedder("timm:resnet18", weights=None, normalize=False).eval()
    assert not torch.allclose(raw(images).norm(dim=1), torch.ones(3))


def test_config_is_plain_and_rebuilds_the_architecture() -> None:
    embedder = tiny_vit(pool="auto", head="mlp:16:8", head_kwargs={"dropout": 0.1})
    config = embedder.config
    assert config == json.loads(json.dumps(config))
    assert config["backbone"] == "timm:vit_tiny_patch16_224" and config["pool"] == "cls"
    assert config["img_size"] == 32 and "weights" not in config
    rebuilt = create_embedder(**config, weights=None)
    rebuilt.load_state_dict(embedder.state_dict())
    assert rebuilt.fingerprint() == embedder.fingerprint()


def test_hf_config_object_is_stored_as_a_dict() -> None:
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, image_size=32, patch_size=8)  # fmt: skip
    embedder = create_embedder("hf:tiny/dinov2", weights=None, config=config)
    stored = embedder.config["config"]
    assert stored["model_type"] == "dinov2" and stored["hidden_size"] == 32
    rebuilt = create_embedder(**embedder.config, weights=None)
    assert rebuilt.embedding_dim == 32


def test_fingerprint_is_deterministic_and_sensitive() -> None:
    embedder = tiny_vit()
    first = embedder.fingerprint()
    assert first == embedder.fingerprint() and len(first) == 16
    int(first, 16)
    torch.manual_seed(123)
    other_init = tiny_vit()
    assert other_init.fingerprint() != first
    other_init.load_state_dict(embedder.state_dict())
    assert other_init.fingerprint() == first
    with torch.no_grad():
        embedder.backbone.model.blocks[1].mlp.fc2.bias[3] += 1e-6
    assert embedder.fingerprint() != first
    normalized_off = create_embedder(**{**other_init.config, "normalize": False}, weights=None)
    normalized_off.load_state_dict(other_init.state_dict())
    assert normalized_off.fingerprint() != first


def test_eval_transform_gives_the_backbone_input() -> None:
    embedder = tiny_vit().eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    tensor = embedder.eval_transform()(image)
    assert tensor.shape == (3, 32, 32)
    assert embedder(tensor.unsqueeze(0)).shape == (1, embedder.embedding_dim)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("timm:resnet18", {"pool": "gem", "head": "mlp:16:8"}),
        ("timm:vit_tiny_patch16_224", {"img_size": 32, "head": "linear:8"}),
        ("hf:tiny/dinov2", {"config": Dinov2Config(hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64, image_size=32,
                            patch_size=8).to_dict()}),
    ],
)  # fmt: skip
def test_save_load_round_trip(tmp_path: Path, name: str, kwargs: dict) -> None:
    embedder = create_embedder(name, weights=None, **kwargs)
    embedder.train()
    embedder(torch.randn(4, 3, 32, 32))  # moves BatchNorm running statistics off their init
    embedder.eval()
    images = torch.randn(2, 3, 32, 32)
    expected = embedder(images)
    folder = save_embedder(embedder, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, "manifest.json", WEIGHTS_FILE]
    info = read_embedder_info(folder)
    assert info["fingerprint"] == embedder.fingerprint()
    assert info["embedding_dim"] == embedder.embedding_dim
    for target in (folder, folder / CONFIG_FILE, folder / WEIGHTS_FILE):
        loaded = load_embedder(target)
        assert not loaded.training
        assert loaded.fingerprint() == embedder.fingerprint()
        assert loaded.preprocessing == embedder.preprocessing
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)


def test_saved_preprocessing_wins_over_the_adapters(tmp_path: Path) -> None:
    from dataclasses import replace

    embedder = tiny_vit()
    embedder.preprocessing = replace(embedder.preprocessing, crop_pct=1.0, crop_mode="squash")
    loaded = load_embedder(save_embedder(embedder, tmp_path / "m"))
    assert loaded.preprocessing.crop_mode == "squash"
    assert loaded.fingerprint() == embedder.fingerprint()


def _rewrite(folder: Path, name: str, data: bytes | str) -> None:
    """Edit one file and its manifest together, as a determined hand would."""
    raw = data.encode() if isinstance(data, str) else data
    (folder / name).write_bytes(raw)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.kind, manifest.fingerprint, manifest.extra)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_embedder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtefactError, match=r"empty/manifest\.json is missing"):
        load_embedder(tmp_path / "empty")

    folder = save_embedder(tiny_vit(), tmp_path / "model")
    assert verify_folder(folder, "model").fingerprint == load_embedder(folder).fingerprint()
    original_json = (folder / CONFIG_FILE).read_text()
    original_weights = (folder / WEIGHTS_FILE).read_bytes()

    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtefactError, match=r"model\.safetensors is missing"):
        load_embedder(folder)
    (folder / WEIGHTS_FILE).write_bytes(original_weights[:100])
    with pytest.raises(ArtefactError, match=r"model\.safetensors has 100 bytes"):
        load_embedder(folder)
    _rewrite(folder, WEIGHTS_FILE, original_weights[:100])
    with pytest.raises(ValueError, match=r"cannot load .*model\.safetensors"):
        load_embedder(folder)

    _rewrite(folder, WEIGHTS_FILE, original_weights)
    _rewrite(folder, CONFIG_FILE, "{not json")
    with pytest.raises(ValueError, match=r"embedder\.json cannot be read"):
        load_embedder(folder)
    _rewrite(folder, CONFIG_FILE, json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a lookalike embedder"):
        load_embedder(folder)

    info = json.loads(original_json)
    info["config"]["head"] = "linear:4"  # the weights hold no projection
    _rewrite(folder, CONFIG_FILE, json.dumps(info))
    with pytest.raises(ValueError, match=r"cannot load .*model\.safetensors.*head"):
        load_embedder(folder)
    info = json.loads(original_json)
    info["fingerprint"] = "0" * 16
    _rewrite(folder, CONFIG_FILE, json.dumps(info))
    with pytest.raises(ValueError, match="fingerprint"):
        load_embedder(folder)
    info = json.loads(original_json)
    info["config"]["no_such_option"] = 1
    _rewrite(folder, CONFIG_FILE, json.dumps(info))
    with pytest.raises(ValueError, match="describes no buildable embedder"):
        load_embedder(folder)


def test_unknown_names_in_create_embedder() -> None:
    with pytest.raises(ValueError, match="valid names"):
        create_embedder("timm:resnet18", pool="median", weights=None)
    with pytest.raises(ValueError, match="valid names"):
        create_embedder("timm:resnet18", head="attention:8", weights=None)
    with pytest.raises(ValueError, match="CLS token"):
        create_embedder("timm:resnet18", pool="cls", weights=None)
    with pytest.raises(ValueError, match="JSON"):
        create_embedder("timm:resnet18", pool="gem", weights=None, pool_kwargs={"p": np.float32(3)})
    with pytest.raises(ValueError, match="'gap' with options"):
        create_embedder("timm:resnet18", pool="gap", weights=None, pool_kwargs={"p": 3.0})
