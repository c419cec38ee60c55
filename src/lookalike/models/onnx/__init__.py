"""ONNX: an embedder exported to an ONNX folder, run by ONNX Runtime, optionally int8.

- :mod:`~lookalike.models.onnx.folder`: the export folder (``model.onnx``, its description,
  manifest) and how to tell one apart from a PyTorch model folder;
- :mod:`~lookalike.models.onnx.export`: a PyTorch :class:`~lookalike.models.Embedder` to an ONNX
  graph with a dynamic batch;
- :mod:`~lookalike.models.onnx.runtime`: :class:`OnnxEmbedder`, the ONNX Runtime embedder that
  extraction, search, evaluation and the server use as they use a PyTorch one;
- :mod:`~lookalike.models.onnx.quantize`: static (calibrated, QDQ, per-channel) and dynamic int8.

Checking an export against PyTorch needs rankings, a layer above; see
:mod:`lookalike.pipeline.export`.
"""

from lookalike.models.onnx.folder import (
    ONNX_FILE,
    ONNX_KIND,
    is_onnx_folder,
    read_onnx_info,
)
from lookalike.models.onnx.runtime import OnnxEmbedder, load_onnx_embedder

__all__ = [
    "ONNX_FILE",
    "ONNX_KIND",
    "OnnxEmbedder",
    "is_onnx_folder",
    "load_onnx_embedder",
    "read_onnx_info",
]
