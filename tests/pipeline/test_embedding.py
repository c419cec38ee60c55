"""embed_images: a source in, the same embeddings as embed_image_set on the loaded images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from progress_recorder import recorder

from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images

CPU = EmbedSpec(batch_size=5, num_workers=0, device="cpu")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_embedder(create_embedder("timm:resnet18", pool="gap", weights=None), tmp_path / "model")


def test_folder_source_matches_embed_image_set_and_is_saved(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    steps: list[tuple[str, int, list[int]]] = []
    result = embed_images(image_folder, tmp_path / "emb", model=ModelSpec(checkpoint=str(model_dir)),
                          embed=CPU, progress=recorder(steps))
    reference = embed_image_set(
        load_embedder(model_dir), load_source(image_folder), batch_size=3, device="cpu",
    )
    np.testing.assert_allclose(result.embeddings, reference.embeddings, atol=1e-5)
    assert result.ids == reference.ids and result.labels == reference.labels
    assert steps == [("embedding all", 12, [5, 5, 2])]
    assert EmbeddingSet.load(tmp_path / "emb").ids == result.ids


def test_split_selects_records_and_an_empty_split_is_an_error(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    paths = sorted(image_folder.rglob("*.png"))
    rows = [f"{p},{p.parent.name},{'query' if i % 4 == 0 else 'gallery'}" for i, p in enumerate(paths)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    model = ModelSpec(checkpoint=str(model_dir))
    queries = embed_images(str(manifest), None, split="query", model=model, embed=CPU)
    assert sorted(queries.paths) == sorted(str(p) for i, p in enumerate(paths) if i % 4 == 0)
    assert not (tmp_path / "emb").exists()
    with pytest.raises(ValueError, match="no records with split 'train'"):
        embed_images(str(manifest), tmp_path / "emb", split="train", model=model, embed=CPU)
    assert not (tmp_path / "emb").exists()
