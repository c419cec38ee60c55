"""FAISS-backed indexes: exact flat search, inverted files (IVF-Flat, IVF-PQ) and HNSW graphs.

Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs", 2017 (FAISS). Metrics map to
FAISS as follows: cosine is inner product over L2-normalised rows, ip is inner product, l2 is
FAISS's squared L2 turned back into Euclidean distance (square root), l1 is ``METRIC_L1``. Row ids
are insertion order; :mod:`lookalike.index.io` maps them to image ids.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from lookalike.index.base import INDEXES, Index
from lookalike.index.metrics import Metric
from lookalike.utils.folders import ArtefactError, unreadable

logger = logging.getLogger(__name__)
_REBUILD = "rebuild the index with `lookalike index`"

_FAISS_METRICS = {
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "ip": faiss.METRIC_INNER_PRODUCT,
    "l2": faiss.METRIC_L2,
    "l1": faiss.METRIC_L1,
}


def faiss_gpu_available() -> bool:
    """Whether this FAISS has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def describe_faiss_index(index: Any) -> str:
    """The structure of a CPU FAISS index: its class and the sizes fixed when it was built
    (IVF cells, PQ sub-quantisers and bits, HNSW neighbours, scalar quantiser type), e.g.
    ``IndexRefine(IndexIVFPQ(nlist=16, m=8, nbits=8), IndexScalarQuantizer(qtype=0))``."""
    # ``index`` stays referenced: the downcast view does not own the C++ object.
    typed = faiss.downcast_index(index)
    # IndexFlat is read back as IndexFlatL2 / IndexFlatIP: the metric is checked on its own.
    name = "IndexFlat" if isinstance(typed, faiss.IndexFlat) else type(typed).__name__
    if isinstance(typed, faiss.IndexRefine):
        base, refine = typed.base_index, typed.refine_index
        return f"{name}({describe_faiss_index(base)}, {describe_faiss_index(refine)})"
    sizes: list[str] = []
    if isinstance(typed, faiss.IndexIVF):
        sizes.append(f"nlist={typed.nlist}")
    if isinstance(typed, faiss.IndexIVFPQ):
        sizes += [f"m={typed.pq.M}", f"nbits={typed.pq.nbits}"]
    if isinstance(typed, faiss.IndexHNSW):
        sizes.append(f"M={typed.hnsw.nb_neighbors(1)}")
    if isinstance(typed, faiss.IndexScalarQuantizer):
        sizes.append(f"qtype={typed.sq.qtype}")
    return f"{name}({', '.join(sizes)})"


class FaissIndex(Index):
    """Common machinery: build from a FAISS factory string, move to GPU, train, search, save.

    Subclasses set their parameters, then call ``super().__init__``, and give
    :meth:`factory_string`; they may tune the built index (:meth:`_configure`) and name the
    search-time parameters FAISS should apply (:meth:`_search_parameters`).
    """

    state_file = "index.faiss"
    supports_gpu: ClassVar[bool] = True

    def __init__(self, dim: int, metric: Metric | str = "cosine", device: str = "cpu") -> None:
        super().__init__(dim, metric, device)
        self._gpu_resources: Any = None
        self._memory_mapped = False
        cpu_index = faiss.index_factory(
            self.dim, self.factory_string(), _FAISS_METRICS[self.metric.name]
        )
        self._configure(cpu_index)
        self._index = self._to_device(cpu_index)

    @abstractmethod
    def factory_string(self) -> str:
        """The :func:`faiss.index_factory` description of this index ("Flat", "IVF100,Flat")."""

    def _configure(self, cpu_index: Any) -> None:
        """Adjust the freshly built CPU index before use (construction-time parameters)."""

    def _search_parameters(self) -> dict[str, int]:
        """FAISS ParameterSpace settings applied before every search ("nprobe", "efSearch")."""
        return {}

    def _min_training_rows(self) -> int:
        """Fewest training rows FAISS accepts (0 for indexes that need no training)."""
        return 0

    def _read_flags(self) -> int:
        """FAISS ``IO_FLAG_*`` bits :meth:`read_state` reads the index file with."""
        return 0

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def read_only(self) -> bool:
        return self._memory_mapped

    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (on the index's device)."""
        return self._index

    def train(self, vectors: np.ndarray) -> None:
        """Learn coarse centroids / codebooks from ``(N, D)`` rows (a no-op for flat and HNSW)."""
        prepared = self._check(vectors, "training vectors")
        if self.ntotal > 0 and self._min_training_rows() > 0:
            raise ValueError(
                f"cannot retrain a {self.kind} index that already holds {self.ntotal} vectors; "
                "build a new index"
            )
        self._train(prepared)

    def _train(self, vectors: np.ndarray) -> None:
        needed = self._min_training_rows()
        if needed == 0:
            return
        if vectors.shape[0] < needed:
            raise ValueError(self._too_few_message(vectors.shape[0]))
        self._index.train(vectors)

    def _too_few_message(self, count: int) -> str:
        return (
            f"{self.kind} needs at least {self._min_training_rows()} training vectors, got {count}"
        )

    def _add(self, vectors: np.ndarray) -> None:
        if self._memory_mapped:
            raise ValueError(
                f"this {self.kind} index was loaded memory-mapped (mmap=true) and is read-only; "
                "build a new index to add rows"
            )
        if not self.is_trained:
            logger.info(
                "%s index is untrained; training it on the %d vectors being added",
                self.kind,
                vectors.shape[0],
            )
            self._train(vectors)
        self._index.add(vectors)

    def reconstruct(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Stored rows (see :meth:`Index.reconstruct`); an IVF index gets its direct map (row
        number to inverted-list slot) the first time, and keeps it up to date from then on."""
        if self.device != "cpu":
            return super().reconstruct(rows)
        selected = self._row_numbers(rows)
        if selected.size == 0:
            return np.zeros((0, self.dim), np.float32)
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()
        if rows is None:
            return np.asarray(self._index.reconstruct_n(0, self.ntotal), dtype=np.float32)
        return np.stack([self._index.reconstruct(int(row)) for row in selected]).astype(
            np.float32, copy=False
        )

    def empty_copy(self) -> FaissIndex:
        """An empty index of this kind; an IVF index keeps its coarse centroids and codebooks
        (a trained FAISS index, cloned and emptied)."""
        if self._memory_mapped:  # FAISS cannot clone on-disk inverted lists
            raise ValueError(
                f"this {self.kind} index was loaded memory-mapped (mmap=true) and is read-only; "
                "build the index without mmap to change or compact it"
            )
        copy = super().empty_copy()
        assert isinstance(copy, FaissIndex)
        if not copy.is_trained:
            cpu_index = self._index if self.device == "cpu" else faiss.index_gpu_to_cpu(self._index)
            trained = faiss.clone_index(cpu_index)
            trained.reset()
            copy._index = copy._to_device(trained)
        return copy

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        settings = self._search_parameters()
        if settings:
            space = faiss.ParameterSpace() if self.device == "cpu" else faiss.GpuParameterSpace()
            for name, value in settings.items():
                space.set_index_parameter(self._index, name, value)
        scores, indices = self._index.search(queries, k)
        scores = scores.astype(np.float32, copy=False)
        if self.metric.name == "l2":
            scores = np.sqrt(np.maximum(scores, 0.0))
        scores[indices < 0] = self.metric.worst()
        return scores, indices.astype(np.int64, copy=False)

    def _to_device(self, cpu_index: Any) -> Any:
        if self.device == "cpu":
            return cpu_index
        if not self.supports_gpu:
            raise ValueError(f"FAISS has no GPU version of {self.kind!r}; use device='cpu'")
        if not faiss_gpu_available():
            raise ValueError(
                f"device {self.device!r} needs FAISS built with GPU support and a visible GPU "
                "(pip install faiss-gpu-cu12); use device='cpu'"
            )
        gpu_id = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        self._gpu_resources = faiss.StandardGpuResources()
        try:
            return faiss.index_cpu_to_gpu(self._gpu_resources, gpu_id, cpu_index)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1]
            raise ValueError(
                f"FAISS cannot put a {self.kind} index with metric {self.metric.name!r} on "
                f"{self.device}: {reason}; use device='cpu'"
            ) from error

    def write_state(self, path: Path) -> None:
        if self._memory_mapped:  # FAISS would write a reference to the mapped file, not the lists
            raise ValueError(
                f"this {self.kind} index was loaded memory-mapped (mmap=true); save the index "
                "folder it was loaded from instead, or build a new one"
            )
        cpu_index = self._index if self.device == "cpu" else faiss.index_gpu_to_cpu(self._index)
        faiss.write_index(cpu_index, str(path))

    def read_state(self, path: Path) -> None:
        flags = self._read_flags()
        try:
            cpu_index = faiss.read_index(str(path), flags)
        except RuntimeError as error:  # FAISS's C++ exceptions, multi-line with a stack
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "read error"
            raise unreadable(path, RuntimeError(reason), _REBUILD) from None
        if cpu_index.d != self.dim or cpu_index.metric_type != _FAISS_METRICS[self.metric.name]:
            raise ArtefactError(
                f"{path} holds a FAISS index of dimension {cpu_index.d} and metric type "
                f"{cpu_index.metric_type}, but its folder describes dimension {self.dim} and "
                f"metric {self.metric.name!r}; {_REBUILD}"
            )
        # A file of another structure (an HNSW graph under a folder saying "flat", PQ codes
        # under "ivf_flat") would load and answer approximately under an exact kind's name.
        fresh = faiss.index_factory(
            self.dim, self.factory_string(), _FAISS_METRICS[self.metric.name]
        )
        expected = describe_faiss_index(fresh)
        found = describe_faiss_index(cpu_index)
        if found != expected:
            raise ArtefactError(
                f"{path} holds a FAISS {found} index, but its folder describes kind "
                f"{self.kind!r} ({expected}); {_REBUILD}"
            )
        self._index = self._to_device(cpu_index)
        self._memory_mapped = bool(flags & faiss.IO_FLAG_MMAP) and self.device == "cpu"


@INDEXES.register("flat")
class FlatIndex(FaissIndex):
    """Exact brute-force search (FAISS ``IndexFlat``); needs no training."""

    kind = "flat"
    exact = True

    def factory_string(self) -> str:
        return "Flat"
