"""Independent review of the data sources: manifests (CSV/Parquet), Stanford Online Products at
its real class counts, folder walks and competition folders, each checked against what the test
itself wrote to disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookalike.data.protocols import make_split
from lookalike.data.sources import (
    folder_source,
    load_source,
    manifest_source,
    query_gallery_source,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_parquet_nullable_labels(tmp_path: Path) -> None:
    """An Int64 column's empty cell was read as the label "<NA>": every unlabelled image one
    class, each the others' positive."""
    frame = pd.DataFrame(
        {"path": ["a.png", "b.png", "c.png"], "label": pd.array([7, None, 7], dtype="Int64")}
    )
    frame.to_parquet(tmp_path / "nullable.parquet")
    assert manifest_source(tmp_path / "nullable.parquet").labels == ["7", None, "7"]
    # int64 with an empty cell: as float64 the ids above 2**53 would merge into one label
    big = [2**60 + 1, 2**60, None]
    table = pa.table({"path": ["a.png", "b.png", "c.png"], "label": pa.array(big, pa.int64())})
    pq.write_table(table, tmp_path / "big.parquet")
    assert manifest_source(tmp_path / "big.parquet").labels == [str(2**60 + 1), str(2**60), None]
    strings = pa.table({"path": ["a.png", "b.png"], "label": pa.array(["01", None])})
    pq.write_table(strings, tmp_path / "strings.parquet")
    assert manifest_source(tmp_path / "strings.parquet").labels == ["01", None]


def test_csv_manifest_paths_labels_and_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my data"
    _touch(folder / "imgs" / "caf\u00e9 1.png")
    _touch(folder / "imgs" / "b.PNG")
    manifest = folder / "list.csv"
    manifest.write_text(
        "\ufeffpath,label,split\n"  # a byte-order mark as Excel writes it
        "imgs/caf\u00e9 1.png,01,query\n"
        "imgs/b.PNG,1,gallery\n"
        "./imgs/c.png,NA,gallery\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the manifest, not the cwd
    images = load_source("csv:my data/list.csv")
    assert images.labels == ["01", "1", "NA"]  # "01" is not 1, "NA" is not missing
    assert images.ids == ["imgs/caf\u00e9 1.png", "imgs/b.PNG", "imgs/c.png"]
    assert images.paths == [
        folder / "imgs" / "caf\u00e9 1.png",
        folder / "imgs" / "b.PNG",
        folder / "imgs" / "c.png",
    ]
    assert [r.split for r in images.records] == ["query", "gallery", "gallery"]


def test_manifest_errors_name_the_file_and_row(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,x\nb.png,y\n./a.png,z\n")
    with pytest.raises(ValueError, match=r"m\.csv, row 3: id 'a.png' repeats row 1") as error:
        manifest_source(manifest)
    assert "\n" not in str(error.value)
    manifest.write_text("path,class\na.png,x\n")
    with pytest.raises(ValueError, match=r"m\.csv lacks column\(s\) label; it has path, class"):
        manifest_source(manifest)


def test_manifest_warns_of_missing_images_by_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _touch(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,x\nsub/missing.png,x\nalso-missing.png,y\n")
    with caplog.at_level(logging.WARNING, logger="lookalike.data.sources"):
        images = manifest_source(manifest)
    assert len(images) == 3  # still listed: loading reports them as skipped
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "2 of 3 listed images do not exist" in message
    assert f"row 2, {tmp_path / 'sub' / 'missing.png'}" in message and "m.csv" in message


def _write_sop_lists(root: Path, per_class: int = 2) -> tuple[int, int]:
    """Ebay_train.txt / Ebay_test.txt with SOP's real numbering: classes 1..11318 train,
    11319..22634 test, 1-based image ids per file, super-class ids 1..12."""
    root.mkdir(parents=True)
    header = "image_id class_id super_class_id path\n"
    for name, classes in (
        ("Ebay_train.txt", range(1, 11319)),
        ("Ebay_test.txt", range(11319, 22635)),
    ):
        lines = [header]
        for c in classes:
            for j in range(per_class):
                lines.append(f"{len(lines)} {c} {c % 12 + 1} super{c % 12}_final/{c}_{j}.JPG\n")
        (root / name).write_text("".join(lines))
    return 11318 * per_class, 11316 * per_class


def test_sop_standard_protocol_at_real_class_counts(tmp_path: Path) -> None:
    root = tmp_path / "Stanford_Online_Products"
    n_train, n_test = _write_sop_lists(root)
    split = make_split(load_source(root), "all_vs_all")
    assert split.train is not None and split.val is None
    assert len(split.train) == n_train and len(set(split.train.labels)) == 11318
    assert len(split.query) == len(split.gallery) == n_test and split.exclude_self
    assert split.query.ids == split.gallery.ids
    assert set(split.query.labels) == {str(c) for c in range(11319, 22635)}
    assert not set(split.train.labels) & set(split.query.labels)
    assert not set(split.train.ids) & set(split.gallery.ids)
    # each label is the class id of its own line (not the image id, not shifted)
    assert all(r.id.split("/")[1].split("_")[0] == r.label for r in split.gallery.records)
    assert all(r.path == root / r.id for r in split.train.records[:50])


def test_folder_walk_against_os_walk(tmp_path: Path) -> None:
    """A tree without links: the walk equals a reference os.walk filtered by hand."""
    root = tmp_path / "root"
    for name in (
        "a/1.jpg",
        "a/deep/er/2.JPEG",
        "a/3.Png",
        "a/.4.png",
        "a/.hide/5.png",
        "a/notes.txt",
        "a/6.jpg.txt",
        "b/x y/\u00e9.webp",
        "b/7.TIF",
        "c 3/8.gif",
    ):
        _touch(root / name)
    expected = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = Path(folder).relative_to(root)
        if relative == Path("."):
            continue
        for file in files:
            suffix = Path(file).suffix.lower()
            if not file.startswith(".") and suffix in {
                ".jpg",
                ".jpeg",
                ".png",
                ".webp",
                ".tif",
                ".gif",
            }:
                expected.append(((relative / file).as_posix(), relative.parts[0]))
    images = folder_source(root)
    assert list(zip(images.ids, images.labels)) == sorted(expected)
    assert len(expected) == 6


def test_an_excluded_class_stays_out_when_linked_from_another(tmp_path: Path) -> None:
    """A link in cat/ to dog's image brought an excluded dog image back, labelled cat."""
    root = tmp_path / "root"
    _touch(root / "cat" / "c.png")
    _touch(root / "dog" / "d.png")
    os.symlink("../dog/d.png", root / "cat" / "d_link.png")
    os.symlink("../dog", root / "cat" / "more")
    images = folder_source(root, exclude_classes=["dog"])
    assert list(zip(images.ids, images.labels)) == [("cat/c.png", "cat")]
    kept = folder_source(root)  # not excluded: the image is listed once, under its own class
    assert list(zip(kept.ids, kept.labels)) == [("cat/c.png", "cat"), ("dog/d.png", "dog")]
    os.symlink("cat", root / "cat_alias")  # excluding an alias of a class leaves the class in
    assert folder_source(root, exclude_classes=["dog", "cat_alias"]).ids == ["cat/c.png"]


def test_folder_walk_survives_a_link_cycle(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root / "a" / "1.png")
    os.symlink("y.png", root / "a" / "x.png")
    os.symlink("x.png", root / "a" / "y.png")  # x -> y -> x
    os.symlink("../b", root / "a" / "to_b")
    os.symlink("../a", root / "b")  # a/to_b -> b -> a
    images = folder_source(root)
    readable = [(r.id, r.label) for r in images.records if r.unreadable is None]
    assert readable == [("a/1.png", "a")]
    assert {r.id for r in images.records if r.unreadable} == {"a/x.png", "a/y.png"}


@pytest.mark.parametrize("nesting", ["query_inside_gallery", "gallery_inside_query", "same"])
def test_competition_folders_may_not_share_images(tmp_path: Path, nesting: str) -> None:
    """A query also in the gallery finds itself at rank 1: a perfect score for a wrong split."""
    data = tmp_path / "data"
    _touch(data / "q" / "1.png")
    _touch(data / "g" / "2.png")
    query, gallery = {
        "query_inside_gallery": (data / "q", data),
        "gallery_inside_query": (data, data / "g"),
        "same": (data / "q", data / "q"),
    }[nesting]
    with pytest.raises(ValueError, match="are also gallery images .* give query and gallery"):
        query_gallery_source(query, gallery)
    separate = query_gallery_source(data / "q", data / "g")
    assert separate.ids == ["query/1.png", "gallery/2.png"]


def test_manifest_warns_of_a_file_listed_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two ids for one file: all-vs-all would find the file itself as a positive at rank 1."""
    for name in ("a.png", "b.png"):
        _touch(tmp_path / name)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,id\na.png,x,first\nb.png,x,\n./a.png,x,second\n")
    with caplog.at_level(logging.WARNING, logger="lookalike.data.sources"):
        images = manifest_source(manifest)
    assert images.ids == ["first", "b.png", "second"]
    message = " ".join(record.getMessage() for record in caplog.records)
    assert (
        f"1 rows list an image another row lists too (first: row 3, {tmp_path / 'a.png'}" in message
    )
    assert "as row 1" in message
    caplog.clear()
    manifest.write_text("path,label\na.png,x\nb.png,x\n")
    with caplog.at_level(logging.WARNING, logger="lookalike.data.sources"):
        manifest_source(manifest)
    assert not caplog.records
