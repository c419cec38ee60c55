"""Folder walks: they never leave the root, list each file once and report what they cannot read
(see lookalike.data.walk), checked on trees of links the test builds itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.data.loading import BrokenImageError, load_record
from lookalike.data.sources import folder_source, query_gallery_source
from lookalike.data.walk import unique_images, walk_images


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _classes(root: Path) -> Path:
    for name in ("frog", "toad"):
        for i in range(2):
            _touch(root / name / f"{name}{i}.png")
    return root


def _labels(root: Path) -> dict[str, str | None]:
    return {record.id: record.label for record in folder_source(root).records}


def test_a_loop_to_the_root_is_not_followed(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    os.symlink("..", root / "frog" / "dirloop")
    assert _labels(root) == {
        "frog/frog0.png": "frog", "frog/frog1.png": "frog",
        "toad/toad0.png": "toad", "toad/toad1.png": "toad",
    }


def test_links_between_folders_never_loop(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    _touch(root / "frog" / "x" / "in_x.png")
    _touch(root / "frog" / "y" / "in_y.png")
    os.symlink(root / "frog" / "y", root / "frog" / "x" / "to_y")
    os.symlink(root / "frog" / "x", root / "frog" / "y" / "to_x")
    frogs = [i for i, label in _labels(root).items() if label == "frog"]
    assert frogs == ["frog/frog0.png", "frog/frog1.png", "frog/x/in_x.png", "frog/y/in_y.png"]


def test_a_folder_linked_from_outside_the_root_is_reported_not_followed(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    _touch(tmp_path / "outside" / "secret.png")
    os.symlink(tmp_path / "outside", root / "frog" / "escape")
    os.symlink(tmp_path / "outside", root / "lizard")  # a whole class folder outside the root
    os.symlink(tmp_path / "outside" / "secret.png", root / "toad" / "secret.png")
    images = folder_source(root)
    reported = {r.id: r.unreadable for r in images.records if r.unreadable}
    assert sorted(reported) == ["frog/escape", "lizard", "toad/secret.png"]
    assert all("outside" in reason for reason in reported.values())
    assert not any("secret" in str(r.path) for r in images.records if not r.unreadable)


def test_a_file_reached_twice_is_listed_once_under_its_own_path(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    os.symlink(root / "toad" / "toad0.png", root / "frog" / "alias.png")  # another class's file
    os.symlink(root / "frog" / "frog0.png", root / "frog" / "again.png")  # its own class's file
    os.symlink(root / "toad", root / "frog" / "toads")  # a folder inside the root
    assert sorted(_labels(root)) == [
        "frog/frog0.png", "frog/frog1.png", "toad/toad0.png", "toad/toad1.png",
    ]


def test_a_link_to_a_file_inside_the_root_is_listed(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    _touch(root / ".cache" / "only_here.png")  # hidden: listed through the link alone
    os.symlink(root / ".cache" / "only_here.png", root / "frog" / "linked.png")
    assert _labels(root)["frog/linked.png"] == "frog"


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    os.symlink(root / "frog" / "gone.png", root / "frog" / "dangling.png")
    [record] = [r for r in folder_source(root).records if r.unreadable]
    assert record.id == "frog/dangling.png" and "broken symbolic link" in record.unreadable


def test_an_unreadable_folder_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, where chmod 000 does not stop reading: fail the listing instead.
    root = _classes(tmp_path / "root")
    _touch(root / "frog" / "locked" / "hidden_from_us.png")
    scandir = os.scandir

    def refusing(path: os.PathLike[str] | str) -> os._ScandirIterator:  # type: ignore[name-defined]
        if Path(path).name in ("locked", "toad"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    images = folder_source(root)
    reported = {r.id: (r.label, r.unreadable) for r in images.records if r.unreadable}
    assert reported == {
        "frog/locked": ("frog", "folder cannot be read (Permission denied)"),
        "toad": ("toad", "folder cannot be read (Permission denied)"),
    }
    locked = next(r for r in images.records if r.id == "frog/locked")
    with pytest.raises(BrokenImageError, match="folder cannot be read"):
        load_record(locked)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder anyway")
def test_a_chmod_000_folder_is_reported(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    (root / "toad").chmod(0)
    try:
        [record] = [r for r in folder_source(root).records if r.unreadable]
    finally:
        (root / "toad").chmod(0o755)
    assert record.id == "toad" and "cannot be read" in record.unreadable


def test_unlabelled_folders_follow_the_same_rules(tmp_path: Path) -> None:
    _touch(tmp_path / "q" / "a.png")
    _touch(tmp_path / "g" / "b.png")
    _touch(tmp_path / "outside" / "c.png")
    os.symlink("..", tmp_path / "g" / "loop")
    os.symlink(tmp_path / "outside", tmp_path / "g" / "escape")
    images = query_gallery_source(tmp_path / "q", tmp_path / "g")
    assert images.ids == ["query/a.png", "gallery/b.png", "gallery/escape", "gallery/loop"]
    assert images[1].unreadable is None
    assert all("outside" in images[i].unreadable for i in (2, 3))  # both lead out of g


def test_walk_keeps_the_path_without_links(tmp_path: Path) -> None:
    _touch(tmp_path / "sub" / "z.png")
    os.symlink(tmp_path / "sub" / "z.png", tmp_path / "a.png")
    found = walk_images(tmp_path)
    assert [f.path.name for f in found] == ["a.png", "z.png"]
    assert [f.path.name for f in unique_images(found)] == ["z.png"]


def test_a_class_folder_linked_inside_the_root_adds_nothing(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    os.symlink(root / "toad", root / "a_toad_link")  # sorts before the real folder
    assert sorted(_labels(root).items()) == [
        ("frog/frog0.png", "frog"), ("frog/frog1.png", "frog"),
        ("toad/toad0.png", "toad"), ("toad/toad1.png", "toad"),
    ]


def test_a_broken_link_reached_twice_is_reported_once(tmp_path: Path) -> None:
    root = _classes(tmp_path / "root")
    os.symlink(root / "toad" / "gone.png", root / "toad" / "dangling.png")
    os.symlink(root / "toad", root / "frog" / "toads")
    assert [r.id for r in folder_source(root).records if r.unreadable] == ["toad/dangling.png"]
