"""embed-text and text→image search with a tiny random-weight CLIP (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, save_embedder
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.indexing import build_index
from lookalike.pipeline.text import embed_text_set, read_texts, search_text

# A CLIP of a few thousand parameters per tower, random weights; ViT-B-32's tokenizer.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TEXTS = ["a red car", "a green tree", "a blue sky", "a dog"]


@pytest.fixture(scope="module")
def clip_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    save_embedder(create_embedder("open_clip:ViT-B-32", weights=None, **TINY_CLIP), root / "model")
    rng = np.random.default_rng(0)
    for label in ("red", "green"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{i}.png")
    model = ModelSpec(checkpoint=str(root / "model"))
    gallery = embed_images(root / "images", root / "gallery", model=model)
    build_index(gallery, root / "index", kind="flat", metric="cosine")
    return {"root": root, "model": root / "model", "gallery": root / "gallery", "index": root / "index"}


def test_text_rows_are_clips_text_embeddings_in_the_image_space(clip_world: dict[str, Path]) -> None:
    from lookalike.models import load_embedder

    embedder = load_embedder(clip_world["model"])
    texts = embed_text_set(TEXTS, model=embedder)
    backbone = embedder.backbone
    with torch.inference_mode():
        expected = F.normalize(backbone.text_model.encode_text(backbone.tokenizer(TEXTS)), dim=-1)
        images = torch.randn(2, 3, 32, 32)
        backbone.model.output_tokens = False
        clip_image = F.normalize(backbone.model(images), dim=-1)
        backbone.model.output_tokens = True
        ours = embedder(images)
    assert texts.embeddings.shape == (4, 16) and texts.ids == ["1", "2", "3", "4"]
    np.testing.assert_allclose(texts.embeddings, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.numpy(), clip_image.numpy(), atol=1e-5)  # same space
    assert texts.fingerprint == embedder.fingerprint() == EmbeddingSet.load(clip_world["gallery"]).fingerprint


def test_text_search_returns_the_exact_search_answer(clip_world: dict[str, Path], tmp_path: Path) -> None:
    model = ModelSpec(checkpoint=str(clip_world["model"]))
    outcome = search_text(clip_world["index"], TEXTS, tmp_path / "r.csv", model=model, k=3)
    gallery = EmbeddingSet.load(clip_world["gallery"])
    naive = np.argsort(-(outcome.queries.embeddings @ gallery.embeddings.T), axis=1, kind="stable")[:, :3]
    assert (outcome.result.indices == naive).all()
    table = pd.read_csv(outcome.path)
    assert table["gallery_id"].tolist() == [gallery.ids[i] for i in naive.ravel()]


def test_a_model_without_a_text_tower_is_refused(clip_world: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no text tower.*open_clip"):
        embed_text_set(TEXTS, model=ModelSpec(backbone="timm:resnet18", weights="none"))
    with pytest.raises(ValueError, match="give query texts"):
        search_text(clip_world["index"], None, tmp_path / "r.csv", model=ModelSpec(checkpoint=str(clip_world["model"])))


def test_texts_files_plain_and_csv(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a red car\n\na dog\n")
    assert read_texts(tmp_path / "t.txt") == (["1", "3"], ["a red car", "a dog"])
    (tmp_path / "t.csv").write_text("id,text\ncar,a red car\ndog,a dog\n")
    assert read_texts(tmp_path / "t.csv") == (["car", "dog"], ["a red car", "a dog"])
    (tmp_path / "bad.csv").write_text("id,caption\n1,x\n")
    with pytest.raises(ValueError, match="bad.csv has no 'text' column"):
        read_texts(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("id,text\na,x\na,y\n")
    with pytest.raises(ValueError, match="ids must be unique; repeated: a"):
        read_texts(tmp_path / "dup.csv")


def test_cli_embed_text_and_search_text(clip_world: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["embed-text", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "emb"),
                                 "--checkpoint", str(clip_world["model"]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    embedded = EmbeddingSet.load(tmp_path / "emb")
    assert embedded.embeddings.shape == (4, 16) and embedded.paths == TEXTS
    result = runner.invoke(app, ["search", str(clip_world["index"]), "--text", "a red car", "--text", "a dog",
                                 "--checkpoint", str(clip_world["model"]), "-k", "2", "-o", str(tmp_path / "t.csv"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    by_text = pd.read_csv(tmp_path / "t.csv")
    result = runner.invoke(app, ["search", str(clip_world["index"]), str(tmp_path / "emb"), "-k", "2",
                                 "-o", str(tmp_path / "e.csv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    by_folder = pd.read_csv(tmp_path / "e.csv")
    rows = by_folder[by_folder["query_id"].astype(str).isin(["1", "4"])]
    assert by_text["gallery_id"].tolist() == rows["gallery_id"].tolist()
    result = runner.invoke(app, ["search", str(clip_world["index"]), "--text", "x", "--device", "cpu"])
    assert result.exit_code != 0 and "no text tower" in result.output
