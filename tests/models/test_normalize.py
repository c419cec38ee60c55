"""model.normalize: False keeps the norms, is saved with the model and changes its fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.embed.extract import embed_image_set
from lookalike.models import load_embedder, save_embedder
from lookalike.models.checkpoint import read_embedder_info
from lookalike.models.spec import ModelSpec, build_embedder, model_spec_from_options
from lookalike.ranking import rank

TINY = {"backbone": "timm:resnet18", "weights": "none", "pool": "gap"}


def _embedder(normalize: bool):
    torch.manual_seed(0)
    return build_embedder(ModelSpec(**TINY, normalize=normalize)).eval()


def test_unnormalised_embeddings_keep_their_norms() -> None:
    images = torch.randn(6, 3, 32, 32)
    plain, unit = _embedder(False), _embedder(True)
    with torch.inference_mode():
        raw, normalised = plain(images).numpy(), unit(images).numpy()
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(normalised, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    assert plain.config["normalize"] is False and unit.config["normalize"] is True
    assert plain.fingerprint() != unit.fingerprint()


def test_ip_and_l2_rank_differently_without_normalisation() -> None:
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(30, 6)) * rng.uniform(0.2, 5.0, size=(30, 1))).astype(np.float32)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    queries, gallery = slice(0, 10), slice(10, 30)
    naive = {
        "ip": np.argsort(-(raw[queries] @ raw[gallery].T), axis=1, kind="stable"),
        "l2": np.argsort(((raw[queries, None] - raw[None, gallery]) ** 2).sum(-1), axis=1, kind="stable"),
        "cosine": np.argsort(-(unit[queries] @ unit[gallery].T), axis=1, kind="stable"),
    }
    for metric in ("ip", "l2", "cosine"):
        found = rank(raw[queries], raw[gallery], metric=metric, k=20).neighbours.indices
        assert (found == naive[metric]).all(), metric
    assert not (naive["ip"] == naive["cosine"]).all() and not (naive["l2"] == naive["cosine"]).all()
    for metric in ("ip", "l2"):  # on normalised rows all three agree
        assert (rank(unit[queries], unit[gallery], metric=metric, k=20).neighbours.indices == naive["cosine"]).all()


def test_normalize_is_saved_with_the_model_and_switchable_on_a_checkpoint(tmp_path: Path) -> None:
    plain = _embedder(False)
    save_embedder(plain, tmp_path / "plain")
    assert read_embedder_info(tmp_path / "plain")["config"]["normalize"] is False
    assert load_embedder(tmp_path / "plain").normalize is False
    save_embedder(_embedder(True), tmp_path / "unit")
    loaded = build_embedder(ModelSpec(checkpoint=str(tmp_path / "unit"), normalize=False))
    assert loaded.normalize is False and loaded.fingerprint() == plain.fingerprint()
    assert model_spec_from_options(str(tmp_path / "unit"), normalize=False).normalize is False
    with pytest.raises(ValueError, match="carries its own model"):
        model_spec_from_options(str(tmp_path / "unit"), "timm:resnet18")


def test_extraction_with_tta_keeps_unnormalised_rows_unnormalised(tmp_path: Path) -> None:
    from PIL import Image

    from lookalike.data.records import ImageRecord, ImageSet

    records = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=str(i), path=path, label="a"))
    plain = _embedder(False)
    rows = embed_image_set(plain, ImageSet(records, "all"), tta=["flip"], device="cpu").embeddings
    assert not np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-2)
    unit = embed_image_set(_embedder(True), ImageSet(records, "all"), tta=["flip"], device="cpu").embeddings
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-4)
