"""Batched, resumable extraction of an image set's embeddings into an :class:`EmbeddingSet`.

:func:`embed_image_set` runs an embedder over every image of an :class:`ImageSet` in dataset
order, with DataLoader workers, mixed precision on CUDA, channels-last memory format and optional
test-time augmentation (horizontal flip, multi-scale inputs as in Radenovic et al., "Fine-tuning
CNN Image Retrieval with No Human Annotation", TPAMI 2018). Broken images are skipped and reported.

Given an output folder, the set is processed in shards written atomically as they finish::

    output_dir/shards/shard_00000.npz   embeddings, rows, skipped rows of images [0, shard_size)
    output_dir/skipped.csv              id, path, reason of every image that could not be read
    output_dir/embeddings.npy ...       the assembled EmbeddingSet (see lookalike.embed.store)

so an interrupted run, started again with the same arguments, recomputes only unfinished shards.
The shards are kept after assembly so that such a re-run never recomputes finished work.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.records import ImageSet
from lookalike.embed.store import EmbeddingSet
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.utils.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
SKIPPED_FILE = "skipped.csv"
# Rows whose norm is this close to 1 count as L2-normalised (loose enough for bf16 outputs).
_UNIT_NORM_TOLERANCE = 1e-2


class EmbedderLike(Protocol):
    """What extraction needs of an embedder (``lookalike.models`` provides one).

    Attributes:
        embedding_dim: ``D``, the width of the output.
        preprocessing: The evaluation preprocessing the embedder was trained with.
        config: JSON-serialisable description of how the embedder was built.
        training: ``nn.Module``'s train/eval flag.
    """

    embedding_dim: int
    preprocessing: Preprocessing
    config: dict[str, Any]
    training: bool

    def fingerprint(self) -> str:
        """A string that changes whenever the embedder's outputs could change."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images -> ``(B, D)`` embeddings."""
        ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class AugmentedViews:
    """Test-time augmentation: the views whose embeddings are averaged, every scale and each of
    them also flipped left-right when ``flip``.

    Attributes:
        scales: Input rescaling factors; 1.0 (the plain input) always comes first.
        flip: Also embed each scaled view flipped left-right.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @classmethod
    def parse(cls, names: Sequence[str]) -> AugmentedViews:
        """Build from names: ``"flip"`` and ``"scale:<factor>"`` (e.g. ``"scale:0.8"``)."""
        scales = [1.0]
        flip = False
        for name in names:
            if name == "flip":
                flip = True
                continue
            kind, _, value = name.partition(":")
            try:
                scale = float(value) if kind == "scale" else None
            except ValueError:
                scale = None
            if scale is None or not np.isfinite(scale) or scale <= 0:
                raise ValueError(
                    f"unknown test-time augmentation {name!r}; valid: 'flip', 'scale:<factor>' "
                    "with a positive factor (e.g. 'scale:0.8')"
                )
            if scale not in scales:
                scales.append(scale)
        return cls(tuple(scales), flip)

    def views(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield each view of ``images`` ``(B, 3, S, S)``; scaled views are ``(B, 3, sS, sS)``."""
        height, width = images.shape[-2:]
        for scale in self.scales:
            if scale == 1.0:
                scaled = images
            else:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = F.interpolate(
                    images, size=size, mode="bilinear", align_corners=False, antialias=True
                )
            yield scaled
            if self.flip:
                yield torch.flip(scaled, dims=(-1,))


@dataclass
class _Shard:
    """The result for one shard: ``embeddings`` ``(n, D)`` of dataset ``rows`` ``(n,)``, and the
    ``(row, reason)`` of each image in the shard that could not be read."""

    embeddings: np.ndarray
    rows: np.ndarray
    skipped: list[tuple[int, str]]


def embed_image_set(
    embedder: EmbedderLike,
    image_set: ImageSet,
    *,
    output_dir: Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "auto",
    amp: bool | None = None,
    tta: Sequence[str] = (),
    shard_size: int = 10_000,
    progress: Callable[[int], None] | bool = True,
    channels_last: bool = True,
) -> EmbeddingSet:
    """Embed every readable image of ``image_set``, in order.

    The embedder is put in eval mode (its train/eval flag is restored afterwards) and moved to
    ``device``; images go through ``eval_transform(embedder.preprocessing)``.

    Args:
        embedder: ``(B, 3, S, S) -> (B, D)`` module, see :class:`EmbedderLike`.
        image_set: The images; row order of the result follows it.
        output_dir: Where shards, ``skipped.csv`` and the final set are written; ``None`` keeps
            everything in memory and makes the run non-resumable.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images.
        device: ``"auto"`` (CUDA when available, else CPU), or any torch device.
        amp: Autocast the forward pass; ``None`` means on for CUDA only. The dtype is bfloat16
            where supported, else float16. Outputs are stored as float32.
        tta: Test-time augmentations whose embeddings are averaged with the plain one:
            ``"flip"`` and ``"scale:<factor>"``. When the embedder normalises (a boolean
            ``normalize`` attribute, else unit-norm outputs) the average is L2-normalised again.
        shard_size: Images per resumable shard.
        progress: Called with the number of images done after each batch (images of shards
            resumed from disk count once, at the start); ``False`` reports nothing. ``True``
            draws a Rich bar here, for callers that do not yet pass a callback.
        channels_last: Run model and inputs in channels-last memory format.

    Returns:
        The :class:`EmbeddingSet` of the readable images, ``(N - skipped, D)`` float32. Its
        ``info`` holds ``fingerprint``, ``config``, ``preprocessing``, ``tta``, ``amp``, ``counts``
        and ``skipped`` (``[{"id", "path", "reason"}]``).

    Raises:
        ValueError: A non-positive ``batch_size`` or ``shard_size``, a negative ``num_workers``,
            an unknown ``tta`` name, or an embedder output that is not ``(B, embedding_dim)``.
    """
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise ValueError(
            f"need batch_size >= 1, shard_size >= 1, num_workers >= 0; got {batch_size}, "
            f"{shard_size}, {num_workers}"
        )
    augmentation = AugmentedViews.parse(tta)
    torch_device = _resolve_device(device)
    amp_dtype = _amp_dtype(torch_device, amp)
    fingerprint = embedder.fingerprint()
    ids = image_set.ids
    dim = embedder.embedding_dim
    bounds = [(i, min(i + shard_size, len(ids))) for i in range(0, len(ids), shard_size)]
    files = None
    if output_dir is not None:
        files = _ShardFiles(Path(output_dir) / SHARDS_DIR, fingerprint, list(tta))
    shards = {} if files is None else files.load_finished(bounds, ids)
    pending = [number for number in range(len(bounds)) if number not in shards]

    done = sum(stop - start for number, (start, stop) in enumerate(bounds) if number in shards)
    with _reporting(progress, f"embedding {image_set.name}", len(ids)) as advance:
        if done:
            advance(done)
        if pending:
            with _evaluating(embedder, torch_device, channels_last), torch.inference_mode():
                loader = DataLoader(
                    ImageDataset(image_set, eval_transform(embedder.preprocessing)),
                    batch_sampler=_batches(bounds, pending, batch_size),
                    num_workers=num_workers,
                    collate_fn=collate_skipping_broken,
                    pin_memory=torch_device.type == "cuda",
                )
                batches = iter(loader)
                for number in pending:
                    start, stop = bounds[number]
                    parts, rows, skipped = [], [], []
                    for _ in range(start, stop, batch_size):
                        images, indices, broken = next(batches)
                        skipped.extend(broken)
                        if images is not None:
                            images = images.to(torch_device, non_blocking=True)
                            if channels_last:
                                images = images.contiguous(memory_format=torch.channels_last)
                            parts.append(_embed_batch(embedder, images, augmentation, amp_dtype))
                            rows.append(indices.numpy())
                        advance(len(indices) + len(broken))
                    shards[number] = _Shard(
                        np.concatenate(parts or [np.zeros((0, dim), np.float32)]),
                        np.concatenate(rows or [np.zeros(0, np.int64)]),
                        skipped,
                    )
                    if files is not None:
                        files.save(number, shards[number], ids[start:stop])

    info = {
        "fingerprint": fingerprint,
        "config": embedder.config,
        "preprocessing": embedder.preprocessing.to_dict(),
        "tta": list(tta),
        "amp": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "image_set": image_set.name,
    }
    result = _assemble(image_set, [shards[n] for n in range(len(bounds))], dim, info)
    if output_dir is not None:
        _write_skipped_csv(Path(output_dir) / SKIPPED_FILE, result.info["skipped"])
        result.save(output_dir)
    return result


def _assemble(
    image_set: ImageSet, shards: list[_Shard], dim: int, info: dict[str, Any]
) -> EmbeddingSet:
    """Concatenate the shards in order into the set's rows; ``info`` gains counts and skipped."""
    rows = np.concatenate([s.rows for s in shards] or [np.zeros(0, np.int64)])
    embeddings = np.concatenate([s.embeddings for s in shards] or [np.zeros((0, dim), np.float32)])
    records = [image_set[int(row)] for row in rows]
    skipped = [
        {"id": image_set[row].id, "path": str(image_set[row].path), "reason": reason}
        for s in shards
        for row, reason in s.skipped
    ]
    counts = {"images": len(image_set), "embedded": len(records), "skipped": len(skipped)}
    if skipped:
        logger.warning("skipped %d of %d unreadable images", len(skipped), len(image_set))
    logger.info("embedded %d of %d images of %s", len(records), len(image_set), image_set.name)
    return EmbeddingSet(
        embeddings,
        [record.id for record in records],
        [str(record.path) for record in records],
        [record.label for record in records],
        {**info, "counts": counts, "skipped": skipped},
    )


@contextlib.contextmanager
def _reporting(
    progress: Callable[[int], None] | bool, description: str, total: int
) -> Iterator[Callable[[int], None]]:
    """The increment callback for ``progress``: the caller's own, a Rich bar's, or a no-op."""
    if callable(progress):
        yield progress
    elif progress:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeRemainingColumn()) as bar:
            task = bar.add_task(description, total=total)
            yield lambda advance: bar.advance(task, advance)
    else:
        yield lambda advance: None


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for full precision."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@contextlib.contextmanager
def _evaluating(
    embedder: EmbedderLike, device: torch.device, channels_last: bool
) -> Iterator[None]:
    """Eval mode on ``device`` (channels-last if asked) for the block; train flag restored after."""
    was_training = embedder.training
    embedder.eval()
    if channels_last:
        embedder.to(device=device, memory_format=torch.channels_last)
    else:
        embedder.to(device=device)
    try:
        yield
    finally:
        embedder.train(was_training)


def _batches(bounds: list[tuple[int, int]], pending: list[int], batch_size: int) -> list[list[int]]:
    """Batches of dataset indices over the pending shards; no batch crosses a shard boundary."""
    return [
        list(range(i, min(i + batch_size, bounds[number][1])))
        for number in pending
        for i in range(bounds[number][0], bounds[number][1], batch_size)
    ]


def _embed_batch(
    embedder: EmbedderLike,
    images: torch.Tensor,
    augmentation: AugmentedViews,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """``(B, 3, S, S)`` -> ``(B, D)`` float32: the mean embedding over the augmentation's views,
    L2-normalised again when the embedder normalises (its boolean ``normalize`` attribute, or,
    without one, every view's rows being unit-norm)."""
    outputs = []
    for view in augmentation.views(images):
        autocast = (
            torch.autocast(images.device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            output = embedder(view)
        if output.shape != (images.shape[0], embedder.embedding_dim):
            raise ValueError(
                f"embedder returned shape {tuple(output.shape)} for {images.shape[0]} images; "
                f"expected ({images.shape[0]}, {embedder.embedding_dim}) (embedding_dim)"
            )
        outputs.append(output.float())
    views = torch.stack(outputs)
    mean = views.mean(dim=0)
    normalizes = getattr(embedder, "normalize", None)
    if not isinstance(normalizes, bool):
        unit_norm = (torch.linalg.vector_norm(views, dim=2) - 1).abs() <= _UNIT_NORM_TOLERANCE
        normalizes = bool(unit_norm.all())
    if len(outputs) > 1 and normalizes:
        mean = F.normalize(mean, dim=1)
    return mean.cpu().numpy()


@dataclass(frozen=True)
class _ShardFiles:
    """``shard_dir/shard_00000.npz`` ...: one atomic file per finished shard, tagged with the
    embedder fingerprint, the TTA and the ids of its images so a stale shard is never reused."""

    shard_dir: Path
    fingerprint: str
    tta: list[str]

    def path(self, number: int) -> Path:
        return self.shard_dir / f"shard_{number:05d}.npz"

    def save(self, number: int, shard: _Shard, ids: list[str]) -> None:
        with atomic_path(self.path(number)) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                embeddings=shard.embeddings.astype(np.float32),
                rows=shard.rows.astype(np.int64),
                skipped_rows=np.array([row for row, _ in shard.skipped], dtype=np.int64),
                skipped_reasons=np.array([reason for _, reason in shard.skipped], dtype=str),
                ids=np.array(ids, dtype=str),
                fingerprint=np.array(self.fingerprint),
                tta=np.array(json.dumps(self.tta)),
            )

    def load_finished(self, bounds: list[tuple[int, int]], ids: list[str]) -> dict[int, _Shard]:
        """The reusable shards among ``bounds`` (``[start, stop)`` of each), by shard number."""
        shards = {}
        for number, (start, stop) in enumerate(bounds):
            shard = self.load(number, ids[start:stop])
            if shard is not None:
                shards[number] = shard
        if shards:
            logger.info("resuming: %d of %d shards done", len(shards), len(bounds))
        return shards

    def load(self, number: int, ids: list[str]) -> _Shard | None:
        """Shard ``number`` when its file is complete and was made for ``ids`` by this embedder
        with this TTA; otherwise ``None``, with a warning saying why when a file was there."""
        path = self.path(number)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                recorded = {name: data[name] for name in data.files}
            skipped = zip(recorded["skipped_rows"].tolist(), recorded["skipped_reasons"].tolist())
            shard = _Shard(recorded["embeddings"], recorded["rows"], list(skipped))
            made_with = (str(recorded["fingerprint"]), json.loads(str(recorded["tta"])))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("shard %s is unreadable (%s); recomputing it", path, error)
            return None
        problem = None
        if made_with != (self.fingerprint, self.tta):
            problem = f"made by embedder {made_with[0]} with tta {made_with[1]}"
        elif recorded["ids"].tolist() != ids:
            problem = "its image ids differ from the image set's"
        elif not len(shard.rows) == len(shard.embeddings) == len(ids) - len(shard.skipped):
            problem = "its row counts are inconsistent"
        if problem is not None:
            logger.warning("shard %s does not match this run (%s); recomputing it", path, problem)
            return None
        return shard


def _write_skipped_csv(path: Path, skipped: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "path", "reason"])
    writer.writeheader()
    writer.writerows(skipped)
    atomic_write_text(path, buffer.getvalue())
