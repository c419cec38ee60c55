"""ONNX Runtime embedder: an export folder run on the CPU, used wherever a PyTorch one is.

:class:`OnnxEmbedder` has what extraction (:class:`lookalike.embed.extract.EmbedderLike`), the
index's fingerprint check and the server need of an embedder: it is called with a ``(B, 3, S, S)``
torch tensor and returns ``(B, D)`` float32 embeddings as a torch tensor, carries the
preprocessing, config and fingerprint of its export folder, and its ``eval``/``train``/``to``
are no-ops (ONNX Runtime always infers, on its own execution provider).

Threads: a session has one intra-op thread pool, sized when it is created, and no inter-op pool.
Left unset, ``threads`` follows torch's intra-op thread count at each call, so the core budget
that extraction sets for the model (:func:`lookalike.utils.cores.plan_cores`: decoding workers
plus model threads never exceed the usable cores) holds for ONNX Runtime too; one session is kept
per thread count seen. Idle threads do not spin-wait (``session.intra_op.allow_spinning = 0``):
spinning threads would take the cores from the decoders while they wait for the next batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from lookalike.models.onnx.export import INPUT_NAME
from lookalike.models.onnx.folder import ONNX_FILE, onnx_folder, read_onnx_info, require_onnx
from lookalike.models.preprocessing import Preprocessing, eval_transform

logger = logging.getLogger(__name__)

def session_options(threads: int, spinning: bool = False) -> Any:
    """ONNX Runtime session options: ``threads`` intra-op threads, sequential execution, every
    graph optimisation, and no spin-waiting unless asked."""
    ort = require_onnx("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: ORT warns about every unused initialiser
    return options


class OnnxEmbedder:
    """An ONNX export run by ONNX Runtime: ``(B, 3, S, S)`` images -> ``(B, D)`` embeddings.

    Args:
        model_path: The ``.onnx`` graph.
        info: Its description (see :mod:`lookalike.models.onnx.folder`).
        threads: Intra-op threads; None: torch's intra-op thread count at each call.
        spinning: Let idle intra-op threads spin-wait (faster alone on a machine, slower beside
            decoding workers).

    Attributes:
        embedding_dim: ``D``.
        preprocessing: The evaluation preprocessing saved with the export.
        normalize: Whether the embeddings are L2-normalised.
        precision: ``"fp32"`` or ``"int8"``.
        threads: The fixed intra-op thread count, or None to follow torch's.
        training: Always False.
    """

    training = False

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        info: dict[str, Any],
        *,
        threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.model_path = Path(model_path)
        self.info = dict(info)
        self.preprocessing = Preprocessing.from_dict(info["preprocessing"])
        self.embedding_dim = int(info["embedding_dim"])
        self.normalize = bool(info["normalize"])
        self.precision = str(info["precision"])
        self._fingerprint = str(info["fingerprint"])
        self._config = {
            **dict(info["config"]), "runtime": "onnxruntime", "precision": self.precision,
        }
        self.threads = threads
        self.spinning = spinning
        self._sessions: dict[int, Any] = {}
        self.session_for(self.active_threads)  # a graph ORT cannot load fails here, not later

    @property
    def active_threads(self) -> int:
        """The intra-op threads the next call runs: ``threads``, else torch's current count."""
        return self.threads or torch.get_num_threads()

    def session_for(self, threads: int) -> Any:
        """The ``onnxruntime.InferenceSession`` running ``threads`` intra-op threads (created on
        first use, then kept)."""
        ort = require_onnx("onnxruntime")
        session = self._sessions.get(threads)
        if session is None:
            try:
                session = ort.InferenceSession(
                    str(self.model_path),
                    sess_options=session_options(threads, self.spinning),
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:  # noqa: BLE001 - ORT raises its own error types
                reason = " ".join(str(exc).split())[:200]
                raise ValueError(
                    f"ONNX Runtime cannot load {self.model_path} ({reason}); export the model "
                    "again"
                ) from None
            self._sessions[threads] = session
        return session

    @property
    def config(self) -> dict[str, Any]:
        """The source embedder's config plus ``runtime`` and ``precision``."""
        return dict(self._config)

    def fingerprint(self) -> str:
        """The export's fingerprint (the PyTorch model's for fp32, its own for int8)."""
        return self._fingerprint

    def eval_transform(self) -> v2.Compose:
        """PIL RGB image -> ``(3, S, S)`` input tensor, as the export expects."""
        return eval_transform(self.preprocessing)

    def embed_array(self, images: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` float32 C-contiguous array -> ``(B, D)`` float32 array."""
        (output,) = self.session_for(self.active_threads).run(None, {INPUT_NAME: images})
        return output

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images (any device or memory format) -> ``(B, D)``
        float32 embeddings on the images' device."""
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.embed_array(array)).to(images.device)

    def eval(self) -> OnnxEmbedder:
        return self

    def train(self, mode: bool = True) -> OnnxEmbedder:
        """No-op: an exported graph always infers (train the PyTorch model instead)."""
        del mode
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxEmbedder:
        """No-op: ONNX Runtime runs on its CPU provider whatever torch device is asked."""
        del args, kwargs
        return self

    def __repr__(self) -> str:
        return (
            f"OnnxEmbedder({self.model_path}, {self.config.get('backbone')}, {self.precision}, "
            f"D={self.embedding_dim}, threads={self.threads or 'torch'})"
        )


def load_onnx_embedder(
    folder: str | os.PathLike[str], *, threads: int | None = None, spinning: bool = False
) -> OnnxEmbedder:
    """The :class:`OnnxEmbedder` of a finished export folder (verified against its manifest).

    Raises:
        FileNotFoundError: The folder does not exist.
        ArtefactError: The folder is unfinished, damaged or not an ONNX export.
        ValueError: ONNX Runtime cannot load the graph.
    """
    path = onnx_folder(folder)
    info = read_onnx_info(path)
    embedder = OnnxEmbedder(path / ONNX_FILE, info, threads=threads, spinning=spinning)
    logger.info("loaded %r", embedder)
    return embedder
