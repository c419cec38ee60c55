"""The library entry points the verbs call refuse bad inputs before anything is read or written:
non-finite thresholds (given or stored), contradictory options, devices this machine lacks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.index import create_index, save_index
from lookalike.models.spec import ModelSpec, model_spec_from_options
from lookalike.pipeline.embedding import check_embed_spec, embed_images
from lookalike.pipeline.evaluate import EvaluateConfig, evaluate
from lookalike.pipeline.indexing import build_index, search_index
from lookalike.pipeline.submission import write_submission
from lookalike.search.rejection import check_threshold


@pytest.fixture
def gallery(tmp_path: Path) -> EmbeddingSet:
    ids = [f"g{i}" for i in range(10)]
    vectors = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    embeddings = EmbeddingSet(vectors, ids, ids, [str(i % 2) for i in range(10)])
    embeddings.save(tmp_path / "emb")
    return embeddings


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "x"])
def test_check_threshold_refuses_what_is_not_a_finite_number(value: object) -> None:
    with pytest.raises(ValueError, match=r"--threshold must be a (finite )?number, got"):
        check_threshold(value, "--threshold")  # type: ignore[arg-type]


def test_check_threshold_passes_numbers_and_none() -> None:
    assert check_threshold(None) is None
    assert check_threshold(0.5) == 0.5 and check_threshold("-1e3") == -1000.0


@pytest.mark.parametrize("threshold", [math.nan, math.inf])
def test_build_index_refuses_a_non_finite_threshold_before_writing(
    gallery: EmbeddingSet, tmp_path: Path, threshold: float
) -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        build_index(gallery, tmp_path / "index", threshold=threshold)
    assert not (tmp_path / "index").exists()


def test_search_refuses_a_threshold_together_with_no_threshold(
    gallery: EmbeddingSet, tmp_path: Path
) -> None:
    build_index(gallery, tmp_path / "index")
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="not both"):
        search_index(tmp_path / "index", gallery, tmp_path / "r.csv", threshold=0.5,
                     use_threshold=False)
    with pytest.raises(ValueError, match="query_embeddings_dir"):
        search_index(tmp_path / "index", gallery, tmp_path / "r.csv",
                     query_embeddings_dir=tmp_path / "kept")
    with pytest.raises(ValueError, match="'cuda:9'"):
        search_index(tmp_path / "index", gallery, tmp_path / "r.csv", device="cuda:9")
    assert _files(tmp_path) == before


def test_a_stored_non_finite_threshold_is_refused_by_every_reader(
    gallery: EmbeddingSet, tmp_path: Path
) -> None:
    index = create_index("flat", gallery.dim)
    index.add(gallery.embeddings)
    try:
        save_index(index, tmp_path / "index", gallery.ids, extra={"threshold": math.nan})
    except ValueError:
        pytest.skip("the index writer itself refuses a non-finite threshold")
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="threshold"):
        search_index(tmp_path / "index", gallery, tmp_path / "r.csv")
    with pytest.raises(ValueError, match="threshold"):
        write_submission(tmp_path / "index", gallery, tmp_path / "s.csv")
    with pytest.raises(ValueError, match="threshold"):
        evaluate(EvaluateConfig(
            query_embeddings=str(tmp_path / "emb"), gallery_embeddings=str(tmp_path / "emb"),
            output=str(tmp_path / "run"), report=False,
        ), [f"rejection.index={tmp_path / 'index'}"])
    assert _files(tmp_path) == before


def test_evaluate_refuses_a_threshold_and_an_index_to_read_one_from(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        evaluate(EvaluateConfig(embeddings="emb", output=str(tmp_path / "run")),
                 ["rejection.threshold=0.4", "rejection.index=idx"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec,needle",
    [
        (EmbedSpec(batch_size=0), "batch_size"),
        (EmbedSpec(num_workers=-1), "num_workers"),
        (EmbedSpec(shard_size=0), "shard_size"),
        (EmbedSpec(shard_seconds=math.nan), "shard_seconds"),
        (EmbedSpec(tta=["spin"]), "'spin'"),
        (EmbedSpec(device="banana"), "'banana'"),
    ],
)
def test_embed_settings_are_checked_before_any_image(
    spec: EmbedSpec, needle: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=needle):
        check_embed_spec(spec)
    with pytest.raises(ValueError, match=needle):  # before the (missing) source is even listed
        embed_images(tmp_path / "no_such_images", tmp_path / "out", embed=spec)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_excludes_the_other_model_options() -> None:
    assert model_spec_from_options() == ModelSpec()
    assert model_spec_from_options(backbone="timm:resnet18", pool="gem") == ModelSpec(
        backbone="timm:resnet18", pool="gem"
    )
    assert model_spec_from_options("saved") == ModelSpec(checkpoint="saved")
    with pytest.raises(ValueError, match="carries its own model; give it or pool=gem, not both"):
        model_spec_from_options("saved", pool="gem")
