"""``export_model``: the parity check at export, what it refuses, and int8's reported cost."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lookalike.pipeline.export as export_module
from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder
from lookalike.models.onnx import ONNX_FILE, OnnxEmbedder, load_onnx_embedder, read_onnx_info
from lookalike.models.preprocessing import Preprocessing
from lookalike.pipeline.export import export_model
from lookalike.pipeline.export_checks import ParityError, check_parity
from lookalike.utils.folders import MANIFEST_FILE, partial_path, verify_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 6 images of 64x48 px: a colour per class, noise and a bright square per image."""
    root = tmp_path_factory.mktemp("export") / "images"
    rng = np.random.default_rng(0)
    for name, colour in {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (48, 64, 3)), 0, 255)
            top, left = rng.integers(0, 30, 2)
            pixels[top : top + 16, left : left + 16] = 255
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    torch.manual_seed(0)
    return create_embedder("timm:test_resnet", pool="gap", weights=None).eval()


@pytest.fixture(scope="module")
def exported(embedder: Embedder, images: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("export") / "onnx"
    return export_model(embedder, folder, sample=images, sample_size=12, k=5), folder


@pytest.fixture
def fast_export(exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """``export_graph`` copies the module's checked export instead of tracing the model again."""
    _, folder = exported

    def copy_graph(embedder: Embedder, path: Path, *, opset: int = 18) -> Path:
        del embedder, opset
        shutil.copyfile(folder / ONNX_FILE, path)
        return path

    monkeypatch.setattr(export_module, "export_graph", copy_graph)


def test_export_passes_parity_and_rebuilds_from_the_folder(exported, embedder: Embedder) -> None:
    result, folder = exported
    assert result.parity.passed and result.parity.images == 12 and result.parity.k == 5
    assert result.parity.max_abs_difference <= 1e-5 and result.precision == "fp32"
    verify_folder(folder, "onnx_model")
    info = read_onnx_info(folder)
    assert info["fingerprint"] == result.fingerprint == embedder.fingerprint()
    assert Preprocessing.from_dict(info["preprocessing"]) == embedder.preprocessing
    assert info["parity"]["passed"] and info["opset"] == 18


def test_a_broken_export_fails_and_leaves_no_folder(
    embedder: Embedder, images: Path, tmp_path: Path, fast_export: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = OnnxEmbedder.embed_array
    monkeypatch.setattr(OnnxEmbedder, "embed_array", lambda self, batch: original(self, batch) + 1e-2)
    target = tmp_path / "onnx"
    with pytest.raises(ParityError, match=r"does not match PyTorch .* max \|difference\| 1\.00e-02"):
        export_model(embedder, target, sample=images, sample_size=6)
    assert not target.exists() and not partial_path(target).exists()


def test_a_broken_export_keeps_the_earlier_one(
    exported, embedder: Embedder, tmp_path: Path, fast_export: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, folder = exported
    target = tmp_path / "onnx"
    shutil.copytree(folder, target)
    before = (target / MANIFEST_FILE).read_bytes()
    # Rows permuted: every entry stays in range, only the ranking reveals it.
    original = OnnxEmbedder.embed_array
    monkeypatch.setattr(OnnxEmbedder, "embed_array", lambda self, batch: original(self, batch)[::-1].copy())
    with pytest.raises(ParityError, match="nothing was written"):
        export_model(embedder, target, sample_size=8)
    assert (target / MANIFEST_FILE).read_bytes() == before
    verify_folder(target, "onnx_model")


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_parity_forgives_rounding_ties_but_not_reordered_neighbours() -> None:
    # Row 0's neighbours: row 1 (cosine 0.9), row 2 (0.8), row 3 (about 0).
    reference = _unit(np.array([[1, 0, 0], [0.9, 0.436, 0], [0.8, 0, 0.6], [0, 1, 1]]))
    swapped = reference.copy()
    swapped[[1, 2]] = swapped[[2, 1]]  # row 0's top-2 list changes; a tolerance of 1 ignores values
    report = check_parity(reference, swapped, tolerance=1.0, k=2, sample="test")
    assert not report.topk_identical and report.mismatched_images >= 1 and not report.passed
    # Rows 1 and 2 exactly tied for row 0; a 1e-7 change that swaps them is rounding, not an error.
    tied = _unit(np.array([[1, 0, 0], [0.8, 0.6, 0], [0.8, 0, 0.6], [0, 1, 1]]))
    nudged = tied.copy()
    nudged[2, 0] += 1e-7
    report = check_parity(tied, nudged, tolerance=1e-4, k=2, sample="test")
    assert report.topk_identical and report.passed
    assert 0 < report.max_abs_difference <= 2e-7  # 1e-7 in float32


def test_int8_static_quantisation_reports_its_retrieval_cost(
    embedder: Embedder, images: Path, tmp_path: Path, fast_export: None
) -> None:
    result = export_model(
        embedder, tmp_path / "int8", quantize="int8", calibration=images, calibration_size=9
    )
    assert result.precision == "int8" and result.fingerprint != embedder.fingerprint()
    assert result.quantization == {"mode": "static", "method": "minmax", "calibration_images": 9}
    cost = result.retrieval_cost
    assert cost is not None and cost.evaluated_on == "holdout" and cost.images == 9
    int8 = load_onnx_embedder(tmp_path / "int8")
    assert int8.precision == "int8" and int8.fingerprint() == result.fingerprint
    # Reference: both graphs embed the 9 held-out images; top-1 agreement and Recall@1 by hand.
    holdout = load_source(images)
    held = holdout.select([i for i in range(len(holdout)) if holdout[i].id not in _calibrated(holdout, 9)])
    fp32_rows = embed_image_set(embedder, held, num_workers=0, device="cpu").embeddings
    int8_rows = embed_image_set(int8, held, num_workers=0, device="cpu").embeddings
    labels = np.array(held.labels)
    nearest = []
    for rows in (fp32_rows, int8_rows):
        similarity = rows @ rows.T
        np.fill_diagonal(similarity, -np.inf)
        nearest.append(similarity.argmax(axis=1))
    assert cost.top1_agreement == pytest.approx(np.mean(nearest[0] == nearest[1]))
    assert cost.fp32["recall@1"] == pytest.approx(np.mean(labels[nearest[0]] == labels), abs=1e-6)
    assert cost.int8["recall@1"] == pytest.approx(np.mean(labels[nearest[1]] == labels), abs=1e-6)
    cosine = (_unit(fp32_rows) * _unit(int8_rows)).sum(axis=1)
    assert cost.cosine_min == pytest.approx(cosine.min(), abs=1e-5) and cosine.min() > 0.5
    assert read_onnx_info(tmp_path / "int8")["retrieval_cost"]["top1_agreement"] == cost.top1_agreement


def _calibrated(images, size: int) -> set[str]:
    rows = np.unique(np.linspace(0, len(images) - 1, size).round().astype(int))
    return {images[int(i)].id for i in rows}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "tflite"}, "unknown export format 'tflite'; valid: onnx"),
        ({"quantize": "int4"}, "unknown quantisation 'int4'"),
        ({"quantize": "int8"}, "give calibration images"),
        ({"quantize": "int8", "quantize_mode": "dynamic"}, "calibration or holdout images"),
        ({"sample_size": 0}, "sample_size must be a positive integer"),
        ({"calibration_method": "kl"}, "unknown calibration method 'kl'"),
    ],
)
def test_bad_settings_fail_before_anything_is_built(settings: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        export_model("no-such-model", tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_model_names_that_are_neither_folders_nor_backbones(exported, tmp_path: Path) -> None:
    _, folder = exported
    with pytest.raises(FileNotFoundError, match="no/such/model is neither a saved model"):
        export_model(tmp_path / "no/such/model", tmp_path / "out")
    with pytest.raises(ValueError, match="is already an ONNX export"):
        export_model(folder, tmp_path / "out")
