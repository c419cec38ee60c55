"""Batched, resumable extraction of an image set's embeddings into an :class:`EmbeddingSet`.

:func:`embed_image_set` runs an embedder over every image of an :class:`ImageSet` in dataset
order, with DataLoader workers, mixed precision on CUDA, channels-last memory format and optional
test-time augmentation (:mod:`lookalike.embed.tta`). Broken images are skipped and reported.

The host's cores are shared by a core budget (:func:`lookalike.utils.cores.plan_cores`): on the
CPU, decoding workers plus the model's intra-op threads never exceed the usable cores; on CUDA the
workers get them, batches are pinned and copied without blocking. Large JPEGs are decoded at a
reduced scale that still covers the transform's resize (Pillow's draft mode, see
:func:`lookalike.data.loading.load_image`).

Given an output folder, the set is processed in shards saved as they finish
(:mod:`lookalike.embed.shards`), and the assembled set is saved beside them, in a folder built
beside the target (``.NAME.partial``) and swapped in whole once its manifest is written::

    output_dir/shards/shard_00000.npz   embeddings, rows, skipped rows of images [start, stop)
    output_dir/skipped.csv              id, path, reason of every image that could not be read
    output_dir/embeddings.npy ...       the assembled EmbeddingSet (see lookalike.embed.store)
    output_dir/manifest.json            written last

A killed run leaves the old folder (or none) and its partial one; started again with the same
arguments it continues in the partial folder and recomputes only what no finished shard holds
(a shard closes after ``shard_size`` images or ``shard_seconds`` of work). The shards are kept in
the finished folder, so a re-run into it reuses those that still match its manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.data.records import ImageSet
from lookalike.embed.forward import EmbedderLike, Extraction, amp_dtype_for, evaluating
from lookalike.embed.shards import (
    SHARDS_DIR,
    SKIPPED_FILE,
    Shard,
    ShardFiles,
    absolute_paths,
    assemble_shards,
    check_shard_settings,
    write_skipped_csv,
)
from lookalike.embed.store import EMBEDDINGS_FILE, EMBEDDINGS_KIND, INFO_FILE, EmbeddingSet
from lookalike.embed.tta import AugmentedViews
from lookalike.utils.cores import intra_op_threads, plan_cores
from lookalike.utils.devices import resolve_device
from lookalike.utils.folders import atomic_folder, check_replaceable, link_verified_files

logger = logging.getLogger(__name__)


def embed_image_set(
    embedder: EmbedderLike,
    image_set: ImageSet,
    *,
    output_dir: Path | None = None,
    batch_size: int = 64,
    num_workers: int | str = "auto",
    device: str | torch.device = "auto",
    amp: bool | None = None,
    tta: Sequence[str] = (),
    shard_size: int = 10_000,
    progress: Callable[[int], None] | None = None,
    channels_last: bool = True,
    shard_seconds: float = 60.0,
    draft_decode: bool = True,
    decode_on_device: bool = False,
) -> EmbeddingSet:
    """Embed every readable image of ``image_set``, in order.

    The embedder is put in eval mode (its train/eval flag is restored afterwards) and moved to
    ``device``; images go through ``eval_transform(embedder.preprocessing)``.

    Args:
        embedder: ``(B, 3, S, S) -> (B, D)`` module, see :class:`EmbedderLike`.
        image_set: The images; row order of the result follows it.
        output_dir: The embedding folder written (shards, ``skipped.csv``, the set and its
            manifest; see the module docstring); ``None`` keeps everything in memory and makes
            the run non-resumable.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images, or ``"auto"``: the core
            budget of :func:`~lookalike.utils.cores.plan_cores`, which also sets the intra-op
            threads for the run (an explicit count on the CPU shrinks the threads to fit).
        device: ``"auto"`` (CUDA when available, else CPU), or any torch device.
        amp: Autocast the forward pass; ``None`` means on for CUDA only. The dtype is bfloat16
            where supported, else float16. Outputs are stored as float32.
        tta: Test-time augmentations whose embeddings are averaged with the plain one:
            ``"flip"`` and ``"scale:<factor>"``. When the embedder normalises (a boolean
            ``normalize`` attribute, else unit-norm outputs) the average is L2-normalised again.
        shard_size: Images per resumable shard (rounded up to whole batches).
        progress: Called with the number of images done after each batch (images of shards
            resumed from disk count once, at the start); None reports nothing.
        channels_last: Run model and inputs in channels-last memory format.
        shard_seconds: A shard also closes once it has taken this long, so that a killed run
            loses about this much work at most.
        draft_decode: Decode JPEGs at least twice the transform's resize size at a reduced
            scale (1/2, 1/4, 1/8) that still covers it; False decodes every image in full.
        decode_on_device: The workers only read JPEG files; each batch is decoded on ``device``
            (:func:`torchvision.io.decode_jpeg`, nvJPEG on CUDA) and transformed there, see
            :mod:`lookalike.embed.device_decode`. Meant for CUDA when decoding, not the model,
            is the wall; on the CPU it works but is not faster. Other images, and JPEGs the
            device refuses, take the usual path.

    Returns:
        The :class:`EmbeddingSet` of the readable images, ``(N - skipped, D)`` float32. Its
        ``info`` holds ``fingerprint``, ``config``, ``preprocessing``, ``tta``, ``amp``, ``counts``
        and ``skipped`` (``[{"id", "path", "reason"}]``).

    Raises:
        ValueError: A non-positive ``batch_size``, ``shard_size`` or ``shard_seconds``, a
            ``num_workers`` neither "auto" nor ``>= 0``, an unknown ``tta`` name, an embedder
            output that is not ``(B, embedding_dim)``, or an ``output_dir`` holding something
            else.
    """
    check_shard_settings(batch_size, shard_size, shard_seconds)
    augmentation = AugmentedViews.parse(tta)
    torch_device = resolve_device(device)
    amp_dtype = amp_dtype_for(torch_device, amp)
    cores = plan_cores(num_workers, torch_device)
    logger.info(
        "embedding on %s: %d decoding workers, %d intra-op threads, %d cores",
        torch_device,
        cores.workers,
        cores.threads,
        cores.cores,
    )
    run = Extraction(
        batch_size,
        cores,
        torch_device,
        amp_dtype,
        channels_last,
        augmentation,
        shard_size,
        shard_seconds,
        draft_decode,
        decode_on_device,
    )
    info = extraction_info(embedder, image_set, tta, amp_dtype)
    advance = progress or _ignore
    return embed_in_shards(
        output_dir,
        image_set,
        embedder.embedding_dim,
        info,
        lambda finished, files: _embed_from(embedder, image_set, finished, files, run, advance),
    )


def extraction_info(
    embedder: EmbedderLike, image_set: ImageSet, tta: Sequence[str], amp_dtype: torch.dtype | None
) -> dict[str, Any]:
    """The provenance an embedding folder records (whatever engine computed it)."""
    return {
        "fingerprint": embedder.fingerprint(),
        "config": embedder.config,
        "preprocessing": embedder.preprocessing.to_dict(),
        "tta": list(tta),
        "amp": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "image_set": image_set.name,
    }


ShardWork = Callable[[list[Shard], ShardFiles | None], list[Shard]]


def embed_in_shards(
    output_dir: str | Path | None,
    image_set: ImageSet,
    dim: int,
    info: dict[str, Any],
    embed_shards: ShardWork,
) -> EmbeddingSet:
    """Run ``embed_shards`` (finished shards, shard files → every shard) into ``output_dir``.

    The one folder protocol of every engine: the folder is built beside the target and swapped
    in whole (resuming a partial one), finished shards of an earlier run count as done, and the
    assembled set, ``skipped.csv`` and the manifest are written last. ``output_dir=None`` keeps
    everything in memory.
    """
    if output_dir is None:
        return assemble_shards(image_set, embed_shards([], None), dim, info)
    target = Path(output_dir)
    check_replaceable(target, EMBEDDINGS_KIND, (INFO_FILE, EMBEDDINGS_FILE))
    with atomic_folder(target, resume=True) as build:
        if not (build / SHARDS_DIR).exists():
            # A finished folder's shards (those matching its manifest) are finished work.
            link_verified_files(target, build, under=SHARDS_DIR)
        files = ShardFiles(
            build / SHARDS_DIR,
            info["fingerprint"],
            list(info["tta"]),
            info["amp"],
            absolute_paths(image_set),
        )
        finished = files.load_finished(image_set.ids)
        result = assemble_shards(image_set, embed_shards(finished, files), dim, info)
        write_skipped_csv(build / SKIPPED_FILE, result.info["skipped"])
        result.write_files(build)
        result.write_manifest(build)
    return result


def _embed_from(
    embedder: EmbedderLike,
    image_set: ImageSet,
    finished: list[Shard],
    files: ShardFiles | None,
    run: Extraction,
    advance: Callable[[int], None],
) -> list[Shard]:
    """``finished`` followed by shards of the remaining images, each saved to ``files`` (when
    given) as it closes: after ``run.shard_size`` images or ``run.shard_seconds`` of work.

    ``advance`` is called with the images of the finished shards first, then after each batch.
    """
    shards = list(finished)
    start = shards[-1].stop if shards else 0
    if start:
        advance(start)
    if start >= len(image_set):
        return shards
    ids = image_set.ids
    with (
        evaluating(embedder, run.device, run.channels_last),
        torch.inference_mode(),
        intra_op_threads(run.cores.threads),
    ):
        parts: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        skipped: list[tuple[int, str]] = []
        shard_start, stop, opened = start, start, time.monotonic()
        for images, indices, broken in run.loader(embedder, image_set, start):
            skipped.extend(broken)
            if images is not None:
                parts.append(run.embed(embedder, images))
                rows.append(indices.numpy())
            stop = min(stop + run.batch_size, len(image_set))  # batches are [i, i + batch_size)
            advance(len(indices) + len(broken))
            full = stop - shard_start >= run.shard_size
            if full or stop == len(image_set) or time.monotonic() - opened >= run.shard_seconds:
                shard = Shard(
                    shard_start,
                    stop,
                    np.concatenate(parts or [np.zeros((0, embedder.embedding_dim), np.float32)]),
                    np.concatenate(rows or [np.zeros(0, np.int64)]),
                    skipped,
                )
                if files is not None:
                    files.save(len(shards), shard, ids[shard_start:stop])
                shards.append(shard)
                parts, rows, skipped = [], [], []
                shard_start, opened = stop, time.monotonic()
    return shards


def _ignore(amount: int) -> None:
    del amount
