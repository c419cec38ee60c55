"""The typed setting of how images are embedded.

:class:`EmbedSpec` is a dataclass so that it is the typed default of a YAML config (see
:mod:`lookalike.config`) and can be overridden from the command line with dotted keys
(``embed.batch_size=128``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmbedSpec:
    """How images are embedded.

    Attributes:
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images, or "auto": workers and
            torch's intra-op threads share the usable cores
            (:func:`lookalike.utils.cores.plan_cores`).
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        tta: Test-time augmentations averaged into each embedding ("flip", "scale:0.8").
        shard_size: Images per resumable shard (rounded up to whole batches).
        shard_seconds: Seconds of work after which a shard closes anyway, so that a killed
            job loses about this much at most.
        draft_decode: Decode large JPEGs at a reduced scale that still covers the model's input
            (Pillow's draft mode); False decodes every image in full.
        decode_on_device: Workers only read JPEG files; batches are decoded and transformed on
            the embedding device (:mod:`lookalike.embed.device_decode`). Meant for CUDA
            (nvJPEG) when decoding, not the model, is the wall; on the CPU it works but is not
            faster. Engine "local" only.
        engine: "local" (this process) or "ray": a pool of model actors on Ray Data
            (:mod:`lookalike.embed.ray_engine`), writing the same shards and folder.
        address: With engine "ray", the cluster to join ("HOST:PORT", "ray://HOST:PORT",
            "auto"); None: ``RAY_ADDRESS`` when set, else a Ray started on this machine.
        actors: With engine "ray", the model actors (each gets a GPU where the cluster has
            them, else a share of the CPUs).
    """

    batch_size: int = 64
    num_workers: int | str = "auto"
    device: str = "auto"
    tta: list[str] = field(default_factory=list)
    shard_size: int = 10_000
    shard_seconds: float = 60.0
    draft_decode: bool = True
    decode_on_device: bool = False
    engine: str = "local"
    address: str | None = None
    actors: int = 2
