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
        num_workers: DataLoader worker processes decoding images.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        tta: Test-time augmentations averaged into each embedding ("flip", "scale:0.8").
        shard_size: Images per resumable shard (rounded up to whole batches).
        shard_seconds: Seconds of work after which a shard closes anyway, so that a killed
            job loses about this much at most.
    """

    batch_size: int = 64
    num_workers: int = 2
    device: str = "auto"
    tta: list[str] = field(default_factory=list)
    shard_size: int = 10_000
    shard_seconds: float = 60.0
