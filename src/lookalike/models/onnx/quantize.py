"""int8 quantisation of an exported embedder with ONNX Runtime's quantisation tools.

- **static** (the default): weights int8 per output channel, activations uint8 with scales
  calibrated on a sample of the user's own images (MinMax, or Percentile/Entropy), written in the
  QDQ format that ONNX Runtime fuses into int8 kernels. This follows ONNX Runtime's CPU recipe
  (``quant_pre_process`` then ``quantize_static``; Jacob et al., "Quantization and Training of
  Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, for the affine
  int8 scheme).
- **dynamic**: weights int8, activation scales computed per batch at run time; needs no images,
  but on convolutional networks it is often slower than fp32 and moves embeddings more.

Either way the caller measures what it costs in retrieval (see :mod:`lookalike.pipeline.export`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lookalike.models.onnx.export import INPUT_NAME
from lookalike.models.onnx.folder import require_onnx

logger = logging.getLogger(__name__)

QUANTIZATION_MODES = ("static", "dynamic")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def _calibration_reader(batches: Iterable[np.ndarray]) -> object:
    """A ``CalibrationDataReader`` handing ``batches`` (``(B, 3, S, S)`` float32) to the
    calibrator one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(batches)
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self.count += len(batch)
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    return _Batches()


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    mode: str = "static",
    calibration_batches: Iterable[np.ndarray] | None = None,
    method: str = "minmax",
    per_channel: bool = True,
) -> int:
    """Write the int8 version of the ONNX graph ``fp32_path`` to ``int8_path``.

    Args:
        fp32_path: The exported fp32 graph.
        int8_path: Where the quantised graph goes.
        mode: ``"static"`` (calibrated, QDQ) or ``"dynamic"``.
        calibration_batches: ``(B, 3, S, S)`` float32 batches of preprocessed images; required
            for ``"static"``, ignored for ``"dynamic"``.
        method: Calibration method of ``"static"``: minmax, percentile or entropy.
        per_channel: Quantise weights per output channel (else per tensor).

    Returns:
        The number of calibration images seen (0 for dynamic).

    Raises:
        ValueError: An unknown mode or method, static without calibration images, or an empty
            calibration set.
    """
    require_onnx("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"unknown quantisation {mode!r}; valid: {', '.join(QUANTIZATION_MODES)}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}"
        )
    with tempfile.TemporaryDirectory(prefix="lookalike-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and graph optimisation first, as ORT's quantisation guide asks.
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(
                str(prepared), str(int8_path), per_channel=per_channel,
                weight_type=QuantType.QInt8,
            )  # fmt: skip
            return 0
        if calibration_batches is None:
            raise ValueError("static int8 quantisation needs calibration images")
        reader = _calibration_reader(calibration_batches)
        quantize_static(
            str(prepared),
            str(int8_path),
            reader,  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[method],
        )
        seen = int(reader.count)  # type: ignore[attr-defined]
    if seen == 0:
        raise ValueError("the calibration set gave no image; give a folder with readable images")
    logger.info("quantised %s to int8 (%s, %s, %d calibration images)", fp32_path, mode, method, seen)
    return seen
