"""Independent review of the split protocols: every protocol's sets checked against references
written here (disjointness, coverage, labels attached to their image, documented sizes rounded half
up as decimal arithmetic does, reproducibility), on random record sets with awkward labels."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from lookalike.data.protocols import (
    RetrievalSplit,
    class_disjoint_split,
    given_split,
    make_split,
    per_class_split,
)
from lookalike.data.records import ImageRecord, ImageSet

LABELS = ["1", "01", "2", "10", "a1", "a01", "b 2", "é", "caf\u00e9 3", "x10y", "x9y", "Z"]


def _half_up(fraction: float, total: int) -> int:
    """``fraction * total`` in decimal arithmetic on the fraction as written, rounded half up."""
    exact = Decimal(repr(fraction)) * total
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _natural(label: str) -> list[tuple[int, int | str]]:
    """Reference natural order: digit runs compare as numbers, other runs as text."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.findall(r"\d+|\D+", label)]


def _random_images(seed: int, splits: bool = False, n_unlabelled: int = 3) -> ImageSet:
    """Shuffled records of the classes in LABELS (1 to 9 images each) plus unlabelled ones; with
    ``splits`` some classes are marked train or val by the source, as SOP's lists are."""
    rng = np.random.default_rng(seed)
    records = []
    for c, label in enumerate(LABELS):
        split = None
        if splits and c % 4 == 1:
            split = "train"
        elif splits and c % 4 == 2:
            split = "val"
        for i in range(int(rng.integers(1, 10))):
            image_id = f"c{c}/{i}.jpg"
            records.append(ImageRecord(image_id, Path("/data") / image_id, label, split))
    records += [ImageRecord(f"u/{i}.jpg", Path(f"/data/u/{i}.jpg")) for i in range(n_unlabelled)]
    return ImageSet([records[i] for i in rng.permutation(len(records))])


def _sets(split: RetrievalSplit) -> dict[str, ImageSet]:
    named = {"query": split.query, "gallery": split.gallery}
    named.update({k: s for k, s in (("train", split.train), ("val", split.val)) if s is not None})
    return named


def _check_integrity(images: ImageSet, split: RetrievalSplit) -> None:
    """Each set holds source records unchanged (label on its own image), each once, in the
    source's order; the sets are disjoint except query within gallery under exclude_self."""
    original = {record.id: record for record in images.records}
    assert len(original) == len(images)
    order = {record.id: i for i, record in enumerate(images.records)}
    for name, part in _sets(split).items():
        assert len(set(part.ids)) == len(part), name
        assert all(original[r.id] == r for r in part.records), name
        if name != "train":  # per_class appends the drawn train images after the source's
            assert [order[i] for i in part.ids] == sorted(order[i] for i in part.ids), name
    evaluated = set(split.gallery.ids) | set(split.query.ids)
    if split.exclude_self:
        assert set(split.query.ids) <= set(split.gallery.ids)
        assert split.query.ids == [r.id for r in split.gallery.records if r.label is not None]
    else:
        assert not set(split.query.ids) & set(split.gallery.ids)
    held = [
        set(split.train.ids) if split.train else set(),
        set(split.val.ids) if split.val else set(),
    ]
    assert not held[0] & held[1] and not (held[0] | held[1]) & evaluated
    assert all(r.label is not None for r in split.query.records) or not split.exclude_self


@pytest.mark.parametrize("seed", range(4))
def test_all_vs_all_against_reference(seed: int) -> None:
    images = _random_images(seed, splits=True)
    split = make_split(images, "all_vs_all")
    _check_integrity(images, split)
    assert split.exclude_self
    assert split.gallery.ids == [r.id for r in images.records if r.split not in ("train", "val")]
    assert split.train is not None and split.train.ids == [
        r.id for r in images.records if r.split == "train"
    ]
    assert split.val is not None and split.val.ids == [
        r.id for r in images.records if r.split == "val"
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fractions", [(0.2, 0.0), (0.5, 0.0), (0.3, 0.4), (0.7, 0.25)])
def test_per_class_against_reference(seed: int, fractions: tuple[float, float]) -> None:
    query_fraction, train_fraction = fractions
    images = _random_images(seed, splits=seed % 2 == 1)
    split = per_class_split(images, query_fraction, seed=seed, train_fraction=train_fraction)
    _check_integrity(images, split)
    assigned = set(split.query.ids) | set(split.gallery.ids)
    for part in (split.train, split.val):
        assigned |= set(part.ids) if part is not None else set()
    assert assigned == set(images.ids)  # every image lands somewhere
    source_train = [r.id for r in images.records if r.split == "train"]
    assert split.train is None or split.train.ids[: len(source_train)] == source_train
    evaluated = [r for r in images.records if r.split not in ("train", "val")]
    for label in {r.label for r in evaluated if r.label is not None}:
        n = sum(r.label == label for r in evaluated)
        n_train = min(_half_up(train_fraction, n), n - 2) if train_fraction and n >= 3 else 0
        rest = n - n_train
        n_query = min(max(_half_up(query_fraction, rest), 1), rest - 1) if rest >= 2 else 0
        assert split.query.labels.count(label) == n_query, label
        assert split.gallery.labels.count(label) == rest - n_query, label
        assert rest - n_query >= 1  # every query has a positive in the gallery
        drawn = [r for r in (split.train.records if split.train else []) if r.split is None]
        assert sum(r.label == label for r in drawn) == n_train
    assert all(r.label is not None for r in split.query.records)
    unlabelled = [r.id for r in evaluated if r.label is None]
    assert [i for i in split.gallery.ids if i.startswith("u/")] == unlabelled
    again = per_class_split(images, query_fraction, seed=seed, train_fraction=train_fraction)
    assert again.query.ids == split.query.ids and again.gallery.ids == split.gallery.ids
    other = per_class_split(images, query_fraction, seed=seed + 10, train_fraction=train_fraction)
    assert other.query.ids != split.query.ids


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
@pytest.mark.parametrize("fractions", [(0.5, 0.0), (0.3, 0.0), (0.6, 0.3), (0.01, 0.0)])
def test_class_disjoint_against_reference(seed: int | None, fractions: tuple[float, float]) -> None:
    train_fraction, val_fraction = fractions
    images = _random_images(3, splits=True)  # the source's split column is ignored
    split = class_disjoint_split(images, train_fraction, val_fraction, seed)
    _check_integrity(images, split)
    n_classes = len(LABELS)
    n_train = min(max(_half_up(train_fraction, n_classes), 1), n_classes - 1)
    n_val = min(max(_half_up(val_fraction, n_train), 1), n_train - 1) if val_fraction else 0
    train_classes = set(split.train.labels) if split.train else set()
    val_classes = set(split.val.labels) if split.val else set()
    test_classes = set(split.query.labels)
    assert len(train_classes) == n_train - n_val and len(val_classes) == n_val
    assert len(test_classes) == n_classes - n_train
    assert not train_classes & val_classes and not (train_classes | val_classes) & test_classes
    every = [r.id for part in _sets(split).values() if part is not split.query for r in part]
    assert sorted(every) == sorted(images.ids)  # every image once, query within gallery
    assert None not in test_classes and split.gallery.labels.count(None) == 3
    if seed is None:
        ordered = sorted(LABELS, key=lambda label: (_natural(label), label))
        assert train_classes | val_classes == set(ordered[:n_train])
        assert val_classes == set(ordered[n_train - n_val : n_train])
    else:
        again = class_disjoint_split(images, train_fraction, val_fraction, seed)
        assert again.query.ids == split.query.ids
        shuffled = class_disjoint_split(images, train_fraction, val_fraction, seed + 100)
        if n_train > 1:
            assert set(shuffled.query.labels) != test_classes


def test_class_disjoint_does_not_depend_on_record_order() -> None:
    """Labels "01" and "1" tie in natural order: the split must not follow the source's order."""
    images = _random_images(0, n_unlabelled=0)
    backwards = ImageSet(list(reversed(images.records)))
    for seed in (None, 4):
        one = class_disjoint_split(images, 0.5, seed=seed)
        two = class_disjoint_split(backwards, 0.5, seed=seed)
        assert one.train is not None and two.train is not None
        assert set(one.train.labels) == set(two.train.labels)
        assert set(one.query.labels) == set(two.query.labels)


def test_given_against_reference() -> None:
    images = _random_images(5)
    rng = np.random.default_rng(5)
    roles = ["train", "val", "query", "gallery", None]
    records = [
        ImageRecord(r.id, r.path, r.label, roles[int(rng.integers(0, 5))]) for r in images.records
    ]
    marked = ImageSet(records)
    split = given_split(marked)
    _check_integrity(marked, split)
    for name, part in _sets(split).items():
        assert part.ids == [r.id for r in records if r.split == name]
    left_out = {r.id for r in records if r.split is None}
    placed = {i for part in _sets(split).values() for i in part.ids}
    assert placed | left_out == set(marked.ids) and not placed & left_out


def test_given_refuses_an_image_that_is_query_and_gallery() -> None:
    """A manifest may list one file twice under two ids; as query and gallery it finds itself."""
    records = [
        ImageRecord("q-7", Path("/data/7.jpg"), "a", "query"),
        ImageRecord("q-8", Path("/data/8.jpg"), "a", "query"),
        ImageRecord("g-7", Path("/data/7.jpg"), "a", "gallery"),
        ImageRecord("g-9", Path("/data/9.jpg"), "a", "gallery"),
        ImageRecord("t-8", Path("/data/8.jpg"), "a", "train"),  # train + query is allowed
    ]
    with pytest.raises(ValueError, match=r"1 query images are also gallery .*7\.jpg.*'q-7'.*'g-7'"):
        given_split(ImageSet(records))
    split = given_split(ImageSet([r for r in records if r.id != "g-7"]))
    assert split.query.ids == ["q-7", "q-8"] and split.gallery.ids == ["g-9"]


@pytest.mark.parametrize(
    ("fraction", "total"), [(0.7, 45), (0.29, 50), (0.35, 90), (0.58, 25), (0.5, 5), (0.25, 6)]
)
def test_fractions_round_half_up_as_written(fraction: float, total: int) -> None:
    """0.7 of 45 is 31.5, 32 classes; in binary floating point 0.7 * 45 is 31.4999..."""
    classes = {f"k{i}": 2 for i in range(total)}
    images = ImageSet(
        [ImageRecord(f"{k}/{j}", Path(f"/{k}/{j}"), k) for k in classes for j in range(2)]
    )
    split = class_disjoint_split(images, train_fraction=fraction)
    assert split.train is not None
    assert len(set(split.train.labels)) == _half_up(fraction, total)
    one_class = ImageSet([ImageRecord(f"i{j}", Path(f"/i{j}"), "c") for j in range(total)])
    queries = per_class_split(one_class, query_fraction=fraction)
    assert len(queries.query) == min(max(_half_up(fraction, total), 1), total - 1)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_a_bad_seed_is_named_in_one_line(seed: object) -> None:
    images = _random_images(0)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer, got "):
        make_split(images, "per_class", seed=seed)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer, got "):
        make_split(images, "class_disjoint", seed=seed)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got None"):
        make_split(images, "per_class", seed=None)
    assert make_split(images, "per_class", seed=np.int64(3)).query.ids == (
        make_split(images, "per_class", seed=3).query.ids
    )
