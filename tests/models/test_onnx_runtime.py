"""The ONNX export folder and its ONNX Runtime embedder against the PyTorch model it came from."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.models import ModelSpec, build_embedder, create_embedder
from lookalike.models.embedder import Embedder
from lookalike.models.onnx import OnnxEmbedder, load_onnx_embedder, read_onnx_info
from lookalike.models.onnx.export import export_graph
from lookalike.models.onnx.folder import ONNX_FILE, finish_folder, is_onnx_folder
from lookalike.models.preprocessing import Preprocessing
from lookalike.utils.folders import ArtefactError

TINY = "timm:test_resnet"  # random weights, 160 px input, a 96-d embedding: exports in seconds


def _description(embedder: Embedder) -> dict:
    return {
        "config": embedder.config,
        "preprocessing": embedder.preprocessing.to_dict(),
        "embedding_dim": embedder.embedding_dim,
        "normalize": embedder.normalize,
        "fingerprint": embedder.fingerprint(),
        "source_fingerprint": embedder.fingerprint(),
        "precision": "fp32",
        "opset": 18,
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Embedder, Path]:
    """A random-weight embedder (BatchNorm statistics made non-trivial) and its export folder."""
    torch.manual_seed(0)
    embedder = create_embedder(TINY, pool="gap", weights=None)
    with torch.no_grad():  # running statistics away from (0, 1), so eval mode matters
        for module in embedder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    embedder.eval()
    folder = tmp_path_factory.mktemp("onnx") / "export"
    folder.mkdir()
    export_graph(embedder, folder / ONNX_FILE)
    finish_folder(folder, _description(embedder))
    return embedder, folder


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_onnx_runtime_matches_pytorch_at_any_batch_size(exported, batch: int) -> None:
    embedder, folder = exported
    images = torch.randn(batch, 3, 160, 160)
    with torch.inference_mode():
        expected = embedder(images)
    found = load_onnx_embedder(folder)(images)
    assert found.shape == (batch, 96) and found.dtype == torch.float32
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-5)


def test_channels_last_input_gives_the_same_embeddings(exported) -> None:
    _, folder = exported
    onnx = load_onnx_embedder(folder)
    images = torch.randn(2, 3, 160, 160)
    plain = onnx(images)
    torch.testing.assert_close(onnx(images.contiguous(memory_format=torch.channels_last)), plain)


def test_folder_carries_preprocessing_and_fingerprint(exported, tmp_path: Path) -> None:
    embedder, folder = exported
    info = read_onnx_info(folder)
    assert info["fingerprint"] == embedder.fingerprint()
    assert Preprocessing.from_dict(info["preprocessing"]) == embedder.preprocessing
    onnx = build_embedder(ModelSpec(checkpoint=str(folder)))  # runtime "auto" detects the folder
    assert isinstance(onnx, OnnxEmbedder) and is_onnx_folder(folder)
    assert onnx.fingerprint() == embedder.fingerprint()
    assert onnx.preprocessing == embedder.preprocessing and onnx.embedding_dim == 96
    assert onnx.config["backbone"] == TINY and onnx.config["runtime"] == "onnxruntime"
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    torch.testing.assert_close(onnx.eval_transform()(picture), embedder.eval_transform()(picture))
    explicit = build_embedder(ModelSpec(checkpoint=str(folder / ONNX_FILE), runtime="onnxruntime"))
    assert explicit.fingerprint() == embedder.fingerprint()


def test_runtime_and_folder_must_agree(exported) -> None:
    _, folder = exported
    with pytest.raises(ValueError, match="is an ONNX export"):
        build_embedder(ModelSpec(checkpoint=str(folder), runtime="torch"))
    with pytest.raises(ValueError, match="lookalike export"):
        build_embedder(ModelSpec(backbone=TINY, weights="none", runtime="onnxruntime"))
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        build_embedder(ModelSpec(checkpoint=str(folder), runtime="tensorrt"))


def test_damaged_or_unfinished_export_is_refused(exported, tmp_path: Path) -> None:
    _, folder = exported
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    graph = bytearray((damaged / ONNX_FILE).read_bytes())
    graph[len(graph) // 2] ^= 0xFF
    (damaged / ONNX_FILE).write_bytes(bytes(graph))
    with pytest.raises(ArtefactError, match="model.onnx does not match its checksum"):
        load_onnx_embedder(damaged)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(folder, unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(ArtefactError, match="manifest"):
        build_embedder(ModelSpec(checkpoint=str(unfinished)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_onnx_embedder(tmp_path / "missing")


def test_threads_follow_torch_unless_fixed(exported) -> None:
    _, folder = exported
    following, fixed = load_onnx_embedder(folder), load_onnx_embedder(folder, threads=2)
    torch.set_num_threads(1)
    assert following.active_threads == 1 and fixed.active_threads == 2
    images = torch.randn(2, 3, 160, 160)
    torch.testing.assert_close(following(images), fixed(images), atol=1e-6, rtol=1e-6)
    options = following.session_for(1).get_session_options()
    assert options.intra_op_num_threads == 1
    assert fixed.session_for(2).get_session_options().intra_op_num_threads == 2
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load_onnx_embedder(folder, threads=0)


def test_extraction_with_onnx_runtime_matches_pytorch(exported, image_folder: Path) -> None:
    embedder, folder = exported
    images = load_source(image_folder)
    reference = embed_image_set(embedder, images, batch_size=5, num_workers=0, device="cpu")
    onnx = embed_image_set(load_onnx_embedder(folder), images, batch_size=5, num_workers=0, device="cpu")
    np.testing.assert_allclose(onnx.embeddings, reference.embeddings, atol=1e-5, rtol=1e-5)
    assert onnx.ids == reference.ids and onnx.fingerprint == reference.fingerprint


@pytest.mark.slow
def test_efficientnet_lite0_export_matches_pytorch(tmp_path: Path) -> None:
    embedder = create_embedder("efficientnet_lite:lite0", pool="gap").eval()
    export_graph(embedder, tmp_path / ONNX_FILE)
    onnx = OnnxEmbedder(tmp_path / ONNX_FILE, _description(embedder))
    images = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        expected = embedder(images)
    torch.testing.assert_close(onnx(images), expected, atol=1e-5, rtol=1e-5)


def test_server_runs_the_export_against_an_index_pytorch_built(
    exported, image_folder: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from lookalike import build_index, embed_images
    from lookalike.embed.spec import EmbedSpec
    from lookalike.serve import create_app

    embedder, folder = exported
    gallery = embed_images(image_folder, None, model=embedder, embed=EmbedSpec(num_workers=0, device="cpu"))
    _, index = build_index(gallery, tmp_path / "index")
    app = create_app(index, ModelSpec(checkpoint=str(folder), runtime="onnxruntime"))
    query = min(image_folder.rglob("*.png"))
    with TestClient(app) as client:
        reply = client.post(
            "/api/search/image", files={"images": (query.name, query.read_bytes(), "image/png")},
            data={"k": "3"},
        )  # fmt: skip
    assert reply.status_code == 200, reply.text
    hits = reply.json()["results"][0]["hits"]
    row = gallery.ids.index(next(i for i in gallery.ids if i.endswith(query.name)))
    # Random-weight features of near-identical images are near-ties: compare the scores found.
    expected = np.sort(gallery.embeddings @ gallery.embeddings[row])[::-1][:3]
    np.testing.assert_allclose([hit["score"] for hit in hits], expected, atol=1e-5)
    assert hits[0]["id"] == gallery.ids[row] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
