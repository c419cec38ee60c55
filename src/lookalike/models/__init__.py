"""Models: backbone adapters, pooling, heads, and the embedder that chains them.

>>> from lookalike.models import create_embedder
>>> embedder = create_embedder("efficientnet_lite:lite0", pool="gem", head="linear:256")
"""

from lookalike.models.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, create_backbone
from lookalike.models.checkpoint import load_embedder, read_embedder_info, save_embedder
from lookalike.models.embedder import Embedder, create_embedder
from lookalike.models.heads import HEADS, create_head
from lookalike.models.pooling import POOLINGS
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.models.spec import ModelSpec, build_embedder

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "HEADS",
    "POOLINGS",
    "Backbone",
    "Embedder",
    "ModelSpec",
    "Preprocessing",
    "build_embedder",
    "create_backbone",
    "create_embedder",
    "create_head",
    "eval_transform",
    "load_embedder",
    "read_embedder_info",
    "save_embedder",
]
