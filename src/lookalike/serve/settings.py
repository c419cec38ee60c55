"""The typed settings of a catalogue server: limits, micro-batching, durability, access.

:class:`ServeSettings` is a dataclass, like every other setting of lookalike, so a Python user
passes one to :func:`~lookalike.serve.app.create_app` and the command line fills one from its
options. The defaults are the safe ones: localhost only, no CORS, bounded uploads and ``k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "LOOKALIKE_SERVE_TOKEN"
STATE_SUFFIX = ".state"


@dataclass
class ServeSettings:
    """How a catalogue server behaves.

    Attributes:
        max_k: Largest ``k`` a search may ask for.
        default_k: ``k`` when a search names none.
        max_upload_bytes: Largest image file accepted, in bytes.
        max_images: Most images in one request (search or add).
        max_pixels: Largest ``width * height`` decoded; larger images (decompression bombs) are
            refused before their pixels are decoded.
        max_text_chars: Longest text query.
        batch_max: Most queries embedded in one forward pass (1 switches micro-batching off).
        batch_wait_ms: How long the first query of a batch waits for others to join it.
        device: Where the model runs: "auto", "cpu", "cuda[:N]".
        token: Bearer token the write endpoints require; None reads :attr:`token_env`, and an
            empty or unset variable leaves them open.
        token_env: Environment variable holding the token.
        cors_origins: Origins allowed to call the API from a browser (none by default).
        state_dir: Folder of the journal and of the added items' images; None puts it beside
            the index folder (``INDEX_DIR.state``).
        compact_every: Compact (rewrite the index folder, reset the journal) after this many
            journal records; 0 compacts only when asked.
        thumbnail_size: Default longest side of the thumbnails served, in pixels.
        max_thumbnail_size: Largest thumbnail side a client may ask for.
    """

    max_k: int = 100
    default_k: int = 10
    max_upload_bytes: int = 10 * 1024 * 1024
    max_images: int = 16
    max_pixels: int = 40_000_000
    max_text_chars: int = 1000
    batch_max: int = 16
    batch_wait_ms: float = 5.0
    device: str = "auto"
    token: str | None = None
    token_env: str = TOKEN_ENV
    cors_origins: list[str] = field(default_factory=list)
    state_dir: str | None = None
    compact_every: int = 1000
    thumbnail_size: int = 256
    max_thumbnail_size: int = 1024

    def __post_init__(self) -> None:
        positive = {
            "max_k": self.max_k,
            "default_k": self.default_k,
            "max_upload_bytes": self.max_upload_bytes,
            "max_images": self.max_images,
            "max_pixels": self.max_pixels,
            "max_text_chars": self.max_text_chars,
            "batch_max": self.batch_max,
            "thumbnail_size": self.thumbnail_size,
            "max_thumbnail_size": self.max_thumbnail_size,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        if not 0 <= float(self.batch_wait_ms) <= 10_000:
            raise ValueError(f"batch_wait_ms must lie in [0, 10000], got {self.batch_wait_ms}")
        if int(self.compact_every) < 0:
            raise ValueError(f"compact_every must be 0 or more, got {self.compact_every}")

    @property
    def request_bytes(self) -> int:
        """Largest request body accepted: every image at its limit plus room for the form."""
        return self.max_images * self.max_upload_bytes + 1024 * 1024

    def resolved_token(self) -> str | None:
        """The bearer token in force: :attr:`token`, else the environment's; None when open."""
        token = self.token if self.token is not None else os.environ.get(self.token_env, "")
        return token or None

    def resolved_state_dir(self, index_dir: str | os.PathLike[str]) -> Path:
        """The state folder: :attr:`state_dir`, else ``INDEX_DIR.state`` beside the index."""
        if self.state_dir:
            return Path(self.state_dir)
        index_path = Path(index_dir).resolve()
        return index_path.parent / f"{index_path.name}{STATE_SUFFIX}"
