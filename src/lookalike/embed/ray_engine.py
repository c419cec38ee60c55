"""Distributed extraction on Ray Data: the local path's shards, computed by a pool of actors.

:func:`embed_image_set_ray` writes exactly what :func:`lookalike.embed.extract.embed_image_set`
writes (the same shard files and boundaries, ``skipped.csv``, the assembled
:class:`EmbeddingSet` and its manifest, in the same atomic partial folder), so ``index``,
``evaluate`` and a resume by either engine read its output. Only the computing moves:

* the images still to embed (those after the last finished shard) become a Ray dataset of
  image rows, one block per batch, cut exactly as the local path cuts them;
* ``map_batches`` runs them through a fixed pool of actors (Ray Data's
  ``ActorPoolStrategy``); each actor receives the embedder once (through the object store, so
  workers need neither the model hub nor the checkpoint's folder), decodes and embeds its
  batches with the local path's dataset, transform, mixed precision and test-time
  augmentation, and answers per image: embedded or not, the embedding, the reason it could not
  be read;
* the driver receives the rows in dataset order (``preserve_order``), closes a shard after
  ``shard_size`` images (rounded up to whole batches) or ``shard_seconds``, and saves it
  atomically, so a killed job resumes from its finished shards.

Each actor gets a GPU where the cluster has them, else a share of the CPUs
(:func:`lookalike.embed.ray_cluster.plan_actors`). ``address`` joins a running cluster (every
node needs lookalike installed and the image paths readable); without one, ``RAY_ADDRESS`` is
used when set, else Ray is started on this machine for the run and shut down after it. A Ray
session the caller already opened in this process is used as it is.

Ray is imported only when the engine runs; it comes with ``pip install 'lookalike[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.data.records import ImageSet
from lookalike.embed.extract import embed_in_shards, extraction_info
from lookalike.embed.forward import EmbedderLike, Extraction, amp_dtype_for, evaluating
from lookalike.embed.ray_cluster import (
    ActorPlan,
    check_ray_settings,
    import_ray,
    plan_actors,
    ray_session,
)
from lookalike.embed.shards import (
    Shard,
    ShardFiles,
    batches_from,
    check_shard_settings,
)
from lookalike.embed.store import EMBEDDINGS_FILE, EMBEDDINGS_KIND, INFO_FILE, EmbeddingSet
from lookalike.embed.tta import AugmentedViews
from lookalike.utils.cores import CorePlan, intra_op_threads
from lookalike.utils.folders import check_replaceable

logger = logging.getLogger(__name__)


def embed_image_set_ray(
    embedder: EmbedderLike,
    image_set: ImageSet,
    *,
    output_dir: Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    amp: bool | None = None,
    tta: Sequence[str] = (),
    shard_size: int = 10_000,
    progress: Callable[[int], None] | None = None,
    channels_last: bool = True,
    shard_seconds: float = 60.0,
    draft_decode: bool = True,
    address: str | None = None,
    actors: int = 2,
) -> EmbeddingSet:
    """Embed every readable image of ``image_set``, in order, on a pool of Ray actors.

    Takes the arguments of :func:`~lookalike.embed.extract.embed_image_set` (but decoding
    workers: each actor decodes its own batches) and returns, and writes, the same result.

    Args:
        embedder: ``(B, 3, S, S) -> (B, D)`` module, sent to every actor once.
        image_set: The images; row order of the result follows it.
        output_dir: The embedding folder (see :mod:`lookalike.embed.extract`); ``None`` keeps
            the result in memory only.
        batch_size: Images per forward pass (and per block of the Ray dataset).
        device: "auto" (a GPU per actor where the cluster has GPUs), "cpu" or "cuda".
        amp: Autocast on the actors; ``None`` means on for CUDA only.
        tta: Test-time augmentations, as for the local path.
        shard_size: Images per resumable shard (rounded up to whole batches).
        progress: Called with the number of images done as rows come back.
        channels_last: Run model and inputs in channels-last memory format.
        shard_seconds: A shard also closes once it has taken this long.
        draft_decode: Decode large JPEGs at a reduced scale, as the local path does.
        address: The Ray cluster to join ("HOST:PORT", "ray://HOST:PORT", "auto"); ``None``:
            ``RAY_ADDRESS`` when set, else a Ray started here for the run.
        actors: Model actors in the pool.

    Returns:
        The :class:`EmbeddingSet` of the readable images, as the local path returns it.

    Raises:
        ValueError: A setting that cannot run, Ray missing, a cluster that cannot be reached,
            or an ``output_dir`` holding something else.
    """
    check_shard_settings(batch_size, shard_size, shard_seconds)
    check_ray_settings(device, actors)
    AugmentedViews.parse(tta)
    work = _RayWork(
        embedder,
        image_set,
        batch_size,
        device,
        amp,
        tuple(tta),
        shard_size,
        shard_seconds,
        channels_last,
        draft_decode,
        actors,
    )
    advance = progress or _ignore
    if output_dir is not None:
        check_replaceable(Path(output_dir), EMBEDDINGS_KIND, (INFO_FILE, EMBEDDINGS_FILE))
    with ray_session(address):
        return embed_in_shards(
            output_dir,
            image_set,
            embedder.embedding_dim,
            work.info(),
            lambda finished, files: work.shards(finished, files, advance),
        )


@dataclass(frozen=True)
class _RayWork:
    """One run of the engine: what is embedded, how, and on which pool."""

    embedder: EmbedderLike
    image_set: ImageSet
    batch_size: int
    device: str
    amp: bool | None
    tta: tuple[str, ...]
    shard_size: int
    shard_seconds: float
    channels_last: bool
    draft_decode: bool
    actors: int

    def plan(self) -> ActorPlan:
        """The actors' resources on the connected cluster."""
        return plan_actors(import_ray().cluster_resources(), self.actors, self.device)

    def amp_dtype(self) -> torch.dtype | None:
        """The actors' autocast dtype: as the local path would choose on their device (bfloat16
        on CUDA when this process cannot ask a GPU itself)."""
        device = torch.device(self.plan().device)
        if device.type == "cuda" and not torch.cuda.is_available():
            return None if self.amp is False else torch.bfloat16
        return amp_dtype_for(device, self.amp)

    def info(self) -> dict[str, Any]:
        """The provenance the local path records (see ``embed_image_set``)."""
        return extraction_info(self.embedder, self.image_set, self.tta, self.amp_dtype())

    def shards(
        self, finished: list[Shard], files: ShardFiles | None, advance: Callable[[int], None]
    ) -> list[Shard]:
        """``finished`` followed by shards of the remaining images, computed on the actors and
        saved to ``files`` (when given) as they close."""
        shards = list(finished)
        start = shards[-1].stop if shards else 0
        if start:
            advance(start)
        if start >= len(self.image_set):
            return shards
        closer = _ShardCloser(self, start, files, shards)
        for batch in self._dataset(start).iter_batches(batch_size=None, batch_format="numpy"):
            closer.add(batch)
            advance(len(batch["row"]))
        closer.finish()
        return shards

    def _dataset(self, start: int) -> Any:
        """The rows ``[start, N)`` as a Ray dataset of one block per batch, mapped by the pool."""
        import pyarrow as pa

        ray = import_ray()
        plan = self.plan()
        logger.info("embedding on Ray: %d actors, %s", self.actors, plan)
        batches = batches_from(start, len(self.image_set), self.batch_size)
        rows = ray.data.from_arrow([pa.table({"row": np.asarray(b, np.int64)}) for b in batches])
        rows.context.execution_options.preserve_order = True
        rows.context.enable_progress_bars = False
        amp_dtype = self.amp_dtype()
        payload = ray.put((self.embedder, self.image_set))
        settings = _ActorSettings(
            self.batch_size,
            plan.device,
            amp_dtype,
            self.channels_last,
            self.tta,
            plan.threads,
            self.draft_decode,
        )
        return rows.map_batches(
            _EmbeddingActor,
            fn_constructor_kwargs={"payload": [payload], "settings": settings},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
        )


class _ShardCloser:
    """Collects the rows coming back, in order, into shards closed as the local path closes
    them: after ``shard_size`` images rounded up to whole batches, or ``shard_seconds``."""

    def __init__(
        self, work: _RayWork, start: int, files: ShardFiles | None, shards: list[Shard]
    ) -> None:
        self.work, self.files, self.shards = work, files, shards
        self.size = len(work.image_set)
        self.rows_per_shard = math.ceil(work.shard_size / work.batch_size) * work.batch_size
        self.ids = work.image_set.ids
        self.next_row = self.shard_start = start
        # The clock starts with the first answer: the actors' start-up (loading the model on
        # each) is not work a shard holds, and would otherwise close a first shard by time.
        self.opened: float | None = None
        self.parts: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.skipped: list[tuple[int, str]] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Take one batch of answers (rows ``next_row`` on), closing shards where they end."""
        rows = np.asarray(batch["row"], np.int64)
        if not np.array_equal(rows, np.arange(self.next_row, self.next_row + len(rows))):
            raise RuntimeError(
                f"Ray returned rows {rows[:3].tolist()}... where row {self.next_row} was due; "
                "dataset order was not kept"
            )
        embedded = np.asarray(batch["embedded"], bool)
        if self.opened is None:
            self.opened = time.monotonic()
        begin = 0
        while begin < len(rows):
            end = min(len(rows), begin + self.shard_start + self.rows_per_shard - self.next_row)
            done = embedded[begin:end]
            self.parts.append(np.asarray(batch["embedding"][begin:end][done], np.float32))
            self.rows.append(rows[begin:end][done])
            self.skipped.extend(
                (int(rows[i]), str(batch["reason"][i]))
                for i in range(begin, end)
                if not embedded[i]
            )
            self.next_row += end - begin
            begin = end
            full = self.next_row - self.shard_start >= self.rows_per_shard
            late = time.monotonic() - self.opened >= self.work.shard_seconds
            if full or late or self.next_row == self.size:
                self._close()

    def finish(self) -> None:
        """Check that every row came back."""
        if self.next_row != self.size or self.parts:
            raise RuntimeError(
                f"Ray returned rows up to {self.next_row} of {self.size}; the run is incomplete"
            )

    def _close(self) -> None:
        dim = self.work.embedder.embedding_dim
        shard = Shard(
            self.shard_start,
            self.next_row,
            np.concatenate(self.parts or [np.zeros((0, dim), np.float32)]).reshape(-1, dim),
            np.concatenate(self.rows or [np.zeros(0, np.int64)]),
            self.skipped,
        )
        if self.files is not None:
            self.files.save(len(self.shards), shard, self.ids[self.shard_start : self.next_row])
        self.shards.append(shard)
        self.parts, self.rows, self.skipped = [], [], []
        self.shard_start, self.opened = self.next_row, time.monotonic()


@dataclass(frozen=True)
class _ActorSettings:
    """How an actor decodes and embeds (the local path's ``Extraction`` settings)."""

    batch_size: int
    device: str
    amp_dtype: torch.dtype | None
    channels_last: bool
    tta: tuple[str, ...]
    threads: int
    draft_decode: bool


class _EmbeddingActor:
    """A Ray Data actor: the embedder, once, on its device; batches of rows in, answers out.

    ``payload`` is a one-element list holding the object reference of ``(embedder, image_set)``
    (in a list so that it reaches the constructor as a reference, fetched once here).
    """

    def __init__(self, payload: list[Any], settings: _ActorSettings) -> None:
        ray = import_ray()
        self.embedder, self.image_set = ray.get(payload[0])
        self.run = Extraction(
            batch_size=settings.batch_size,
            cores=CorePlan(cores=settings.threads, workers=0, threads=settings.threads),
            device=torch.device(settings.device),
            amp_dtype=settings.amp_dtype,
            channels_last=settings.channels_last,
            augmentation=AugmentedViews.parse(settings.tta),
            shard_size=settings.batch_size,
            shard_seconds=math.inf,
            draft_decode=settings.draft_decode,
        )
        # The actor lives for one run: eval mode, device and threads hold for its lifetime.
        self.context = contextlib.ExitStack()
        self.context.enter_context(
            evaluating(self.embedder, self.run.device, settings.channels_last)
        )
        self.context.enter_context(intra_op_threads(settings.threads))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``row`` ``(B,)`` -> ``row``, ``embedded`` ``(B,)`` bool, ``embedding`` ``(B, D)``
        float32 (zeros where not embedded), ``reason`` ``(B,)`` ("" where embedded)."""
        rows = np.asarray(batch["row"], np.int64)
        embedded = np.zeros(len(rows), bool)
        embeddings = np.zeros((len(rows), self.embedder.embedding_dim), np.float32)
        reasons = np.full(len(rows), "", dtype=object)
        part = self.image_set.select(rows.tolist())
        with torch.inference_mode():
            for images, indices, broken in self.run.loader(self.embedder, part, 0):
                if images is not None:
                    at = indices.numpy()
                    embeddings[at] = self.run.embed(self.embedder, images)
                    embedded[at] = True
                for index, reason in broken:
                    reasons[index] = reason
        return {"row": rows, "embedded": embedded, "embedding": embeddings, "reason": reasons}


def _ignore(amount: int) -> None:
    del amount
