"""A PyTorch embedder to an ONNX graph: ``images (B, 3, S, S) -> embeddings (B, D)``.

The graph is captured with ``torch.export`` and translated by ``torch.onnx.export(dynamo=True)``
at opset 18 (the ONNX Runtime CPU provider's well-covered range), with the batch dimension left
dynamic so one file serves any batch size. The weights are stored inside the file (no external
data), so the export folder's manifest covers them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from lookalike.models.embedder import Embedder
from lookalike.models.onnx.folder import require_onnx

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 18
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")


def export_graph(embedder: Embedder, path: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``embedder``'s forward pass (eval mode, fp32, on the CPU) to the ONNX file ``path``.

    Args:
        embedder: The PyTorch embedder; its train flag and device are restored afterwards.
        path: The ``.onnx`` file to write.
        opset: ONNX opset version (18 or later).

    Returns:
        ``path``.

    Raises:
        ValueError: ``opset`` below 18, or the model cannot be exported (the exporter's reason
            on one line).
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be an integer >= {DEFAULT_OPSET}, got {opset!r}")
    require_onnx("onnxscript")  # what torch.onnx.export(dynamo=True) translates with
    size = embedder.preprocessing.input_size
    was_training = embedder.training
    parameter = next(embedder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    embedder.eval().to("cpu")
    # Two example images so that the batch dimension is not specialised to 1.
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1)
    try:
        # The exporter prints its steps to stdout and logs every rewrite at INFO; keep both out
        # of the user's terminal.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _quiet_loggers(_EXPORTER_LOGGERS),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                embedder,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - torch.export raises many error types
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"cannot export {embedder.config.get('backbone', 'the model')} to ONNX: {reason}"
        ) from None
    finally:
        embedder.to(device).train(was_training)
    logger.info("exported %s to %s (opset %d)", embedder.config.get("backbone"), path, opset)
    return path


@contextlib.contextmanager
def _quiet_loggers(names: tuple[str, ...]) -> Iterator[None]:
    """Only warnings and errors from the loggers ``names`` inside the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
