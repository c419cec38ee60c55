"""embed_image_set against a naive one-image-at-a-time loop: order, broken files, resume, TTA."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.data.loading import load_image
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.embed.extract import embed_image_set
from lookalike.embed.store import EmbeddingSet
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.utils.folders import ArtefactError, partial_path, verify_folder

DIM = 8


class TinyEmbedder(nn.Module):
    """conv -> ReLU -> global average pool -> flatten (-> L2 normalisation), counting forwards."""

    def __init__(self, normalize: bool | None = True, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, DIM, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn = nn.BatchNorm1d(DIM)  # behaves differently in train mode: eval() must be called
        self.preprocessing = Preprocessing(input_size=16, interpolation="bilinear", crop_pct=0.9)
        self.config = {"name": "tiny", "dim": DIM}
        if normalize is not None:
            self.normalize = normalize
        self._normalizes = normalize is not False
        self.fail_on_call = fail_on_call
        self.calls = 0

    @property
    def embedding_dim(self) -> int:
        return DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated interruption")
        embeddings = self.bn(torch.flatten(self.pool(F.relu(self.conv(images))), 1))
        return F.normalize(embeddings, dim=1) if self._normalizes else embeddings

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for name, tensor in self.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def _embedder(seed: int = 0, **kwargs: object) -> TinyEmbedder:
    torch.manual_seed(seed)
    model = TinyEmbedder(**kwargs)  # type: ignore[arg-type]
    with torch.no_grad():  # non-trivial running statistics, so train and eval modes differ
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def _copy(model: TinyEmbedder, **kwargs: object) -> TinyEmbedder:
    clone = TinyEmbedder(**kwargs)  # type: ignore[arg-type]
    clone.load_state_dict(model.state_dict())
    return clone


@pytest.fixture
def image_set(tmp_path: Path) -> ImageSet:
    """8 random RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        height, width = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=f"img{i}", path=path, label=f"class{i % 3}"))
    return ImageSet(records, "gallery")


def _naive(model: TinyEmbedder, paths: list[Path], flip: bool = False) -> np.ndarray:
    """Load, transform and embed each image on its own, in plain memory format."""
    transform = eval_transform(model.preprocessing)
    model.eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            x = transform(load_image(path)).unsqueeze(0)
            row = model(x)
            if flip:
                row = (row + model(torch.flip(x, dims=(-1,)))) / 2
                if model._normalizes:
                    row = row / row.norm(dim=1, keepdim=True)
            rows.append(row[0].numpy())
    return np.stack(rows)


def _embed(model: TinyEmbedder, image_set: ImageSet, **kwargs: object) -> EmbeddingSet:
    return embed_image_set(
        model, image_set, device="cpu", **kwargs  # type: ignore[arg-type]
    )


def test_matches_naive_loop(image_set: ImageSet) -> None:
    model = _embedder()
    model.train()
    result = _embed(model, image_set, batch_size=3)
    assert model.training  # the caller's mode is restored
    np.testing.assert_allclose(result.embeddings, _naive(model, image_set.paths), atol=1e-5)
    assert result.ids == image_set.ids
    assert result.paths == [str(p) for p in image_set.paths]
    assert result.labels == image_set.labels
    assert result.info["fingerprint"] == model.fingerprint()
    assert result.info["config"] == model.config
    assert result.info["preprocessing"] == model.preprocessing.to_dict()
    assert result.info["counts"] == {"images": 8, "embedded": 8, "skipped": 0}


def test_order_preserved_with_workers(image_set: ImageSet) -> None:
    model = _embedder()
    result = embed_image_set(
        model, image_set, batch_size=2, num_workers=2, device="cpu",
        channels_last=False,
    )
    assert result.ids == image_set.ids
    np.testing.assert_allclose(result.embeddings, _naive(model, image_set.paths), atol=1e-5)


def test_progress_callback_counts_every_image_once_resumed_shards_first(
    image_set: ImageSet, tmp_path: Path
) -> None:
    settings = {"batch_size": 2, "shard_size": 3, "output_dir": tmp_path / "run"}
    advances: list[int] = []
    embed_image_set(_embedder(), image_set, device="cpu", progress=advances.append, **settings)  # type: ignore[arg-type]
    assert advances == [2, 2, 2, 2]  # shards of whole batches: [0,4) [4,8)
    (tmp_path / "run" / "shards" / "shard_00001.npz").unlink()
    advances.clear()
    embed_image_set(_embedder(), image_set, device="cpu", progress=advances.append, **settings)  # type: ignore[arg-type]
    assert advances == [4, 2, 2]


def test_broken_images_are_skipped_and_reported(
    image_set: ImageSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "empty.jpg").write_bytes(b"")
    (broken_dir / "text.jpg").write_text("not an image at all\n")
    records = list(image_set.records)
    records.insert(0, ImageRecord("empty", broken_dir / "empty.jpg", "class0"))
    records.insert(4, ImageRecord("text", broken_dir / "text.jpg", "class1"))
    records.append(ImageRecord("missing", broken_dir / "missing.jpg", "class2"))
    mixed = ImageSet(records, "gallery")

    model = _embedder()
    with caplog.at_level(logging.WARNING):
        result = _embed(model, mixed, batch_size=3, output_dir=tmp_path / "out", shard_size=4)
    assert result.ids == image_set.ids
    np.testing.assert_allclose(result.embeddings, _naive(model, image_set.paths), atol=1e-5)
    skipped = result.info["skipped"]
    assert [s["id"] for s in skipped] == ["empty", "text", "missing"]
    assert skipped[0]["path"] == str(broken_dir / "empty.jpg") and "empty" in skipped[0]["reason"]
    assert "not found" in skipped[2]["reason"]
    assert result.info["counts"] == {"images": 11, "embedded": 8, "skipped": 3}
    with open(tmp_path / "out" / "skipped.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == skipped
    assert any("skipped 3 of 11" in r.getMessage() for r in caplog.records)
    assert EmbeddingSet.load(tmp_path / "out").info["skipped"] == skipped


def test_resume_after_interruption_recomputes_only_unfinished_shards(
    image_set: ImageSet, tmp_path: Path
) -> None:
    # 8 images, shards of 3 rounded up to batches of 2: shards [0,4) [4,8), 2 + 2 forwards.
    reference_model = _embedder()
    settings = {"batch_size": 2, "shard_size": 3}
    reference = _embed(reference_model, image_set, output_dir=tmp_path / "whole", **settings)
    assert reference_model.calls == 4

    interrupted = _copy(reference_model, fail_on_call=3)  # dies inside the second shard
    with pytest.raises(RuntimeError, match="simulated interruption"):
        _embed(interrupted, image_set, output_dir=tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()  # the folder appears whole or not at all
    shard_dir = partial_path(tmp_path / "run") / "shards"
    assert sorted(p.name for p in shard_dir.iterdir()) == ["shard_00000.npz"]
    first_shard = (shard_dir / "shard_00000.npz").stat().st_ino

    resumed_model = _copy(reference_model)
    resumed = _embed(resumed_model, image_set, output_dir=tmp_path / "run", **settings)
    assert resumed_model.calls == 2
    shard_dir = tmp_path / "run" / "shards"
    assert (shard_dir / "shard_00000.npz").stat().st_ino == first_shard  # reused, not rewritten
    assert not partial_path(tmp_path / "run").exists()
    assert sorted(verify_folder(tmp_path / "run", "embeddings").files) == [
        "embeddings.npy", "info.json", "records.parquet", "shards/shard_00000.npz",
        "shards/shard_00001.npz", "skipped.csv",
    ]
    np.testing.assert_array_equal(resumed.embeddings, reference.embeddings)
    assert resumed.ids == reference.ids
    loaded = EmbeddingSet.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.embeddings, reference.embeddings)

    again = _copy(reference_model)
    _embed(again, image_set, output_dir=tmp_path / "run", **settings)
    assert again.calls == 0


def test_corrupt_shard_is_recomputed(
    image_set: ImageSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _embedder()
    first = _embed(model, image_set, output_dir=tmp_path / "out", batch_size=2, shard_size=3)
    (tmp_path / "out" / "shards" / "shard_00001.npz").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ArtefactError, match="shard_00001.npz has 15 bytes"):
        EmbeddingSet.load(tmp_path / "out")
    rerun = _copy(model)
    with caplog.at_level(logging.WARNING):
        second = _embed(rerun, image_set, output_dir=tmp_path / "out", batch_size=2, shard_size=3)
    assert rerun.calls == 2  # only the damaged shard's two batches
    messages = [record.getMessage() for record in caplog.records]
    assert any("shard_00001.npz differs from its manifest" in m for m in messages)
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    np.testing.assert_array_equal(EmbeddingSet.load(tmp_path / "out").embeddings, first.embeddings)

    # A shard damaged in an unfinished (partial) folder is caught by its own checks.
    interrupted = _copy(model, fail_on_call=3)
    with pytest.raises(RuntimeError):
        _embed(interrupted, image_set, output_dir=tmp_path / "new", batch_size=2, shard_size=3)
    (partial_path(tmp_path / "new") / "shards" / "shard_00000.npz").write_bytes(b"PK\x03\x04")
    again = _copy(model)
    with caplog.at_level(logging.WARNING):
        third = _embed(again, image_set, output_dir=tmp_path / "new", batch_size=2, shard_size=3)
    assert again.calls == 4
    assert any("shard_00000.npz is unreadable" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(third.embeddings, first.embeddings)


def test_shards_of_another_embedder_or_image_set_are_not_reused(
    image_set: ImageSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _embed(_embedder(seed=0), image_set, output_dir=tmp_path / "out", batch_size=2, shard_size=3)
    other = _embedder(seed=1)
    with caplog.at_level(logging.WARNING):
        result = _embed(other, image_set, output_dir=tmp_path / "out", batch_size=2, shard_size=3)
    assert other.calls == 4
    assert sum("does not match this run" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_allclose(result.embeddings, _naive(other, image_set.paths), atol=1e-5)

    reordered = ImageSet(list(reversed(image_set.records)), "gallery")
    third = _copy(other)
    result = _embed(third, reordered, output_dir=tmp_path / "out", batch_size=2, shard_size=3)
    assert third.calls == 4
    assert result.ids == reordered.ids


def test_shards_close_on_time_too_and_change_nothing(image_set: ImageSet, tmp_path: Path) -> None:
    whole = _embed(_embedder(), image_set, output_dir=tmp_path / "whole", batch_size=2)
    timed = _embed(_embedder(), image_set, output_dir=tmp_path / "timed", batch_size=2,
                   shard_seconds=1e-9)  # every batch overruns its shard's time
    assert sorted(p.name for p in (tmp_path / "whole" / "shards").iterdir()) == ["shard_00000.npz"]
    assert len(list((tmp_path / "timed" / "shards").iterdir())) == 4
    np.testing.assert_array_equal(timed.embeddings, whole.embeddings)
    np.testing.assert_array_equal(
        EmbeddingSet.load(tmp_path / "timed").embeddings, whole.embeddings
    )


def test_output_folder_of_something_else_is_refused(image_set: ImageSet, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtefactError, match="not a lookalike embeddings folder"):
        _embed(_embedder(), image_set, output_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not partial_path(tmp_path / "mine").exists()


@pytest.mark.parametrize("normalize", [True, False, None], ids=["normalised", "raw", "inferred"])
def test_flip_tta_is_the_mean_of_both_views(image_set: ImageSet, normalize: bool | None) -> None:
    model = _embedder(normalize=normalize)
    result = _embed(model, image_set, batch_size=3, tta=["flip"])
    expected = _naive(model, image_set.paths, flip=True)
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-5)
    assert not np.allclose(expected, _naive(model, image_set.paths), atol=1e-3)
    assert result.info["tta"] == ["flip"]


def test_multi_scale_tta_averages_rescaled_inputs(image_set: ImageSet) -> None:
    model = _embedder()
    result = _embed(model, image_set, batch_size=4, tta=["scale:0.5"])
    transform = eval_transform(model.preprocessing)
    model.eval()
    with torch.no_grad():
        for row, path in zip(result.embeddings, image_set.paths):
            x = transform(load_image(path)).unsqueeze(0)
            small = F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True)
            mean = (model(x) + model(small))[0] / 2
            np.testing.assert_allclose(row, (mean / mean.norm()).numpy(), atol=1e-5)


def test_bfloat16_autocast_on_cpu_is_close(image_set: ImageSet) -> None:
    model = _embedder()
    result = _embed(model, image_set, batch_size=4, amp=True)
    assert result.info["amp"] == "bfloat16"
    assert result.embeddings.dtype == np.float32
    np.testing.assert_allclose(result.embeddings, _naive(model, image_set.paths), atol=5e-2)


def test_empty_image_set(tmp_path: Path) -> None:
    result = _embed(_embedder(), ImageSet([], "empty"), output_dir=tmp_path / "out")
    assert result.embeddings.shape == (0, DIM)
    assert EmbeddingSet.load(tmp_path / "out").info["counts"]["images"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tta": ["rotate"]}, "unknown test-time augmentation 'rotate'; valid: 'flip'"),
        ({"tta": ["scale:-1"]}, "positive factor"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"shard_size": 0}, "shard_size >= 1"),
        ({"shard_seconds": 0}, "shard_seconds > 0"),
    ],
)
def test_bad_arguments(image_set: ImageSet, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _embed(_embedder(), image_set, **kwargs)


def test_wrong_output_width_is_reported(image_set: ImageSet) -> None:
    model = _embedder()
    model.conv = nn.Conv2d(3, DIM + 1, 3, padding=1)
    model.bn = nn.BatchNorm1d(DIM + 1)
    with pytest.raises(ValueError, match=r"expected \(4, 8\)"):
        _embed(model, image_set, batch_size=4)
