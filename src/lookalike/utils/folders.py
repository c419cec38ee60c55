"""Verified, atomically replaced folders: every artefact folder lookalike writes.

An artefact (an embedding folder, an index, a saved model, a run) is a folder of files that only
make sense together. Two rules keep it whole:

- **Manifest written last.** ``manifest.json`` lists every file with its size and SHA-256, the
  artefact's kind and the fingerprint of the model behind it, and carries a checksum of its own
  content (so a damaged manifest is named as such, not as a missing file). A folder without one
  was never finished; a file whose size or checksum differs was changed or damaged since.
  Readers call :func:`verify_folder` and refuse such a folder with one line naming the file.
- **Swapped in whole.** :func:`atomic_folder` builds the new folder beside the target (a hidden
  ``.NAME.partial`` sibling, kept across a kill so that resumable jobs can continue in it) and
  swaps it in with one ``rename`` (Linux ``renameat2(RENAME_EXCHANGE)`` when the target exists),
  so a kill at any instant leaves the old folder or the new one, never a mix. Where the exchange
  is unavailable the target is first renamed aside; :func:`recover_folder` finishes or undoes a
  swap cut between the two renames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"
_CHUNK = 1 << 20
_RENAME_EXCHANGE = 2


class ArtefactError(ValueError):
    """A folder that is unfinished, damaged or of the wrong kind (a one-line, user-fixable error)."""


@dataclass(frozen=True)
class FileEntry:
    """Size in bytes and SHA-256 (hex) of one file of an artefact."""

    size: int
    sha256: str


@dataclass
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        kind: What the folder is ("embeddings", "index", "model", "run" ...).
        files: ``{relative posix path: FileEntry}`` of every file but the manifest.
        fingerprint: The fingerprint of the model whose vectors the folder holds, if any.
        extra: Anything else worth keeping (counts, dimension ...).
    """

    kind: str
    files: dict[str, FileEntry]
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body = {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "extra": self.extra,
            "files": {
                name: {"size": entry.size, "sha256": entry.sha256}
                for name, entry in sorted(self.files.items())
            },
        }
        return {**body, "checksum": _body_checksum(body)}


def _body_checksum(body: dict[str, Any]) -> str:
    """SHA-256 of the manifest's own content, so that damage to the manifest itself (a flipped
    bit in a file name or a size) is told apart from damage to the files it lists."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (manifest and hidden temporaries excluded)."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_symlink() or not path.is_file():
            continue
        if relative.as_posix() == MANIFEST_FILE or any(p.startswith(".") for p in relative.parts):
            continue
        files.append(path)
    return files


def write_manifest(
    folder: str | os.PathLike[str],
    kind: str,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
    exclude: tuple[str, ...] = (),
) -> Manifest:
    """Checksum every file of ``folder`` and write ``manifest.json`` (atomically, last).

    Args:
        folder: The finished folder.
        kind: What it is; :func:`verify_folder` can require it.
        fingerprint: The model fingerprint of its vectors, if any.
        extra: Further facts to keep (must be JSON).
        exclude: Top-level names left out (a resumable job's working files).
    """
    folder = Path(folder)
    entries = {}
    for path in _listed_files(folder):
        relative = path.relative_to(folder).as_posix()
        if relative.split("/")[0] in exclude:
            continue
        entries[relative] = FileEntry(path.stat().st_size, file_sha256(path))
    manifest = Manifest(kind, entries, fingerprint, dict(extra or {}))
    atomic_write_json(folder / MANIFEST_FILE, manifest.to_json())
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """The manifest of ``folder``, validated in shape (not yet against the files).

    Raises:
        ArtefactError: The manifest is missing or unreadable.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist or is not a folder")
    if not path.is_file():
        raise ArtefactError(
            f"{path} is missing: {folder} was never finished (or predates manifests); "
            "rerun the job that writes it"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        body = {key: value for key, value in raw.items() if key != "checksum"}
        if raw.get("checksum") != _body_checksum(body):
            raise ValueError("its own checksum does not match its content")
        files = {
            str(name): FileEntry(int(entry["size"]), str(entry["sha256"]))
            for name, entry in raw["files"].items()
        }
        fingerprint = raw.get("fingerprint")
        return Manifest(str(raw["kind"]), files, None if fingerprint is None else str(fingerprint),
                        dict(raw.get("extra") or {}))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise ArtefactError(
            f"{path} is damaged ({' '.join(str(error).split())[:120]}); rerun the job that wrote "
            f"{folder.name}"
        ) from None


def verify_folder(
    folder: str | os.PathLike[str],
    kind: str | tuple[str, ...] | None = None,
    check_hashes: bool = True,
    ignore: tuple[str, ...] = (),
) -> Manifest:
    """Check ``folder`` against its manifest; return the manifest when every file matches.

    Args:
        folder: The artefact folder.
        kind: The kind(s) the caller accepts.
        check_hashes: Also compare SHA-256 (else sizes only, for very large folders).
        ignore: Listed files left unchecked (a file the caller is about to rewrite, such as
            the report of a run).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ArtefactError: The manifest is missing or damaged, the kind is wrong, or a listed file
            is missing or differs in size or checksum (the message names the file).
    """
    folder = recover_folder(folder)
    manifest = read_manifest(folder)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and manifest.kind not in kinds:
        raise ArtefactError(
            f"{folder} holds {manifest.kind}, not {' or '.join(kinds)}; pass the right folder"
        )
    for name, entry in manifest.files.items():
        if name in ignore:
            continue
        path = folder / name
        if not path.is_file():
            raise ArtefactError(f"{path} is missing from {folder}; rerun the job that wrote it")
        size = path.stat().st_size
        if size != entry.size:
            raise ArtefactError(
                f"{path} has {size} bytes but was written with {entry.size}: it was changed or "
                "damaged; rerun the job that wrote it"
            )
        if check_hashes and file_sha256(path) != entry.sha256:
            raise ArtefactError(
                f"{path} does not match its checksum: it was changed or damaged; rerun the job "
                "that wrote it"
            )
    return manifest


def unreadable(path: str | os.PathLike[str], error: BaseException, fix: str) -> ArtefactError:
    """A one-line error for a file that passed its manifest but cannot be parsed.

    Args:
        path: The file.
        error: What the parser raised (its message is squeezed onto one line and shortened).
        fix: What the user should do ("rerun `lookalike embed`").
    """
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    return ArtefactError(f"{path} cannot be read ({reason}); {fix}")


def check_replaceable(
    target: str | os.PathLike[str], kind: str, legacy_files: tuple[str, ...] = ()
) -> None:
    """Refuse to replace a folder that is not an earlier ``kind`` artefact.

    Swapping a folder in replaces everything in the old one, so an output folder must be new,
    empty, a finished (or unfinished) ``kind`` folder, or a ``kind`` folder from before
    manifests (it holds one of ``legacy_files``).

    Raises:
        ArtefactError: ``target`` is a file, another kind of artefact, or a folder of
            something else.
    """
    target = recover_folder(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtefactError(f"{target} exists and is not a folder; remove it or choose another")
    if not any(target.iterdir()):
        return
    if (target / MANIFEST_FILE).is_file():
        try:
            found = read_manifest(target).kind
        except ArtefactError:
            found = None
        if found == kind or (found is None and any((target / n).exists() for n in legacy_files)):
            return
        if found is not None:
            raise ArtefactError(
                f"{target} holds {found}, not {kind}: writing there would replace it; "
                "choose another output folder"
            )
    elif any((target / name).exists() for name in legacy_files):
        return
    raise ArtefactError(
        f"{target} is not empty and is not a lookalike {kind} folder: writing there would "
        "replace what it holds; choose a new folder"
    )


def link_verified_files(
    source: str | os.PathLike[str], target: str | os.PathLike[str], under: str = ""
) -> list[str]:
    """Hard-link (or copy) into ``target`` the files of ``source`` that match its manifest.

    Lets a job building a new version of ``source`` start from its finished work (the shards of
    an embedding folder, the embeddings of a run). Files are never modified in place (every
    write is a rename), so a link shares nothing that can change. A file that differs from the
    manifest is left out, and so is everything when ``source`` has no readable manifest.

    Args:
        source: A finished folder.
        target: The folder being built.
        under: Only files below this relative folder ("" for all).

    Returns:
        The relative names linked.
    """
    source, target = Path(source), Path(target)
    try:
        manifest = read_manifest(source)
    except (ArtefactError, FileNotFoundError):
        return []
    prefix = f"{under.rstrip('/')}/" if under else ""
    linked = []
    for name, entry in sorted(manifest.files.items()):
        path, copy = source / name, target / name
        if not name.startswith(prefix) or copy.exists() or not path.is_file():
            continue
        if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
            logger.warning("%s differs from its manifest; not reused", path)
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, copy)
        except OSError:
            shutil.copy2(path, copy)
        linked.append(name)
    return linked


def partial_path(target: str | os.PathLike[str]) -> Path:
    """The hidden sibling a new version of ``target`` is built in (``.NAME.partial``)."""
    target = Path(target)
    return target.parent / f".{target.name}{PARTIAL_SUFFIX}"


def _old_path(target: Path) -> Path:
    return target.parent / f".{target.name}{OLD_SUFFIX}"


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    name = ctypes.util.find_library("c")
    if os.name != "posix" or name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                       _RENAME_EXCHANGE)
    return result == 0


def fsync_directory(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where unsupported)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def swap_in(built: Path, target: Path) -> None:
    """Put the finished folder ``built`` at ``target`` in one step, replacing what was there."""
    if target.exists() and not target.is_dir():
        raise ArtefactError(f"{target} exists and is not a folder; remove it or choose another")
    if not target.exists():
        os.rename(built, target)
    elif _exchange(built, target):
        shutil.rmtree(built)  # now the old version
    else:
        old = _old_path(target)
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
        os.rename(built, target)  # a kill between the renames is undone by recover_folder
        shutil.rmtree(old)
    fsync_directory(target.parent)


def recover_folder(target: str | os.PathLike[str]) -> Path:
    """Finish (or undo) a swap that a kill cut between its two renames; return ``target``.

    Only the fallback swap has such a window: the target renamed aside to ``.NAME.old`` and the
    new version not yet renamed in. A finished new version (its manifest present) is put in
    place; otherwise the old one is put back.
    """
    target = Path(target)
    old = _old_path(target)
    if target.exists() or not old.exists():
        return target
    built = partial_path(target)
    if (built / MANIFEST_FILE).is_file():
        os.rename(built, target)
        shutil.rmtree(old)
    else:
        os.rename(old, target)
    logger.warning("finished an interrupted replacement of %s", target)
    return target


@contextmanager
def atomic_folder(
    target: str | os.PathLike[str], resume: bool = False
) -> Iterator[Path]:
    """Build a folder beside ``target`` and swap it in whole when the block succeeds.

    Args:
        target: The folder to write (or replace).
        resume: Keep what an interrupted earlier build left in the partial folder (a resumable
            job continues there); otherwise it starts empty.

    Yields:
        The partial folder to write into. The caller writes its manifest last (e.g. with
        :func:`write_manifest`) before the block ends.

    On an exception the partial folder is kept when ``resume`` is set and it holds a file (the
    next run continues in it), and removed otherwise; ``target`` is untouched either way.
    """
    target = Path(target)
    recover_folder(target)
    built = partial_path(target)
    # A partial folder with a manifest is finished work that was never swapped in, or the old
    # version an exchange left behind: either way not something to continue.
    if built.exists() and (not resume or (built / MANIFEST_FILE).is_file()):
        shutil.rmtree(built)
    built.mkdir(parents=True, exist_ok=True)
    for leftover in built.rglob(".*.tmp"):  # what atomic writes cut by a kill left behind
        leftover.unlink()
    try:
        yield built
    except BaseException:
        if not resume or not any(path.is_file() for path in built.rglob("*")):
            shutil.rmtree(built, ignore_errors=True)  # nothing worth resuming
        raise
    if not (built / MANIFEST_FILE).is_file():
        raise ArtefactError(f"{built} has no {MANIFEST_FILE}: write the manifest last")
    swap_in(built, target)
