from __future__ import annotations

from pathlib import Path

from lookalike.data.records import ImageRecord, ImageSet, label_codes


def _set() -> ImageSet:
    return ImageSet(
        [
            ImageRecord("a", Path("/a.png"), "cat", "query"),
            ImageRecord("b", Path("/b.png"), "dog", "gallery"),
            ImageRecord("c", Path("/c.png"), "cat", "gallery"),
        ]
    )


def test_split_select_and_classes() -> None:
    images = _set()
    assert images.split("gallery").ids == ["b", "c"]
    assert images.select([2, 0]).ids == ["c", "a"]
    assert images.classes() == ["cat", "dog"]
    assert images.is_labelled and not ImageSet([ImageRecord("x", Path("/x"))]).is_labelled


def test_label_codes_share_a_vocabulary() -> None:
    vocabulary: dict[str, int] = {}
    assert label_codes(["dog", None, "cat", "dog"], vocabulary) == [0, -1, 1, 0]
    assert label_codes(["cat", "fox"], vocabulary) == [1, 2]
