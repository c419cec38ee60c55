"""The unit every source produces: one image with its id, label and split.

Sources (folders, manifests, SOP, unlabelled query/gallery folders) all turn into a list of
:class:`ImageRecord`; protocols split such lists into query/gallery/train sets; embedding files
carry the same ids, paths and labels row by row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "query", "gallery")


@dataclass(frozen=True)
class ImageRecord:
    """One image known to a source.

    Attributes:
        id: Stable identifier, unique within its source (by default the path relative to the
            source's root, POSIX-style).
        path: Absolute path of the image file.
        label: Class label, or ``None`` where the source is unlabelled (competition mode).
        split: One of :data:`SPLITS`, or ``None`` where the source gives none.
        caption: Optional text describing the image (image-text training).
        unreadable: Why the source could not use this entry (a folder it cannot read, a link
            leading outside its root); loading the record fails with this reason, so the entry
            is reported with the skipped images instead of vanishing. None for an image to read.
    """

    id: str
    path: Path
    label: str | None = None
    split: str | None = None
    caption: str | None = None
    unreadable: str | None = None


@dataclass
class ImageSet:
    """An ordered list of records, the input of ``embed`` and the rows of an embedding file.

    Attributes:
        records: The images, in the order their embeddings will be stored.
        name: Short name used for output files ("query", "gallery", "all").
    """

    records: list[ImageRecord] = field(default_factory=list)
    name: str = "all"

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    @property
    def ids(self) -> list[str]:
        return [record.id for record in self.records]

    @property
    def paths(self) -> list[Path]:
        return [record.path for record in self.records]

    @property
    def labels(self) -> list[str | None]:
        return [record.label for record in self.records]

    @property
    def is_labelled(self) -> bool:
        """True when every record carries a label."""
        return bool(self.records) and all(record.label is not None for record in self.records)

    def select(self, indices: Iterable[int], name: str | None = None) -> ImageSet:
        """The records at ``indices``, in that order."""
        return ImageSet([self.records[i] for i in indices], name or self.name)

    def split(self, split: str) -> ImageSet:
        """The records whose ``split`` equals ``split``."""
        return ImageSet([r for r in self.records if r.split == split], split)

    def classes(self) -> list[str]:
        """The distinct labels in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.records:
            if record.label is not None:
                seen.setdefault(record.label, None)
        return list(seen)


def label_codes(labels: Sequence[str | None], vocabulary: dict[str, int] | None = None) -> list[int]:
    """Integer codes for ``labels``: -1 for ``None``, else the label's index in ``vocabulary``
    (built in first-seen order when not given; unknown labels are appended to it)."""
    vocabulary = {} if vocabulary is None else vocabulary
    codes = []
    for label in labels:
        if label is None:
            codes.append(-1)
        else:
            codes.append(vocabulary.setdefault(label, len(vocabulary)))
    return codes
