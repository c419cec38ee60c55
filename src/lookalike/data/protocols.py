"""Split protocols: which images are queries, which form the gallery, which train the model.

A protocol is a function registered in :data:`PROTOCOLS` turning one
:class:`~lookalike.data.records.ImageSet` into a :class:`RetrievalSplit`:

- ``"given"``: the source's own ``split`` column (competition data, hand-made manifests);
- ``"all_vs_all"``: every labelled image queries all the others, the protocol of Stanford Online
  Products, CUB-200-2011 and Cars196 (Oh Song et al., CVPR 2016; Musgrave et al., "A Metric
  Learning Reality Check", ECCV 2020);
- ``"per_class"``: a seeded query/gallery split inside every class (same classes on both sides);
- ``"class_disjoint"``: train on some classes, evaluate all-vs-all on the unseen rest;
- ``"train_only"``: every image trains, nothing is evaluated (self-supervised pre-training on
  unlabelled images).

Shared conventions: protocols never modify records (which set holds a record is its role);
records keep their order from the source inside every set; unlabelled records cannot be queries
(there is nothing to score them against) and serve as gallery distractors in the protocols that
read labels.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class RetrievalSplit:
    """The sets one retrieval experiment uses.

    Attributes:
        query: Images searched for.
        gallery: Images searched in.
        train: Images to train on, or ``None``.
        val: Images to validate on while training (all-vs-all), or ``None``.
        exclude_self: When True every query is also in the gallery (matched by id) and must not
            retrieve its own image; metrics and search drop that match.
    """

    query: ImageSet
    gallery: ImageSet
    train: ImageSet | None = None
    val: ImageSet | None = None
    exclude_self: bool = False

    def __post_init__(self) -> None:
        if self.exclude_self:
            gallery_ids = set(self.gallery.ids)
            missing = [i for i in self.query.ids if i not in gallery_ids]
            if missing:
                raise ValueError(
                    f"exclude_self is set but {len(missing)} query ids are not in the gallery "
                    f"(first: {missing[0]!r})"
                )


PROTOCOLS = Registry[RetrievalSplit]("split protocol")


def make_split(images: ImageSet, protocol: str = "given", **options: Any) -> RetrievalSplit:
    """Apply the protocol registered as ``protocol`` to ``images`` and log the set sizes."""
    split = PROTOCOLS.create(protocol, images, **options)
    logger.info(
        "%s split: %d queries, %d gallery, %d train, %d val%s",
        protocol,
        len(split.query),
        len(split.gallery),
        len(split.train) if split.train is not None else 0,
        len(split.val) if split.val is not None else 0,
        " (queries excluded from their own results)" if split.exclude_self else "",
    )
    return split


def _named(records: list[ImageRecord], name: str) -> ImageSet:
    return ImageSet(records, name)


def _optional(records: list[ImageRecord], name: str) -> ImageSet | None:
    return ImageSet(records, name) if records else None


def _held_out(images: ImageSet) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Records the source marks ``train``, marks ``val``, and all others (to be evaluated)."""
    train = [r for r in images.records if r.split == "train"]
    val = [r for r in images.records if r.split == "val"]
    evaluated = [r for r in images.records if r.split not in ("train", "val")]
    return train, val, evaluated


def _check_fraction(name: str, value: float, low_inclusive: bool) -> None:
    interval = "[0, 1)" if low_inclusive else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")  # noqa: TRY004
    low_ok = value >= 0.0 if low_inclusive else value > 0.0
    if not (low_ok and value < 1.0):  # NaN fails too
        raise ValueError(f"{name} must lie in {interval}, got {value}")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _count(fraction: float, total: int) -> int:
    """``fraction * total`` rounded half up (Python's ``round`` rounds half to even).

    The product is first rounded to 9 decimals, so a half the user wrote stays a half in binary
    floating point (``0.7 * 45`` is ``31.499999999999996``, which is 31.5 and gives 32).
    """
    return math.floor(round(fraction * total, 9) + 0.5)


def natural_key(label: str) -> list[int | str]:
    """Sort key placing ``"2"`` before ``"10"`` and ``"class_2"`` before ``"class_10"``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


@PROTOCOLS.register("given")
def given_split(images: ImageSet) -> RetrievalSplit:
    """Use the records' own ``split`` values; records without one are left out.

    Raises:
        ValueError: No record has split ``"query"`` or none has split ``"gallery"``, or one image
            file is both a query and a gallery record (it would find itself as its best match;
            ``all_vs_all`` searches a set against itself, leaving each query's own image out).
    """
    query = images.split("query")
    gallery = images.split("gallery")
    if not len(query) or not len(gallery):
        raise ValueError(
            f"the 'given' protocol needs records with split query and gallery, found "
            f"{len(query)} query and {len(gallery)} gallery; "
            "use all_vs_all, per_class or class_disjoint instead"
        )
    gallery_ids = {record.path: record.id for record in gallery.records}
    shared = [r for r in query.records if r.path in gallery_ids]
    if shared:
        raise ValueError(
            f"the 'given' protocol: {len(shared)} query images are also gallery images (first: "
            f"{shared[0].path}, query id {shared[0].id!r}, gallery id "
            f"{gallery_ids[shared[0].path]!r}); each would find itself as its best match: "
            "list each image once, or use all_vs_all to search a set against itself"
        )
    unassigned = sum(r.split is None for r in images.records)
    if unassigned:
        logger.warning("given split: %d records without a split are left out", unassigned)
    train, val = images.split("train"), images.split("val")
    return RetrievalSplit(
        query, gallery, _optional(train.records, "train"), _optional(val.records, "val")
    )


@PROTOCOLS.register("all_vs_all")
def all_vs_all_split(images: ImageSet) -> RetrievalSplit:
    """Every labelled image is a query against all the others (Oh Song et al., CVPR 2016).

    Records the source marks ``train`` or ``val`` stay out of the evaluation and become the train
    and val sets (so Stanford Online Products evaluates on its test part only). All other labelled
    records are both query and gallery, with ``exclude_self=True``; unlabelled ones join the
    gallery as distractors. Queries whose class has a single image have no positives.

    Raises:
        ValueError: No labelled record is left to evaluate.
    """
    train, val, evaluated = _held_out(images)
    query = [r for r in evaluated if r.label is not None]
    if not query:
        raise ValueError(
            "the 'all_vs_all' protocol needs labelled records outside train/val; "
            "use the 'given' protocol for unlabelled query/gallery data"
        )
    return RetrievalSplit(
        _named(query, "query"),
        _named(evaluated, "gallery"),
        _optional(train, "train"),
        _optional(val, "val"),
        exclude_self=True,
    )


@PROTOCOLS.register("per_class")
def per_class_split(
    images: ImageSet, query_fraction: float = 0.2, seed: int = 0, train_fraction: float = 0.0
) -> RetrievalSplit:
    """A seeded query/gallery split inside every class.

    A class of ``n >= 2`` images gives ``query_fraction * n`` of them (rounded half up), clipped to
    ``[1, n - 1]``, to the query set and the rest to the gallery, so every query has a positive in
    the gallery; a single-image class goes to the gallery. Each class draws from its own generator
    seeded by ``(seed, crc32(label))``, so adding or removing a class leaves the others' splits
    unchanged. Records the source marks ``train``/``val`` become the train/val sets; unlabelled
    records join the gallery as distractors.

    Args:
        images: The records to split.
        query_fraction: Share of each class used as queries, in ``(0, 1)``.
        seed: Non-negative seed.
        train_fraction: Share of each class (of ``n >= 3`` images) that trains instead, in
            ``[0, 1)``, ``train_fraction * n`` rounded half up and clipped to ``[0, n - 2]``, drawn
            before the query/gallery split of the rest: a classifier then knows every evaluated
            class (the seen-classes setting of classification-style answers). 0 keeps the
            source's own ``train`` records as the train set.

    Raises:
        ValueError: ``query_fraction`` or ``seed`` is out of range, or no class has two images.
    """
    _check_fraction("query_fraction", query_fraction, low_inclusive=False)
    _check_fraction("train_fraction", train_fraction, low_inclusive=True)
    _check_seed(seed)
    train, val, evaluated = _held_out(images)
    members: dict[str, list[int]] = {}
    for position, record in enumerate(evaluated):
        if record.label is not None:
            members.setdefault(record.label, []).append(position)
    is_query = np.zeros(len(evaluated), dtype=bool)
    is_train = np.zeros(len(evaluated), dtype=bool)
    for label, positions in members.items():
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        if train_fraction > 0 and len(positions) >= 3:
            n_train = min(_count(train_fraction, len(positions)), len(positions) - 2)
            trained = set(np.asarray(positions)[rng.permutation(len(positions))[:n_train]].tolist())
            is_train[list(trained)] = True
            positions = [p for p in positions if p not in trained]
        n = len(positions)
        if n < 2:
            continue
        n_query = min(max(_count(query_fraction, n), 1), n - 1)
        chosen = rng.permutation(n)[:n_query]
        is_query[np.asarray(positions)[chosen]] = True
    if not is_query.any():
        raise ValueError(
            "the 'per_class' protocol needs at least one class with two or more labelled images"
        )
    query = [r for r, q in zip(evaluated, is_query) if q]
    gallery = [r for r, q, t in zip(evaluated, is_query, is_train) if not q and not t]
    train += [r for r, t in zip(evaluated, is_train) if t]
    return RetrievalSplit(
        _named(query, "query"),
        _named(gallery, "gallery"),
        _optional(train, "train"),
        _optional(val, "val"),
    )


@PROTOCOLS.register("class_disjoint")
def class_disjoint_split(
    images: ImageSet,
    train_fraction: float = 0.5,
    val_fraction: float = 0.0,
    seed: int | None = None,
) -> RetrievalSplit:
    """Train on some classes, evaluate all-vs-all on the others (the CUB-200-2011/Cars196 protocol).

    Classes are put in natural sort order (``natural_key``: ``"2"`` before ``"10"``; ties such as
    ``"01"`` and ``"1"`` by their text), or shuffled by ``seed`` when one is given. The first
    ``train_fraction * C`` of the ``C`` classes (rounded half up) train (at least one, at most
    ``C - 1`` when ``train_fraction > 0``); the last ``val_fraction * C_train`` (rounded half up)
    of those are held out as val classes. The remaining classes are the test set: query =
    gallery = their images, ``exclude_self=True``. The source's split column is ignored;
    unlabelled records join the test gallery as distractors.

    Args:
        images: The records to split.
        train_fraction: Share of classes used for training, in ``[0, 1)``.
        val_fraction: Share of the training classes held out for validation, in ``[0, 1)``.
        seed: Shuffle classes with this seed; natural sort order when ``None``.

    Raises:
        ValueError: Fractions or ``seed`` out of range, or too few classes to give every part one.
    """
    _check_fraction("train_fraction", train_fraction, low_inclusive=True)
    _check_fraction("val_fraction", val_fraction, low_inclusive=True)
    # Ties in natural order ("01" and "1") are broken by the text, not by the source's order.
    classes = sorted(images.classes(), key=lambda label: (natural_key(label), label))
    if seed is not None:
        _check_seed(seed)
        classes = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n_classes = len(classes)
    n_train = 0
    if train_fraction > 0:
        if n_classes < 2:
            raise ValueError(
                "the 'class_disjoint' protocol needs at least 2 classes to train and test, "
                f"got {n_classes}"
            )
        n_train = min(max(_count(train_fraction, n_classes), 1), n_classes - 1)
    elif n_classes < 1:
        raise ValueError("the 'class_disjoint' protocol needs labelled records")
    n_val = 0
    if val_fraction > 0:
        if n_train < 2:
            raise ValueError(f"val_fraction > 0 needs at least 2 training classes, got {n_train}")
        n_val = min(max(_count(val_fraction, n_train), 1), n_train - 1)
    role = {label: "train" for label in classes[: n_train - n_val]}
    role.update({label: "val" for label in classes[n_train - n_val : n_train]})
    train = [r for r in images.records if r.label is not None and role.get(r.label) == "train"]
    val = [r for r in images.records if r.label is not None and role.get(r.label) == "val"]
    test = [r for r in images.records if r.label is None or r.label not in role]
    query = [r for r in test if r.label is not None]
    return RetrievalSplit(
        _named(query, "query"),
        _named(test, "gallery"),
        _optional(train, "train"),
        _optional(val, "val"),
        exclude_self=True,
    )


@PROTOCOLS.register("train_only")
def train_only_split(images: ImageSet) -> RetrievalSplit:
    """Every record trains, labelled or not; query, gallery and val are empty.

    For self-supervised training on a folder of unlabelled images (SimSiam, SimCLR), where there
    is nothing to evaluate against; evaluate the trained model on another source.

    Raises:
        ValueError: ``images`` is empty.
    """
    if not len(images):
        raise ValueError("the 'train_only' protocol needs at least one image")
    return RetrievalSplit(
        _named([], "query"), _named([], "gallery"), _named(list(images.records), "train")
    )

