"""Preprocessing that travels with a model: a saved embedder re-embeds with the same transform.

Each backbone adapter fills a :class:`Preprocessing` from its own library's pretrained config
(timm's ``pretrained_cfg``, open_clip's ``preprocess_cfg``, a Hugging Face image processor,
torchvision's weight transforms), the embedder stores it, and :func:`eval_transform` rebuilds the
exact evaluation transform from it alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}
_CROP_MODES = (None, "center", "squash")
# timm ships crop_pct above 1 (volo_d4_448: 1.15): the crop is larger than the resized image and
# pads it with black, as timm's CenterCrop does
_MAX_CROP_PCT = 2.0


@dataclass(frozen=True)
class Preprocessing:
    """How images are turned into the model's input tensor at evaluation time.

    Attributes:
        input_size: Square side in pixels of the network input.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        interpolation: "bilinear", "bicubic" or "nearest".
        crop_pct: Fraction of the resized image kept by the centre crop (timm's convention:
            resize the short side to ``input_size / crop_pct``, then centre-crop ``input_size``).
            1.0 means resize straight to ``input_size``; above 1.0 the crop pads with black.
        crop_mode: "center" (resize the short side to ``input_size / crop_pct``, then centre-crop,
            as timm, open_clip's "shortest" mode and torchvision do, also at ``crop_pct=1.0``) or
            "squash" (resize both sides to ``input_size / crop_pct``, ignoring the aspect ratio,
            then centre-crop ``input_size``, as timm's "squash" does). ``None`` keeps the rule
            above: squash at ``crop_pct=1.0``, centre crop below it.
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; valid: {', '.join(_INTERPOLATIONS)}"
            )
        if not 0.0 < self.crop_pct <= _MAX_CROP_PCT:
            raise ValueError(f"crop_pct must be in (0, {_MAX_CROP_PCT}], got {self.crop_pct}")
        if self.crop_mode not in _CROP_MODES:
            raise ValueError(f"unknown crop_mode {self.crop_mode!r}; valid: center, squash, None")

    @property
    def resize_size(self) -> int:
        """Short-side size before the centre crop."""
        return int(math.floor(self.input_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data["interpolation"]),
            crop_pct=float(data["crop_pct"]),
            crop_mode=data.get("crop_mode"),
        )


def eval_transform(preprocessing: Preprocessing) -> v2.Compose:
    """PIL RGB image -> float tensor ``(3, S, S)`` normalised as ``preprocessing`` says."""
    interpolation = _INTERPOLATIONS[preprocessing.interpolation]
    squash = preprocessing.crop_mode == "squash" or (
        preprocessing.crop_mode is None and preprocessing.crop_pct >= 1.0
    )
    if squash:
        # timm's "squash": both sides to input_size / crop_pct, then the centre crop; the crop is
        # a no-op at crop_pct=1.0 (open_clip's and transformers' squash)
        side = preprocessing.resize_size
        geometry: list[Any] = [v2.Resize((side, side), interpolation, antialias=True)]
        if side != preprocessing.input_size:
            geometry.append(v2.CenterCrop(preprocessing.input_size))
    else:
        geometry = [
            v2.Resize(preprocessing.resize_size, interpolation, antialias=True),
            v2.CenterCrop(preprocessing.input_size),
        ]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
        ]
    )
