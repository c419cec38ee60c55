"""Folder walks that never leave their root, and report what they cannot read.

A folder of images is walked recursively, hidden names (``.*``) aside, with three guarantees:

- **It stays inside the root.** A symbolic link is followed only when its target lies inside the
  root the user gave. A link leading outside it (``frog/elsewhere -> /data``) is not followed, and
  one back to a folder the walk is in (``frog/dirloop -> ..``) is a loop and is not followed
  either: followed, it lists every class again under the wrong label.
- **Each file once.** A file reached twice (itself and through a link) is listed once, under its
  own path rather than the link's, so no image is embedded twice and a query never finds its own
  copy as its best match.
- **Nothing lost silently.** A folder that cannot be read, a broken link and a link leading
  outside the root are entries with an ``unreadable`` reason; sources turn them into records that
  fail to load with that reason, so they are listed in ``skipped.csv`` with the images that could
  not be decoded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File suffixes treated as images (compared case-insensitively)."""


@dataclass(frozen=True)
class FoundImage:
    """One entry of a walk.

    Attributes:
        path: The file (or unreadable folder) as reached from the root, links not resolved.
        location: Where the entry really is: the file a link resolves to, else the entry itself
            in its real folder. Two entries with one location are one image.
        in_linked_folder: Reached through a link to a folder above it.
        is_link: The entry itself is a symbolic link.
        unreadable: Why the entry cannot be used; None for a file to read.
    """

    path: Path
    location: str
    in_linked_folder: bool
    is_link: bool
    unreadable: str | None = None


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """``["JPG", ".png"]`` → ``{".jpg", ".png"}``."""
    return frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def walk_images(
    folder: str | os.PathLike[str],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    root: str | os.PathLike[str] | None = None,
) -> list[FoundImage]:
    """The image files under ``folder`` and the entries that could not be walked.

    Args:
        folder: Where the walk starts.
        extensions: Image suffixes to keep (case-insensitive, with or without the dot).
        root: The boundary no link may lead out of (a source's root when ``folder`` is one of
            its class folders); ``folder`` itself by default.

    Returns:
        Entries sorted by their POSIX path relative to ``folder``; a file reached twice appears
        twice (see :func:`unique_images`).
    """
    folder = Path(folder).absolute()
    boundary = os.path.realpath(root if root is not None else folder)
    suffixes = normalise_extensions(extensions)
    found: list[FoundImage] = []
    # Real folders walked through a link: another link to one of them adds only duplicates.
    walked_via_link: set[str] = set()

    def is_image(name: str) -> bool:
        return Path(name).suffix.lower() in suffixes

    def visit(directory: Path, chain: tuple[str, ...], in_linked_folder: bool) -> None:
        """Walk ``directory``; ``chain`` holds the real folders from the start down to it."""
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            reason = f"folder cannot be read ({error.strerror or type(error).__name__})"
            logger.warning("%s: %s", directory, reason)
            found.append(FoundImage(directory, chain[-1], in_linked_folder, False, reason))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            is_link = entry.is_symlink()
            here = os.path.join(chain[-1], entry.name)
            target = os.path.realpath(path)
            if not os.path.exists(target):
                if is_link and is_image(entry.name):
                    reason = f"broken symbolic link to {os.readlink(path)}"
                    found.append(FoundImage(path, here, in_linked_folder, True, reason))
                continue
            is_folder = os.path.isdir(target)
            if is_link and not is_inside(target, boundary):
                if is_folder or is_image(entry.name):
                    reason = f"symbolic link to {target}, outside {boundary}: not followed"
                    logger.warning("%s: %s", path, reason)
                    found.append(FoundImage(path, here, in_linked_folder, True, reason))
                continue
            if is_folder:
                if any(is_inside(walked, target) for walked in chain):
                    logger.warning("%s: symbolic link loop back to %s, not followed", path, target)
                    continue
                linked = in_linked_folder or is_link
                if linked and target in walked_via_link:
                    continue
                if linked:
                    walked_via_link.add(target)
                visit(path, (*chain, target), linked)
            elif is_image(entry.name):
                found.append(FoundImage(path, target, in_linked_folder, is_link))

    visit(folder, (os.path.realpath(folder),), folder.is_symlink())
    return sorted(found, key=lambda entry: entry.path.relative_to(folder).as_posix())


def unique_images(entries: Iterable[FoundImage]) -> list[FoundImage]:
    """``entries`` with each location once, in their order (see :func:`unique_positions`)."""
    entries = list(entries)
    return [entries[i] for i in unique_positions(entries)]


def unique_positions(entries: Sequence[FoundImage]) -> list[int]:
    """Positions in ``entries`` that keep each location once, in order.

    Of the paths reaching one location, the one through no linked folder and not itself a link
    is kept (else the first), so a link to an image listed anyway adds nothing.
    """
    keep: dict[str, int] = {}
    for position, entry in enumerate(entries):
        kept = keep.get(entry.location)
        if kept is None or _preference(entry) < _preference(entries[kept]):
            keep[entry.location] = position
    positions = sorted(keep.values())
    dropped = len(entries) - len(positions)
    if dropped:
        logger.info("%d links to images listed under their own path left out", dropped)
    return positions


def _preference(entry: FoundImage) -> tuple[bool, bool]:
    return (entry.in_linked_folder, entry.is_link)


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """``path`` is ``folder`` or lies below it, both compared as given (resolve them first)."""
    path, folder = os.fspath(path), os.fspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
