"""Every embedding row belongs to its image: an embedder whose output is the image's colour.

Each test image is a single colour, unique to it; the embedder returns the per-channel mean of its
input, which :func:`decode` turns back into that colour. Row ``i`` of a result must decode to the
colour of the image whose id it carries, in dataset order, whatever the batching, the shards, the
workers, a kill and a resume, or the shards an earlier run left behind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.embed import device_decode
from lookalike.embed.extract import embed_image_set
from lookalike.embed.store import EmbeddingSet
from lookalike.models.preprocessing import Preprocessing
from lookalike.utils.folders import partial_path

PREPROCESSING = Preprocessing(input_size=8, interpolation="bilinear", crop_pct=1.0)


class ColourEmbedder(nn.Module):
    """``(B, 3, S, S) -> (B, 3)``: the mean of each normalised channel, counting forwards."""

    normalize = False

    def __init__(self, version: int = 0, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # something for .to() to move
        self.preprocessing = PREPROCESSING
        self.config = {"name": "colour", "version": version}
        self.embedding_dim = 3
        self.fail_on_call = fail_on_call
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated kill")
        return images.mean(dim=(2, 3)) * self.scale

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(self.config).encode()).hexdigest()[:16]


def decode(embeddings: np.ndarray) -> list[tuple[int, int, int]]:
    """The 8-bit colour each row of a :class:`ColourEmbedder` output came from."""
    mean, std = np.array(PREPROCESSING.mean), np.array(PREPROCESSING.std)
    pixels = np.rint((embeddings * std + mean) * 255).astype(int)
    return [tuple(int(v) for v in row) for row in pixels]


def colour(i: int, salt: int = 0) -> tuple[int, int, int]:
    return (10 + 7 * i + salt) % 256, (250 - 5 * i) % 256, (30 + 11 * i + 3 * salt) % 256


def write_images(folder: Path, count: int, salt: int = 0) -> list[ImageRecord]:
    """``count`` single-colour PNGs of varied sizes; id ``c{i % 3}/{i}.png`` (as a folder
    source names them), label ``c{i % 3}``."""
    records = []
    for i in range(count):
        path = folder / f"c{i % 3}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (9 + (i * 5) % 23, 9 + (i * 3) % 17)
        Image.new("RGB", size, colour(i, salt)).save(path)
        records.append(ImageRecord(id=f"c{i % 3}/{i:03d}.png", path=path, label=f"c{i % 3}"))
    return records


def with_broken(records: list[ImageRecord], folder: Path) -> list[ImageRecord]:
    """``records`` with an empty file first, a text file and a missing file inside, one last."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    mixed = list(records)
    mixed.insert(0, ImageRecord("broken/empty", folder / "empty.jpg", "c0"))
    mixed.insert(6, ImageRecord("broken/text", folder / "text.png", "c1"))
    mixed.insert(7, ImageRecord("broken/missing", folder / "missing.png", "c2"))
    mixed.append(ImageRecord("broken/last", folder / "missing-too.png", None))
    return mixed


def expected_colours(image_set: ImageSet, colours: dict[str, tuple[int, int, int]]) -> list:
    return [colours[i] for i in image_set.ids if not i.startswith("broken/")]


def check_rows(result: EmbeddingSet, image_set: ImageSet, colours: dict) -> None:
    """Row i carries the id, path and label of the i-th readable image, and its colour."""
    readable = [r for r in image_set.records if not r.id.startswith("broken/")]
    assert result.ids == [r.id for r in readable]
    assert result.paths == [str(r.path) for r in readable]
    assert result.labels == [r.label for r in readable]
    assert decode(result.embeddings) == [colours[r.id] for r in readable]


@pytest.fixture
def images(tmp_path: Path) -> tuple[ImageSet, dict[str, tuple[int, int, int]]]:
    records = with_broken(write_images(tmp_path / "a", 17), tmp_path / "broken")
    colours = {f"c{i % 3}/{i:03d}.png": colour(i) for i in range(17)}
    return ImageSet(records, "gallery"), colours


@pytest.mark.parametrize(
    ("batch_size", "num_workers", "shard_seconds"),
    [(3, 0, 60.0), (4, 2, 60.0), (3, 2, 1e-9), (4, 0, 1e-9)],
)
def test_every_row_is_its_image_across_batches_shards_and_workers(
    images: tuple[ImageSet, dict], tmp_path: Path, batch_size: int, num_workers: int,
    shard_seconds: float,
) -> None:
    image_set, colours = images  # 21 images, 4 broken
    model = ColourEmbedder()
    result = embed_image_set(
        model, image_set, output_dir=tmp_path / "out", batch_size=batch_size,
        num_workers=num_workers, device="cpu", shard_size=5, shard_seconds=shard_seconds,
    )
    check_rows(result, image_set, colours)
    assert [s["id"] for s in result.info["skipped"]] == [
        "broken/empty", "broken/text", "broken/missing", "broken/last"
    ]
    broken = {i for i, r in enumerate(image_set.records) if r.id.startswith("broken/")}
    starts = range(0, len(image_set), batch_size)
    assert model.calls == sum(  # one forward per batch holding a readable image
        not set(range(b, min(b + batch_size, len(image_set)))) <= broken for b in starts
    )
    shards = sorted((tmp_path / "out" / "shards").iterdir())
    # shards of 5 rounded up to whole batches, or one batch each when time closes them
    per_shard = batch_size if shard_seconds < 1 else -(-5 // batch_size) * batch_size
    assert len(shards) == -(-len(image_set) // per_shard)
    loaded = EmbeddingSet.load(tmp_path / "out")
    np.testing.assert_array_equal(loaded.embeddings, result.embeddings)
    assert loaded.ids == result.ids and loaded.info["skipped"] == result.info["skipped"]


@pytest.mark.parametrize("kill_on_call", [2, 5])
def test_a_killed_run_resumes_bit_identical_recomputing_only_missing_shards(
    images: tuple[ImageSet, dict], tmp_path: Path, kill_on_call: int
) -> None:
    image_set, colours = images
    settings = {"batch_size": 4, "shard_size": 6, "device": "cpu", "num_workers": 0}
    reference = embed_image_set(ColourEmbedder(), image_set, output_dir=tmp_path / "whole", **settings)
    # batches of 4 over 21 images; shards of 8: [0,8) [8,16) [16,21), two forwards each but
    # the last (its batch [20,21) holds a broken image only)
    with pytest.raises(RuntimeError, match="simulated kill"):
        embed_image_set(
            ColourEmbedder(fail_on_call=kill_on_call), image_set, output_dir=tmp_path / "run",
            **settings,
        )
    shard_dir = partial_path(tmp_path / "run") / "shards"
    finished = sorted(p.name for p in shard_dir.iterdir()) if shard_dir.exists() else []
    assert len(finished) == (kill_on_call - 1) // 2  # two forwards per finished shard
    resumed_model = ColourEmbedder()
    resumed = embed_image_set(resumed_model, image_set, output_dir=tmp_path / "run", **settings)
    assert resumed_model.calls == 5 - 2 * len(finished)  # the last batch is broken only
    np.testing.assert_array_equal(resumed.embeddings, reference.embeddings)
    assert resumed.ids == reference.ids and resumed.info["skipped"] == reference.info["skipped"]
    check_rows(resumed, image_set, colours)
    for name in ("embeddings.npy", "records.parquet", "skipped.csv"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def _rerun(model: ColourEmbedder, image_set: ImageSet, out: Path, **kwargs: object) -> EmbeddingSet:
    return embed_image_set(
        model, image_set, output_dir=out, batch_size=2, shard_size=4, device="cpu",
        num_workers=0, **kwargs,  # type: ignore[arg-type]
    )


def one_image(path: Path, image_id: str, rgb: tuple[int, int, int]) -> ImageRecord:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (13, 11), rgb).save(path)
    return ImageRecord(id=image_id, path=path, label="c9")


@pytest.mark.parametrize(
    ("change", "calls"),
    # 12 images in shards [0,4) [4,8) [8,12) of 2 batches each; the calls left after reuse
    [("added", 7 - 2), ("removed", 6 - 2), ("reordered", 6), ("appended", 7 - 6)],
)
def test_shards_of_another_image_list_are_never_reused(
    tmp_path: Path, change: str, calls: int
) -> None:
    records = write_images(tmp_path / "a", 12)
    colours = {str(r.path): colour(i) for i, r in enumerate(records)}
    new = one_image(tmp_path / "new" / "x.png", "new/x.png", (1, 2, 3))
    colours[str(new.path)] = (1, 2, 3)
    variant = {
        "added": records[:5] + [new] + records[5:],
        "removed": records[:6] + records[7:],
        "reordered": [records[1], records[0], *records[2:]],
        "appended": [*records, new],
    }[change]
    _rerun(ColourEmbedder(), ImageSet(records, "g"), tmp_path / "out")
    model = ColourEmbedder()
    result = _rerun(model, ImageSet(variant, "g"), tmp_path / "out")
    assert result.ids == [r.id for r in variant]
    assert result.paths == [str(r.path) for r in variant]
    assert decode(result.embeddings) == [colours[str(r.path)] for r in variant]
    assert model.calls == calls


def test_the_same_ids_under_another_root_are_not_reused(tmp_path: Path) -> None:
    # Two copies of a dataset with the same layout (a folder source names images by their path
    # relative to the root): the ids agree, the images do not.
    first = ImageSet(write_images(tmp_path / "v1", 8), "g")
    second = ImageSet(write_images(tmp_path / "v2", 8, salt=40), "g")
    assert first.ids == second.ids
    _rerun(ColourEmbedder(), first, tmp_path / "out")
    model = ColourEmbedder()
    result = _rerun(model, second, tmp_path / "out")
    assert decode(result.embeddings) == [colour(i, 40) for i in range(8)]
    assert model.calls == 4


@pytest.mark.parametrize(
    ("first", "second", "forwards"),
    [  # 4 batches, a forward per view
        ({}, {"tta": ["flip"]}, 8),
        ({"tta": ["flip"]}, {"tta": ["scale:0.5"]}, 8),
        ({}, {"amp": True}, 4),  # bfloat16 on the CPU
    ],
    ids=["tta-added", "tta-changed", "amp"],
)
def test_shards_of_other_settings_or_model_are_never_reused(
    tmp_path: Path, first: dict, second: dict, forwards: int
) -> None:
    image_set = ImageSet(write_images(tmp_path / "a", 8), "g")
    _rerun(ColourEmbedder(), image_set, tmp_path / "out", **first)
    model = ColourEmbedder()
    result = _rerun(model, image_set, tmp_path / "out", **second)
    assert model.calls == forwards
    fresh = _rerun(ColourEmbedder(), image_set, tmp_path / "fresh", **second)
    np.testing.assert_array_equal(result.embeddings, fresh.embeddings)
    assert result.info["amp"] == fresh.info["amp"]

    other_model = ColourEmbedder(version=1)
    _rerun(other_model, image_set, tmp_path / "out", **second)
    assert other_model.calls == forwards


@pytest.mark.parametrize("num_workers", [0, 2])
def test_rows_stay_with_their_images_when_jpegs_are_decoded_on_the_device(
    images: tuple[ImageSet, dict], tmp_path: Path, num_workers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded_on_device: list[int] = []
    decode_batch = device_decode._decode

    def spy(jpegs: list[torch.Tensor], device: torch.device) -> list:
        decoded_on_device.append(len(jpegs))
        return decode_batch(jpegs, device)

    monkeypatch.setattr(device_decode, "_decode", spy)
    # Every other image as a JPEG (device path) between PNGs and broken files (worker path).
    image_set, colours = images
    records = []
    for record in image_set.records:
        if record.path.stem.isdigit() and int(record.path.stem) % 2:
            jpeg = record.path.with_suffix(".jpg")
            Image.open(record.path).save(jpeg, quality=95)
            record = ImageRecord(record.id, jpeg, record.label)
        records.append(record)
    mixed = ImageSet(records, "gallery")
    result = embed_image_set(
        ColourEmbedder(), mixed, output_dir=tmp_path / "out", batch_size=3, shard_size=5,
        num_workers=num_workers, device="cpu", decode_on_device=True,
    )
    readable = [r for r in records if not r.id.startswith("broken/")]
    assert result.ids == [r.id for r in readable]
    assert len(result.info["skipped"]) == 4
    assert sum(decoded_on_device) == 8  # the JPEGs 1, 3, ..., 15
    # JPEG is lossy: each row must be nearest to its own image's colour (neighbours differ by 5+)
    palette = np.array([colours[r.id] for r in readable])
    decoded = np.array(decode(result.embeddings))
    nearest = np.abs(decoded[:, None, :] - palette[None]).sum(-1).argmin(1)
    assert nearest.tolist() == list(range(len(readable)))
