"""Tests for lookalike.data.protocols: disjointness, coverage, per-class counts, determinism and
errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lookalike.data.protocols import (
    PROTOCOLS,
    RetrievalSplit,
    all_vs_all_split,
    class_disjoint_split,
    given_split,
    make_split,
    natural_key,
    per_class_split,
)
from lookalike.data.records import ImageRecord, ImageSet


def _images(sizes: dict[str, int], split: str | None = None) -> ImageSet:
    """Records of classes with the given sizes, interleaved so classes are not contiguous."""
    records = []
    for round_ in range(max(sizes.values())):
        for label, size in sizes.items():
            if round_ < size:
                image_id = f"{label}/{round_}.png"
                records.append(ImageRecord(image_id, Path("/d") / image_id, label, split))
    return ImageSet(records)


def _unlabelled(n: int, split: str | None = None) -> list[ImageRecord]:
    ids = [f"distractor/{i}.png" for i in range(n)]
    return [ImageRecord(i, Path("/d") / i, None, split) for i in ids]


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    position = {image_id: i for i, image_id in enumerate(whole)}
    indices = [position[i] for i in part]
    return indices == sorted(indices)


def test_registry_contract() -> None:
    assert PROTOCOLS.names() == [
        "all_vs_all", "class_disjoint", "given", "per_class", "train_only"
    ]
    images = ImageSet(
        _images({"a": 4, "b": 4, "c": 4, "d": 4}).records
        + [ImageRecord("q", Path("/q"), "a", "query"), ImageRecord("g", Path("/g"), "a", "gallery")]
    )
    for name in PROTOCOLS:
        split = make_split(images, name)
        if name == "train_only":  # self-supervised training: nothing is evaluated
            assert split.train is not None and len(split.train) == len(images)
            continue
        assert isinstance(split, RetrievalSplit) and len(split.query) and len(split.gallery)
        assert split.query.name == "query" and split.gallery.name == "gallery"
        assert split.query.is_labelled or name == "given"
    with pytest.raises(ValueError, match="names: all_vs_all, class_disjoint, given, per_class, train_only"):
        make_split(images, "random")


def test_given_split() -> None:
    records = [
        ImageRecord("q1", Path("/q1"), "a", "query"),
        ImageRecord("g1", Path("/g1"), "a", "gallery"),
        ImageRecord("t1", Path("/t1"), "b", "train"),
        ImageRecord("q2", Path("/q2"), None, "query"),
        ImageRecord("n1", Path("/n1"), "a", None),
        ImageRecord("g2", Path("/g2"), None, "gallery"),
    ]
    split = given_split(ImageSet(records))
    assert split.query.ids == ["q1", "q2"]
    assert split.gallery.ids == ["g1", "g2"]
    assert split.train is not None and split.train.ids == ["t1"] and split.train.name == "train"
    assert split.val is None and not split.exclude_self


def test_given_split_needs_query_and_gallery() -> None:
    with pytest.raises(ValueError, match="found 0 query and 2 gallery; use all_vs_all"):
        given_split(ImageSet([ImageRecord(f"g{i}", Path("/g"), "a", "gallery") for i in range(2)]))
    with pytest.raises(ValueError, match="found 0 query and 0 gallery"):
        given_split(_images({"a": 3}))


def test_all_vs_all_sop_layout() -> None:
    train = _images({"1": 2, "2": 3}, "train").records
    test = _images({"11319": 2, "11320": 3}, "gallery").records
    distractors = _unlabelled(2)
    split = all_vs_all_split(ImageSet(train + test + distractors))
    assert split.exclude_self
    assert split.query.ids == [r.id for r in test]
    assert split.gallery.ids == [r.id for r in test + distractors]
    assert split.train is not None and split.train.ids == [r.id for r in train]
    assert split.val is None


def test_all_vs_all_needs_labels() -> None:
    with pytest.raises(ValueError, match="needs labelled records"):
        all_vs_all_split(ImageSet(_unlabelled(3)))
    with pytest.raises(ValueError, match="needs labelled records"):
        all_vs_all_split(_images({"a": 3}, "train"))


def _expected_queries(n: int, fraction: float) -> int:
    """Naive restatement of the documented rule: round half up, clipped to [1, n-1]; 0 for n < 2."""
    if n < 2:
        return 0
    exact = n * fraction
    rounded = int(exact) + (1 if exact - int(exact) >= 0.5 else 0)
    return min(max(rounded, 1), n - 1)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_per_class_counts_and_coverage(fraction: float) -> None:
    sizes = {"one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "twenty": 20}
    images = ImageSet(_images(sizes).records + _unlabelled(3))
    split = per_class_split(images, query_fraction=fraction, seed=7)
    query_ids, gallery_ids = set(split.query.ids), set(split.gallery.ids)
    assert not query_ids & gallery_ids
    assert query_ids | gallery_ids == set(images.ids)
    assert len(split.query) + len(split.gallery) == len(images)
    query_counts = Counter(split.query.labels)
    gallery_counts = Counter(split.gallery.labels)
    for label, n in sizes.items():
        assert query_counts[label] == _expected_queries(n, fraction)
        assert gallery_counts[label] == n - _expected_queries(n, fraction)
        assert gallery_counts[label] >= 1
    assert gallery_counts[None] == 3 and None not in query_counts
    assert _is_subsequence(split.query.ids, images.ids)
    assert _is_subsequence(split.gallery.ids, images.ids)
    assert not split.exclude_self and split.train is None


def test_per_class_determinism_and_seed() -> None:
    images = _images({"a": 30, "b": 30, "c": 30})
    first = per_class_split(images, seed=3)
    assert per_class_split(images, seed=3).query.ids == first.query.ids
    assert per_class_split(images, seed=4).query.ids != first.query.ids


def test_per_class_stable_when_a_class_is_added() -> None:
    before = per_class_split(_images({"a": 10, "b": 10}), seed=0)
    after = per_class_split(_images({"a": 10, "b": 10, "new": 10}), seed=0)
    assert [i for i in after.query.ids if not i.startswith("new/")] == before.query.ids


def test_per_class_keeps_source_train_and_val() -> None:
    parts = [_images({"a": 4}), _images({"t": 2}, "train"), _images({"v": 2}, "val")]
    images = ImageSet([r for part in parts for r in part.records])
    split = per_class_split(images)
    assert split.train is not None and split.train.labels == ["t", "t"]
    assert split.val is not None and split.val.labels == ["v", "v"]
    assert set(split.query.labels) | set(split.gallery.labels) == {"a"}


def test_per_class_errors() -> None:
    with pytest.raises(ValueError, match=r"query_fraction must lie in \(0, 1\), got 1.0"):
        per_class_split(_images({"a": 4}), query_fraction=1.0)
    with pytest.raises(ValueError, match="query_fraction"):
        per_class_split(_images({"a": 4}), query_fraction=0.0)
    with pytest.raises(ValueError, match="two or more labelled images"):
        per_class_split(_images({"a": 1, "b": 1}))


def test_natural_key() -> None:
    assert sorted(["10", "2", "1"], key=natural_key) == ["1", "2", "10"]
    assert sorted(["c10", "c2", "b3"], key=natural_key) == ["b3", "c2", "c10"]


def test_class_disjoint_sorted_classes() -> None:
    sizes = {f"c{i}": 2 + i % 3 for i in (7, 3, 10, 1, 5, 2, 9, 4, 8, 6)}
    images = ImageSet(_images(sizes).records + _unlabelled(2))
    split = class_disjoint_split(images, train_fraction=0.5, val_fraction=0.4)
    assert split.train is not None and split.val is not None
    assert set(split.train.labels) == {"c1", "c2", "c3"}
    assert set(split.val.labels) == {"c4", "c5"}
    assert set(split.query.labels) == {f"c{i}" for i in range(6, 11)}
    assert split.exclude_self
    test_classes = set(split.query.labels)
    assert split.gallery.ids == [r.id for r in images.records if r.label in test_classes | {None}]
    gallery = split.gallery.records
    assert split.query.ids == [r.id for r in gallery if r.label is not None]
    every = split.train.ids + split.val.ids + split.gallery.ids
    assert sorted(every) == sorted(images.ids) and len(every) == len(images)


def test_class_disjoint_seeded_shuffle() -> None:
    images = _images({f"k{i}": 3 for i in range(20)})
    first = class_disjoint_split(images, train_fraction=0.3, seed=5)
    again = class_disjoint_split(images, train_fraction=0.3, seed=5)
    assert first.train is not None and again.train is not None
    assert first.train.ids == again.train.ids and first.query.ids == again.query.ids
    train_classes = set(first.train.labels)
    assert len(train_classes) == 6 and not train_classes & set(first.query.labels)
    assert train_classes != {f"k{i}" for i in range(6)}
    unshuffled = class_disjoint_split(images, train_fraction=0.3)
    assert unshuffled.train is not None
    assert set(unshuffled.train.labels) == {f"k{i}" for i in range(6)}


def test_class_disjoint_extremes() -> None:
    images = _images({"a": 2, "b": 2, "c": 2})
    everything = class_disjoint_split(images, train_fraction=0.0)
    assert everything.train is None and everything.query.ids == images.ids
    assert class_disjoint_split(images, train_fraction=0.99).query.labels == ["c", "c"]
    small = class_disjoint_split(images, train_fraction=0.01)
    assert small.train is not None and small.train.labels == ["a", "a"]


def test_class_disjoint_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_disjoint_split(_images({"a": 3}))
    with pytest.raises(ValueError, match="needs labelled records"):
        class_disjoint_split(ImageSet(_unlabelled(2)), train_fraction=0.0)
    with pytest.raises(ValueError, match=r"train_fraction must lie in \[0, 1\)"):
        class_disjoint_split(_images({"a": 3, "b": 3}), train_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 training classes"):
        class_disjoint_split(
            _images({"a": 3, "b": 3, "c": 3}), train_fraction=0.3, val_fraction=0.5
        )


def test_retrieval_split_checks_exclude_self() -> None:
    images = _images({"a": 2})
    with pytest.raises(ValueError, match="query ids are not in the gallery"):
        RetrievalSplit(images, images.select([0]), exclude_self=True)


def test_per_class_train_fraction_trains_on_every_class() -> None:
    records = [ImageRecord(f"{c}/{i}", Path(f"/{c}/{i}.jpg"), c) for c in "abc" for i in range(10)]
    records.append(ImageRecord("x/0", Path("/x/0.jpg"), None))  # a distractor stays in the gallery
    images = ImageSet(records)
    split = per_class_split(images, query_fraction=0.25, seed=1, train_fraction=0.5)
    assert split.train is not None and len(split.train) == 15
    assert {r.label for r in split.train.records} == {"a", "b", "c"}
    trained = set(split.train.ids)
    assert not trained & set(split.query.ids) and not trained & set(split.gallery.ids)
    assert len(split.query) + len(split.gallery) + len(split.train) == len(records)
    # of the 5 images left per class, round(0.25 * 5) = 1 query
    assert len(split.query) == 3 and "x/0" in split.gallery.ids
    assert per_class_split(images, 0.25, 1, 0.5).train.ids == split.train.ids
    # without a train fraction the query draw is the one it always was
    assert per_class_split(images, 0.25, 1).query.ids == per_class_split(images, 0.25, 1, 0.0).query.ids


def test_train_only_trains_on_everything() -> None:
    images = ImageSet([ImageRecord(f"{i}", Path(f"/{i}.jpg")) for i in range(4)])
    split = make_split(images, "train_only")
    assert split.train.ids == images.ids and not len(split.query) and not len(split.gallery)
    with pytest.raises(ValueError, match="at least one image"):
        make_split(ImageSet([]), "train_only")
