"""Test-time augmentation: the views of a batch whose embeddings are averaged.

Horizontal flips and multi-scale inputs, as in Radenović, Tolias and Chum, "Fine-tuning CNN Image
Retrieval with No Human Annotation" (TPAMI 2018).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
