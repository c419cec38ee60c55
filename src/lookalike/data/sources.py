"""Data sources: turn what a user has on disk into an :class:`~lookalike.data.records.ImageSet`.

Each source is a function registered in :data:`SOURCES` under a short name:

- ``"folder"``: a folder per class (torchvision's ``ImageFolder`` layout);
- ``"csv"``: a CSV or Parquet manifest with ``path,label[,split][,caption][,id]`` columns;
- ``"sop"``: Stanford Online Products (Oh Song et al., "Deep Metric Learning via Lifted Structured
  Feature Embedding", CVPR 2016) from its ``Ebay_train.txt`` / ``Ebay_test.txt`` lists;
- ``"unlabelled"``: competition mode, two folders of unlabelled query and gallery images.

:func:`load_source` picks one from a short spec string (``"sop:/data/Stanford_Online_Products"``)
or a dict, as configs and the command line give them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lookalike.data.manifest import read_manifest
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.data.walk import (
    IMAGE_EXTENSIONS,
    FoundImage,
    is_inside,
    normalise_extensions,
    unique_images,
    unique_positions,
    walk_images,
)
from lookalike.registry import Registry

logger = logging.getLogger(__name__)

SOURCES = Registry[ImageSet]("data source")

SOP_LISTS = {"train": "Ebay_train.txt", "gallery": "Ebay_test.txt"}
"""Stanford Online Products list files, keyed by the split their rows receive."""

SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def list_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files under ``folder``, recursively, sorted by their POSIX path relative to it.

    Hidden files and folders (``.*``) are skipped; the walk never leaves ``folder`` and lists each
    file once (see :mod:`lookalike.data.walk`). Entries it cannot read are listed too: loading
    them fails with the reason.
    """
    return [found.path for found in unique_images(walk_images(folder, extensions))]


def list_images_in(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The non-hidden image files directly in ``folder`` (not recursive), sorted by name."""
    suffixes = normalise_extensions(extensions)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


@SOURCES.register("folder")
def folder_source(
    root: str | os.PathLike[str],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    distractor_classes: Iterable[str] = (),
    exclude_classes: Iterable[str] = (),
) -> ImageSet:
    """Images in a folder per class: ``root/<label>/**/<image>``.

    Args:
        root: Folder whose sub-folders are the classes; images may sit at any depth inside them.
        extensions: Image suffixes to keep (case-insensitive, with or without the dot).
        distractor_classes: Class folders whose images are unlabelled distractors (e.g.
            Caltech-101's ``BACKGROUND_Google``): they join galleries but are nobody's match.
        exclude_classes: Class folders left out entirely (their images too where a link in
            another class folder reaches them).

    Returns:
        An unsplit :class:`ImageSet` sorted by id, where id is the image path relative to ``root``
        (POSIX) and label the class folder's name.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        ValueError: ``root`` has no class folders, or they hold no images.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    distractors, excluded = set(distractor_classes), set(exclude_classes)
    unknown = sorted((distractors | excluded) - {p.name for p in class_dirs})
    if unknown:
        raise ValueError(
            f"class folder(s) {', '.join(unknown)} not found in {root}; "
            "distractor_classes and exclude_classes name sub-folders of the root"
        )
    # An excluded class stays out even where a link in another class folder reaches its images.
    excluded_locations = [
        os.path.realpath(p) for p in class_dirs if p.name in excluded and not p.is_symlink()
    ]
    class_dirs = [p for p in class_dirs if p.name not in excluded]
    if not class_dirs:
        raise ValueError(
            f"image folder {root} has no class sub-folders; expected root/<class>/<image>"
        )
    stray = list_images_in(root, extensions)
    if stray:
        logger.warning("ignoring %d images directly in %s (no class folder)", len(stray), root)
    walked = [
        (class_dir, entry)
        for class_dir in class_dirs
        for entry in _walk_class_folder(class_dir, root, extensions)
        if not any(is_inside(entry.location, folder) for folder in excluded_locations)
    ]
    records = [
        ImageRecord(
            id=entry.path.relative_to(root).as_posix(),
            path=entry.path,
            label=None if class_dir.name in distractors else class_dir.name,
            unreadable=entry.unreadable,
        )
        for class_dir, entry in (walked[i] for i in unique_positions([e for _, e in walked]))
    ]
    if not records:
        suffixes = " ".join(sorted(normalise_extensions(extensions)))
        raise ValueError(f"no images ({suffixes}) in the class folders of {root}")
    records.sort(key=lambda record: record.id)
    return ImageSet(records)


def _walk_class_folder(
    class_dir: Path, root: Path, extensions: Iterable[str]
) -> list[FoundImage]:
    """The images of one class folder; a class folder linked from outside ``root`` is one
    unreadable entry."""
    target = os.path.realpath(class_dir)
    real_root = os.path.realpath(root)
    if class_dir.is_symlink() and not is_inside(target, real_root):
        reason = f"symbolic link to {target}, outside {real_root}: not followed"
        logger.warning("%s: %s", class_dir, reason)
        location = os.path.join(real_root, class_dir.name)
        return [FoundImage(class_dir, location, False, True, reason)]
    return walk_images(class_dir, extensions, root=root)


@SOURCES.register("csv")
def manifest_source(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> ImageSet:
    """Images listed in a CSV or Parquet manifest (:func:`lookalike.data.manifest.read_manifest`,
    whose docstring gives the columns and errors)."""
    return read_manifest(path, root)


@SOURCES.register("sop")
def sop_source(root: str | os.PathLike[str]) -> ImageSet:
    """Stanford Online Products (Oh Song et al., CVPR 2016) from its list files.

    ``root/Ebay_train.txt`` and ``root/Ebay_test.txt`` have the header
    ``image_id class_id super_class_id path`` (space-separated, paths relative to ``root``). The
    11,318 train classes and 11,316 test classes are disjoint.

    Returns:
        Train rows with split ``"train"``, then test rows with split ``"gallery"``; id is the
        listed path and label the ``class_id``. The standard evaluation is all-vs-all on the test
        rows (the ``"all_vs_all"`` protocol in :mod:`lookalike.data.protocols`, which keeps the
        train rows as its training set).

    Raises:
        FileNotFoundError: ``root`` or one of the list files is missing.
        ValueError: A list file has the wrong header or a malformed row.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"Stanford Online Products folder {root} does not exist")
    records: list[ImageRecord] = []
    for split, name in SOP_LISTS.items():
        list_file = root / name
        if not list_file.is_file():
            raise FileNotFoundError(
                f"{list_file} is missing; point sop at the Stanford_Online_Products folder "
                "that holds "
                f"{' and '.join(SOP_LISTS.values())}"
            )
        lines = list_file.read_text(encoding="utf-8").splitlines()
        header = lines[0].split() if lines else []
        if header != SOP_HEADER:
            raise ValueError(
                f"{list_file}: header {' '.join(header)!r} is not {' '.join(SOP_HEADER)!r}"
            )
        for line_number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != len(SOP_HEADER):
                raise ValueError(
                    f"{list_file}, line {line_number}: expected 4 fields, got {line.strip()!r}"
                )
            _, class_id, _, image = fields
            records.append(ImageRecord(id=image, path=root / image, label=class_id, split=split))
    return ImageSet(records)


@SOURCES.register("unlabelled")
def query_gallery_source(
    query_dir: str | os.PathLike[str],
    gallery_dir: str | os.PathLike[str],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> ImageSet:
    """Competition mode: unlabelled query and gallery images in two folders (searched recursively).

    Returns:
        Query records (split ``"query"``, id ``"query/<path relative to query_dir>"``) then gallery
        records (split ``"gallery"``, id ``"gallery/<relative path>"``), each sorted; no labels.

    Raises:
        FileNotFoundError: A folder does not exist.
        ValueError: A folder holds no images, or an image is in both (one folder is, or lies
            inside, the other): as a query it would find itself in the gallery.
    """
    records: list[ImageRecord] = []
    walked: dict[str, tuple[Path, list[FoundImage]]] = {}
    for split, folder in (("query", query_dir), ("gallery", gallery_dir)):
        folder = Path(folder).absolute()
        if not folder.is_dir():
            raise FileNotFoundError(f"{split} folder {folder} does not exist or is not a folder")
        images = unique_images(walk_images(folder, extensions))
        if not images:
            raise ValueError(f"{split} folder {folder} holds no images")
        walked[split] = (folder, images)
    _refuse_shared_images(walked["query"], walked["gallery"])
    for split, (folder, images) in walked.items():
        records.extend(
            ImageRecord(
                id=f"{split}/{found.path.relative_to(folder).as_posix()}",
                path=found.path,
                split=split,
                unreadable=found.unreadable,
            )
            for found in images
        )
    return ImageSet(records)


def _refuse_shared_images(
    query: tuple[Path, list[FoundImage]], gallery: tuple[Path, list[FoundImage]]
) -> None:
    """Raise when a file is both a query and a gallery image."""
    gallery_locations = {found.location for found in gallery[1] if found.unreadable is None}
    shared = [
        found.path
        for found in query[1]
        if found.unreadable is None and found.location in gallery_locations
    ]
    if shared:
        raise ValueError(
            f"{len(shared)} of the {len(query[1])} query images in {query[0]} are also gallery "
            f"images in {gallery[0]} (first: {shared[0]}); each would find itself as its best "
            "match: give query and gallery folders that share no image"
        )


def load_source(spec: str | os.PathLike[str] | Mapping[str, Any], **kwargs: Any) -> ImageSet:
    """Build an :class:`ImageSet` from a short spec.

    Accepted specs:

    - ``"<source>:<first argument>"``, e.g. ``"folder:/data/cub/images"``,
      ``"csv:/data/manifest.csv"``, ``"sop:/data/Stanford_Online_Products"`` or
      ``"unlabelled:/data/query"`` with ``gallery_dir=`` in ``kwargs``;
    - a plain existing folder: ``"sop"`` when it holds the SOP list files, ``"folder"`` otherwise;
    - a plain ``.csv`` / ``.parquet`` / ``.pq`` file: ``"csv"``;
    - a dict ``{"type": "<source>", **arguments}``.

    ``kwargs`` are passed on to the source function.

    Raises:
        ValueError: Unknown source name (listing the valid ones) or a spec that fits no form.
        FileNotFoundError: A plain path that does not exist.
    """
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "type" not in options:
            raise ValueError(
                f"source spec {options!r} needs a 'type' key; valid types: {', '.join(SOURCES)}"
            )
        return SOURCES.create(str(options.pop("type")), **options, **kwargs)
    text = os.fspath(spec)
    name, sep, argument = text.partition(":")
    if sep and name.lower() in SOURCES:
        return SOURCES.create(name, argument, **kwargs)
    path = Path(text)
    if path.is_dir():
        if all((path / name).is_file() for name in SOP_LISTS.values()):
            return sop_source(path, **kwargs)
        return folder_source(path, **kwargs)
    if path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return manifest_source(path, **kwargs)
    if sep and len(name) > 1 and not path.exists():
        raise ValueError(
            f"unknown data source {name!r} in {text!r}; valid names: {', '.join(SOURCES)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"data source {text!r} does not exist")
    raise ValueError(
        f"cannot tell the source of {text!r}: give a folder, a .csv/.parquet manifest, "
        f"or <source>:<path> with source one of {', '.join(SOURCES)}"
    )
