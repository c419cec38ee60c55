"""The backbone protocol, its registry, and the weight-file handling every adapter shares.

A backbone turns an image batch ``(B, 3, H, W)`` into features of one of three kinds:

- ``"map"``: a feature map ``(B, C, h, w)`` (CNNs);
- ``"tokens"``: a token sequence ``(B, N, C)``, the CLS token at index 0 when the model has one
  (register and distillation tokens are dropped, so the rest are patch tokens);
- ``"pooled"``: one vector per image ``(B, C)``.

Adapters are registered in :data:`BACKBONES` under the prefix of the name users write
(``"timm:resnet50"`` is the entry ``"timm"`` called with ``"resnet50"``).
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lookalike.models.preprocessing import Preprocessing
from lookalike.registry import Registry

logger = logging.getLogger(__name__)

OutputKind = Literal["map", "tokens", "pooled"]
WeightsSpec = str | os.PathLike[str] | None
"""``"pretrained"`` (the library's pretrained weights by name), ``None``/``"none"`` (random
initialisation) or the path of a local ``.safetensors`` or torch state-dict file."""

_EXPECTED_NDIM = {"map": 4, "tokens": 3, "pooled": 2}
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")


class Backbone(nn.Module, abc.ABC):
    """A pretrained trunk behind one interface.

    Attributes:
        name: The full name it was created from (``"timm:resnet50"``).
        feature_dim: Width ``C`` of the features.
        output_kind: ``"map"``, ``"tokens"`` or ``"pooled"`` (see the module docstring).
        has_cls_token: Whether ``tokens[:, 0]`` is a CLS token.
        preprocessing: The evaluation preprocessing of the pretrained weights.
        config_kwargs: JSON-able keyword arguments that rebuild this architecture (with
            ``weights=None``) without the network.
    """

    name: str
    feature_dim: int
    output_kind: OutputKind
    has_cls_token: bool
    preprocessing: Preprocessing
    config_kwargs: dict[str, Any]

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, h, w)``, ``(B, N, C)`` or ``(B, C)`` by ``output_kind``."""

    @abc.abstractmethod
    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The trunk's main blocks, input to output, as ``(name, module)`` pairs.

        Used to unfreeze the last blocks or to give each block its own learning rate.
        """

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them
        (gradient checkpointing, Chen et al., "Training deep nets with sublinear memory cost",
        2016): the same gradients for about one more forward pass, in much less memory.

        Adapters whose library supports it override this; the others refuse.

        Raises:
            ValueError: This backbone's library offers no gradient checkpointing.
        """
        if enabled:
            raise ValueError(
                f"backbone {self.name} does not support gradient checkpointing; use a timm:, "
                "open_clip: or hf: backbone, or set trainer.grad_checkpointing=false"
            )

    def _probe_feature_dim(self) -> int:
        """Run one blank image through the backbone and check its output against ``output_kind``."""
        shape = probe_output_shape(self, self, self.preprocessing.input_size)
        if len(shape) != _EXPECTED_NDIM[self.output_kind]:
            raise RuntimeError(
                f"{self.name}: expected {self.output_kind} features, got shape {shape}"
            )
        return int(shape[1] if self.output_kind == "map" else shape[-1])


def probe_output_shape(
    module: nn.Module, function: Callable[[torch.Tensor], Any], input_size: int
) -> tuple[int, ...]:
    """Shape of ``function`` on one blank ``(1, 3, S, S)`` image, with ``module`` in eval mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            output = function(torch.zeros(1, 3, input_size, input_size))
    finally:
        module.train(was_training)
    return tuple(output.shape)


BACKBONES = Registry[Backbone]("backbone")


def split_backbone_name(name: str) -> tuple[str, str]:
    """``"timm:resnet50"`` -> ``("timm", "resnet50")``; a ``ValueError`` listing prefixes else."""
    prefix, sep, model_name = name.partition(":")
    if not sep or not model_name:
        raise ValueError(
            f"backbone name {name!r} must look like 'prefix:model'; "
            f"valid prefixes: {', '.join(BACKBONES.names())}"
        )
    BACKBONES.get(prefix)
    return prefix.lower(), model_name


def create_backbone(name: str, weights: WeightsSpec = "pretrained", **kwargs: Any) -> Backbone:
    """Build the backbone named ``"prefix:model"`` (see :data:`BACKBONES` for the prefixes)."""
    prefix, model_name = split_backbone_name(name)
    return BACKBONES.create(prefix, model_name, weights=weights, **kwargs)


def resolve_weights(weights: WeightsSpec) -> Literal["pretrained"] | Path | None:
    """Normalise a weights argument: ``"pretrained"``, ``None`` or an existing file path."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "pretrained":
        return "pretrained"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass weights='pretrained', None or a file path"
        )
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint (read with ``weights_only=True``).

    A checkpoint that wraps its state dict (``{"state_dict": ...}``, ``{"model": ...}``) is
    unwrapped, and a ``"module."`` prefix left by ``DataParallel`` is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader raises its own types on a corrupt file
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    while isinstance(data, Mapping):
        wrapped = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if wrapped is None:
            break
        data = wrapped
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    state = dict(data)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_weights_file(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    discard_prefixes: tuple[str, ...] = (),
    strip_prefix: str | None = None,
) -> None:
    """Load the state dict in ``path`` into ``module`` strictly, with an error naming the file.

    Args:
        module: The library's model the file was saved from.
        path: A ``.safetensors`` or torch file.
        discard_prefixes: Keys in the file starting with one of these are dropped when the model
            lacks them (classifier heads the backbone does not keep).
        strip_prefix: Removed from every key when all keys carry it (a task model's trunk prefix).
    """
    state = read_state_dict(path)
    if strip_prefix and state and all(key.startswith(strip_prefix) for key in state):
        state = {key[len(strip_prefix) :]: value for key, value in state.items()}
    expected = module.state_dict()
    state = {
        key: value
        for key, value in state.items()
        if key in expected or not (discard_prefixes and key.startswith(discard_prefixes))
    }
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} wrong shapes (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        raise ValueError(
            f"weights file {path} does not fit {type(module).__name__}: {'; '.join(problems)}"
        )
    module.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s", len(state), path)


def interpolation_name(value: Any) -> str:
    """A library's interpolation (name, PIL code, torchvision mode) -> a ``Preprocessing`` name."""
    pil_codes = {0: "nearest", 2: "bilinear", 3: "bicubic"}
    if isinstance(value, int) and not isinstance(value, bool):
        name = pil_codes.get(value, "bicubic")
    else:
        name = str(getattr(value, "value", value)).lower()
    if name not in ("nearest", "bilinear", "bicubic"):
        logger.warning("interpolation %r has no equivalent here; using bicubic", value)
        return "bicubic"
    return name


def first_module_list(module: nn.Module, names: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """Children of the first ``ModuleList``/``Sequential`` (definition order) named in ``names``."""
    for path, child in module.named_modules():
        if path.rsplit(".", 1)[-1] in names and isinstance(child, nn.ModuleList | nn.Sequential):
            return [(f"{path}.{i}", block) for i, block in enumerate(child)]
    return []
