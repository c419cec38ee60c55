"""Tests for lookalike.data.sources: every source against the files the test itself wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from lookalike.data.records import ImageSet
from lookalike.data.sources import (
    IMAGE_EXTENSIONS,
    SOURCES,
    folder_source,
    list_images,
    load_source,
    manifest_source,
    query_gallery_source,
    sop_source,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_registry_names() -> None:
    assert SOURCES.names() == ["csv", "folder", "sop", "unlabelled"]
    with pytest.raises(ValueError, match="valid names: csv, folder, sop, unlabelled"):
        SOURCES.get("imagenet")


def test_folder_source_on_generated_images(image_folder: Path) -> None:
    images = folder_source(image_folder)
    expected_ids = sorted(f"{c}/{c}_{i}.png" for c in ("cat", "dog", "fox") for i in range(4))
    assert images.ids == expected_ids
    assert images.labels == [i.split("/")[0] for i in expected_ids]
    assert all(r.path == image_folder / r.id and r.path.is_absolute() for r in images.records)
    assert all(r.split is None for r in images.records)
    assert images.is_labelled


def test_folder_source_recursive_hidden_and_case(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root / "b" / "deep" / "er" / "x.JPG")
    _touch(root / "b" / "y.TiFf")
    _touch(root / "a" / "z.webp")
    _touch(root / "a" / ".hidden.png")
    _touch(root / "a" / ".cache" / "skip.png")
    _touch(root / "a" / "notes.txt")
    _touch(root / ".git" / "obj.png")
    _touch(root / "stray.png")
    images = folder_source(root)
    assert images.ids == ["a/z.webp", "b/deep/er/x.JPG", "b/y.TiFf"]
    assert images.labels == ["a", "b", "b"]
    assert folder_source(root, extensions=["jpg"]).ids == ["b/deep/er/x.JPG"]


def test_folder_source_neither_leaves_the_root_nor_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(tmp_path / "elsewhere" / "p.png")
    _touch(root / "cls" / "a.png")
    os.symlink(tmp_path / "elsewhere", root / "cls" / "linked")
    os.symlink(root / "cls", root / "cls" / "loop")
    images = folder_source(root)
    assert images.ids == ["cls/a.png", "cls/linked"]  # the link is reported, not followed
    assert images[0].unreadable is None
    assert "outside" in images[1].unreadable and "not followed" in images[1].unreadable


def test_folder_source_is_deterministic(image_folder: Path) -> None:
    assert folder_source(image_folder).records == folder_source(image_folder).records


def test_folder_source_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_source(tmp_path / "missing")
    _touch(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        folder_source(tmp_path / "flat")
    _touch(tmp_path / "empty" / "cls" / "readme.txt")
    with pytest.raises(ValueError, match="no images"):
        folder_source(tmp_path / "empty")


def test_list_images_all_extensions(tmp_path: Path) -> None:
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        _touch(tmp_path / f"{i}{ext.upper()}")
    _touch(tmp_path / "x.svg")
    assert len(list_images(tmp_path)) == len(IMAGE_EXTENSIONS) == 8


def test_manifest_csv(tmp_path: Path) -> None:
    manifest = tmp_path / "meta" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,split,caption,id\n"
        "img/a.jpg,shoe,query,a red shoe,\n"
        "/abs/b.jpg,,gallery,,b-id\n"
        "img/c.jpg,007,train,,\n"
    )
    images = manifest_source(manifest)
    assert images.ids == ["img/a.jpg", "b-id", "img/c.jpg"]
    base = manifest.parent
    assert images.paths == [base / "img/a.jpg", Path("/abs/b.jpg"), base / "img/c.jpg"]
    assert images.labels == ["shoe", None, "007"]  # no number parsing: "007" stays text
    assert [r.split for r in images.records] == ["query", "gallery", "train"]
    assert [r.caption for r in images.records] == ["a red shoe", None, None]
    rooted = manifest_source(manifest, root=tmp_path / "data")
    assert rooted.paths[0] == tmp_path / "data" / "img/a.jpg"


def test_manifest_parquet_matches_csv(tmp_path: Path) -> None:
    table = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [3, None, 5]})
    table.to_parquet(tmp_path / "m.parquet")
    images = manifest_source(tmp_path / "m.parquet")
    assert images.labels == ["3", None, "5"]
    assert images.ids == ["a.png", "b.png", "c.png"]
    assert all(r.split is None and r.caption is None for r in images.records)


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        manifest_source(tmp_path / "nope.csv")
    bad = tmp_path / "cols.csv"
    bad.write_text("file,label\na.png,x\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) path"):
        manifest_source(bad)
    split = tmp_path / "split.csv"
    split.write_text("path,label,split\na.png,x,query\nb.png,x,test\n")
    with pytest.raises(ValueError, match=r"row 2: split 'test' is not one of train, val, query"):
        manifest_source(split)
    dup = tmp_path / "dup.csv"
    dup.write_text("path,label\na.png,x\na.png,y\n")
    with pytest.raises(ValueError, match="row 2: id 'a.png' repeats row 1"):
        manifest_source(dup)
    empty_path = tmp_path / "empty_path.csv"
    empty_path.write_text("path,label\n,x\n")
    with pytest.raises(ValueError, match="row 1: empty path"):
        manifest_source(empty_path)
    other = tmp_path / "m.tsv"
    other.write_text("path\tlabel\n")
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        manifest_source(other)


def _write_sop(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "Ebay_train.txt").write_text(
        "image_id class_id super_class_id path\n"
        "1 1 1 bicycle_final/111_0.JPG\n"
        "2 1 1 bicycle_final/111_1.JPG\n"
        "3 2 2 cabinet_final/222_0.JPG\n"
    )
    (root / "Ebay_test.txt").write_text(
        "image_id class_id super_class_id path\n"
        "1 11319 1 bicycle_final/999_0.JPG\n"
        "2 11319 1 bicycle_final/999_1.JPG\n"
    )


def test_sop_source(tmp_path: Path) -> None:
    root = tmp_path / "Stanford_Online_Products"
    _write_sop(root)
    images = sop_source(root)
    assert images.ids == [
        "bicycle_final/111_0.JPG",
        "bicycle_final/111_1.JPG",
        "cabinet_final/222_0.JPG",
        "bicycle_final/999_0.JPG",
        "bicycle_final/999_1.JPG",
    ]
    assert images.labels == ["1", "1", "2", "11319", "11319"]
    assert [r.split for r in images.records] == ["train"] * 3 + ["gallery"] * 2
    assert images.paths[0] == root / "bicycle_final/111_0.JPG"


def test_sop_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sop_source(tmp_path / "missing")
    root = tmp_path / "sop"
    _write_sop(root)
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Ebay_test.txt is missing"):
        sop_source(root)
    (root / "Ebay_test.txt").write_text("id class path\n")
    with pytest.raises(ValueError, match="header"):
        sop_source(root)
    (root / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n1 2 3\n")
    with pytest.raises(ValueError, match="line 2: expected 4 fields"):
        sop_source(root)


def test_query_gallery_source(tmp_path: Path) -> None:
    _touch(tmp_path / "q" / "x.png")
    _touch(tmp_path / "g" / "sub" / "x.png")
    _touch(tmp_path / "g" / "x.png")
    images = query_gallery_source(tmp_path / "q", tmp_path / "g")
    assert images.ids == ["query/x.png", "gallery/sub/x.png", "gallery/x.png"]
    assert [r.split for r in images.records] == ["query", "gallery", "gallery"]
    assert images.labels == [None, None, None]
    assert images.paths[1] == tmp_path / "g" / "sub" / "x.png"
    assert len(set(images.ids)) == len(images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="gallery folder .* holds no images"):
        query_gallery_source(tmp_path / "q", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="query folder"):
        query_gallery_source(tmp_path / "nope", tmp_path / "g")


def test_load_source_forms(tmp_path: Path, image_folder: Path) -> None:
    reference = folder_source(image_folder).records
    assert load_source(image_folder).records == reference
    assert load_source(f"folder:{image_folder}").records == reference
    assert load_source({"type": "folder", "root": str(image_folder)}).records == reference
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,x\n")
    assert load_source(str(manifest)).ids == ["a.png"]
    assert load_source(f"CSV:{manifest}").ids == ["a.png"]
    sop = tmp_path / "sop"
    _write_sop(sop)
    assert load_source(sop).records == sop_source(sop).records
    _touch(tmp_path / "q" / "1.png")
    _touch(tmp_path / "g" / "2.png")
    unlabelled = load_source(f"unlabelled:{tmp_path / 'q'}", gallery_dir=tmp_path / "g")
    assert isinstance(unlabelled, ImageSet) and unlabelled.ids == ["query/1.png", "gallery/2.png"]


def test_load_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data source 'coco'.*valid names"):
        load_source("coco:/nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source(tmp_path / "absent")
    with pytest.raises(ValueError, match="needs a 'type' key"):
        load_source({"root": "x"})
    odd = _touch(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="cannot tell the source"):
        load_source(odd)


def test_folder_source_marks_distractor_classes_and_excludes_others(image_folder: Path) -> None:
    images = folder_source(image_folder, distractor_classes=["fox"], exclude_classes=["dog"])
    labels = [record.label for record in images]
    assert labels.count("cat") == 4 and labels.count(None) == 4 and "dog" not in labels
    with pytest.raises(ValueError, match="wolf"):
        folder_source(image_folder, distractor_classes=["wolf"])
