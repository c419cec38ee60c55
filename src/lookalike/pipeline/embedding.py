"""``embed`` as a library call: a source of images in, an embedding folder (or set) out.

The source is any spec :func:`~lookalike.data.sources.load_source` reads (a folder per class, a
CSV/Parquet manifest, ``"sop:ROOT"``) or an :class:`~lookalike.data.records.ImageSet`; the
embedder is named by a :class:`~lookalike.models.spec.ModelSpec` (or given built), and
:class:`~lookalike.embed.spec.EmbedSpec` says how to run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.embed.ray_cluster import check_ray_settings
from lookalike.embed.ray_engine import embed_image_set_ray
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.embed.tta import AugmentedViews
from lookalike.models import Embedder
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.utils.cores import parse_workers
from lookalike.utils.devices import check_device
from lookalike.utils.progress import ProgressFactory, tracker


def check_embed_spec(spec: EmbedSpec) -> None:
    """Refuse settings that cannot embed, before a model is built or an image read.

    Raises:
        ValueError: One line naming the setting and the value given.
    """
    for name, value, least in (
        ("batch_size", spec.batch_size, 1),
        ("shard_size", spec.shard_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    parse_workers(spec.num_workers)
    if not spec.shard_seconds > 0:  # NaN fails too
        raise ValueError(f"shard_seconds must be a positive number, got {spec.shard_seconds!r}")
    AugmentedViews.parse(spec.tta)
    if spec.engine == "ray":
        if spec.decode_on_device:
            raise ValueError("decode_on_device is for engine 'local'; the ray engine cannot use it")
        check_ray_settings(spec.device, spec.actors, spec.address)
    elif spec.engine == "local":
        check_device(spec.device)
        if spec.address is not None:
            raise ValueError(f"address {spec.address!r} is for the ray engine; add engine='ray'")
    else:
        raise ValueError(f"unknown embedding engine {spec.engine!r}; valid names: local, ray")


def embed_images(
    source: str | Path | ImageSet,
    output: str | Path | None,
    split: str | None = None,
    model: ModelSpec | Embedder | None = None,
    embed: EmbedSpec | None = None,
    progress: ProgressFactory | None = None,
) -> EmbeddingSet:
    """Embed every readable image of ``source``, in order; unreadable ones are skipped.

    Args:
        source: Images: a source spec for :func:`~lookalike.data.sources.load_source`, or an
            :class:`ImageSet`.
        output: Embedding folder to write (resumable: an interrupted run started again keeps
            its finished shards; ``skipped.csv`` lists unreadable images); None keeps the
            embeddings in memory only.
        split: Embed only the records of this split ("query", "gallery" ...).
        model: The embedder, or the :class:`ModelSpec` naming it; None: ``ModelSpec()``.
        embed: Batch size, workers, device, test-time augmentation, shard size, engine
            ("local", or "ray": a pool of Ray actors writing the same folder);
            None: ``EmbedSpec()``.
        progress: Asked for one step, ``"embedding <set name>"`` over the images, whose
            callback is called with the number of images done after each batch.

    Returns:
        ``(N, D)`` float32 embeddings with the ids, paths and labels of the embedded images;
        ``info["skipped"]`` lists the images that could not be read.

    Raises:
        ValueError: ``split`` selects no record, the source spec is invalid, or ``embed`` holds
            a setting that cannot run (see :func:`check_embed_spec`); nothing is written then.
        FileNotFoundError: The source does not exist.
    """
    spec = embed or EmbedSpec()
    check_embed_spec(spec)
    images = source if isinstance(source, ImageSet) else load_source(source)
    if split:
        images = images.split(split)
        if not len(images):
            raise ValueError(f"{source} has no records with split {split!r}")
    # a built embedder (PyTorch, or an ONNX Runtime one from build_embedder) is used as given
    embedder = (
        build_embedder(model or ModelSpec())
        if model is None or isinstance(model, ModelSpec)
        else model
    )
    common: dict[str, Any] = {  # what both engines take alike
        "output_dir": None if output is None else Path(output),
        "batch_size": spec.batch_size,
        "device": spec.device,
        "tta": tuple(spec.tta),
        "shard_size": spec.shard_size,
        "shard_seconds": spec.shard_seconds,
        "draft_decode": spec.draft_decode,
        "progress": tracker(progress, f"embedding {images.name}", len(images)),
    }
    if spec.engine == "ray":
        return embed_image_set_ray(
            embedder, images, **common, address=spec.address, actors=spec.actors
        )
    return embed_image_set(
        embedder,
        images,
        **common,
        num_workers=parse_workers(spec.num_workers),
        decode_on_device=spec.decode_on_device,
    )
