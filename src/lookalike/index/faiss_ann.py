"""FAISS's approximate indexes: inverted files (IVF-Flat, IVF-PQ) and HNSW graphs.

Each is a :class:`~lookalike.index.faiss_index.FaissIndex` named by a FAISS factory string:
Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (IVF,
PQ); Malkov & Yashunin, "Efficient and Robust Approximate Nearest Neighbor Search Using
Hierarchical Navigable Small World Graphs", TPAMI 2018 (HNSW).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss

from lookalike.index.base import INDEXES
from lookalike.index.faiss_index import FaissIndex
from lookalike.index.metrics import Metric

logger = logging.getLogger(__name__)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


@INDEXES.register("ivf_flat")
class IVFFlatIndex(FaissIndex):
    """Inverted file over ``nlist`` k-means cells, full vectors stored (Jégou et al., 2011).

    Args:
        dim: Embedding width ``D``.
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda[:N]".
        nlist: Number of coarse cells; training needs at least ``nlist`` vectors (FAISS advises
            about 39 per cell).
        nprobe: Cells visited per query (recall/speed trade-off; settable between searches).
        mmap: Loading the saved index memory-maps its inverted lists (FAISS ``IO_FLAG_MMAP``:
            ``OnDiskInvertedLists`` over the index file) instead of reading them into memory:
            an index larger than RAM is searched from the page cache. A loaded mapped index is
            read-only. Kept in ``params`` only when true.
    """

    kind = "ivf_flat"

    def __init__(
        self,
        dim: int,
        metric: Metric | str = "cosine",
        device: str = "cpu",
        nlist: int = 100,
        nprobe: int = 8,
        mmap: bool = False,
    ) -> None:
        _check_positive(nlist=nlist, nprobe=nprobe)
        if not isinstance(mmap, bool):
            raise ValueError(f"mmap must be true or false, got {mmap!r}")  # noqa: TRY004
        self.nlist = int(nlist)
        self.nprobe = int(nprobe)
        self.mmap = mmap
        super().__init__(dim, metric, device)

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"nlist": self.nlist, "nprobe": self.nprobe}
        return {**params, "mmap": True} if self.mmap else params

    def _read_flags(self) -> int:
        return faiss.IO_FLAG_MMAP if self.mmap else 0

    def factory_string(self) -> str:
        return f"IVF{self.nlist},Flat"

    def _search_parameters(self) -> dict[str, int]:
        _check_positive(nprobe=self.nprobe)
        return {"nprobe": self.nprobe}

    def _min_training_rows(self) -> int:
        return self.nlist

    def _too_few_message(self, count: int) -> str:
        suggestion = max(1, min(int(4 * math.sqrt(count)), count // 39))
        return (
            f"{self.kind} with nlist={self.nlist} needs at least {self._min_training_rows()} "
            f"training vectors, got {count}; pass a smaller nlist (e.g. nlist={suggestion}) or use "
            "the 'flat' index"
        )


# IVFPQIndex ``refine`` values and their FAISS index_factory suffixes (IndexRefine).
_REFINE_FACTORY = {"sq8": ",Refine(SQ8)", "flat": ",RFlat"}


@INDEXES.register("ivf_pq")
class IVFPQIndex(IVFFlatIndex):
    """Inverted file with product-quantised residuals (Jégou, Douze & Schmid, "Product
    Quantization for Nearest Neighbor Search", TPAMI 2011).

    Args:
        dim: Embedding width ``D``; must be divisible by ``m``.
        metric: "cosine", "ip" or "l2" (FAISS's IVF-PQ scanner has no L1).
        device: "cpu" or "cuda[:N]".
        nlist: Number of coarse cells.
        m: Sub-quantisers per vector (bytes per code with ``nbits=8``).
        nbits: Bits per sub-quantiser code; training needs at least ``2**nbits`` vectors.
        nprobe: Cells visited per query (applied to the IVF part, refined or not).
        mmap: Memory-map the inverted lists (the PQ codes) when loading (see ``ivf_flat``).
            With ``refine`` only the PQ inverted lists are mapped: FAISS reads the refine
            codes (``IndexRefine``'s second index) into memory, so a loaded refined index holds
            ``n * dim`` bytes (``sq8``) or ``n * 4 * dim`` bytes (``flat``) in RAM.
        refine: Re-rank the IVF-PQ candidates with a finer copy of every vector (FAISS
            ``IndexRefine``, factory suffix ``,Refine(SQ8)`` / ``,RFlat``): "sq8" keeps an
            8-bit scalar-quantised copy (``dim`` bytes per vector, 4x smaller than flat),
            "flat" the full float vectors (exact re-ranking). None (default): no re-ranking.
            CPU only. Kept in ``params`` only when set.
        k_factor: With ``refine``, the IVF-PQ search returns ``k_factor * k`` candidates that
            the refine codes re-rank (settable between searches). Kept in ``params`` only with
            ``refine``.
    """

    kind = "ivf_pq"
    supported_metrics = ("cosine", "ip", "l2")

    def __init__(
        self,
        dim: int,
        metric: Metric | str = "cosine",
        device: str = "cpu",
        nlist: int = 100,
        m: int = 8,
        nbits: int = 8,
        nprobe: int = 8,
        mmap: bool = False,
        refine: str | None = None,
        k_factor: int = 4,
    ) -> None:
        _check_positive(m=m, nbits=nbits, k_factor=k_factor)
        if int(dim) % int(m) != 0:
            raise ValueError(f"ivf_pq needs dim divisible by m, got dim={dim}, m={m}")
        if refine is not None and refine not in _REFINE_FACTORY:
            raise ValueError(
                f"ivf_pq refine must be one of {', '.join(sorted(_REFINE_FACTORY))} or none, "
                f"got {refine!r}"
            )
        if refine is not None and str(device) != "cpu":
            raise ValueError(f"ivf_pq with refine={refine!r} runs on CPU only; use device='cpu'")
        self.m = int(m)
        self.nbits = int(nbits)
        self.refine = refine
        self.k_factor = int(k_factor)
        super().__init__(dim, metric, device, nlist=nlist, nprobe=nprobe, mmap=mmap)

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "nlist": self.nlist, "m": self.m, "nbits": self.nbits, "nprobe": self.nprobe
        }
        if self.mmap:
            params["mmap"] = True
        if self.refine is not None:
            params.update(refine=self.refine, k_factor=self.k_factor)
        return params

    def factory_string(self) -> str:
        suffix = "" if self.refine is None else _REFINE_FACTORY[self.refine]
        return f"IVF{self.nlist},PQ{self.m}x{self.nbits}{suffix}"

    def _configure(self, cpu_index: Any) -> None:
        # Polysemous codes (Douze et al., 2016) cost seconds of training and are only used when
        # a Hamming threshold filters candidates, which this index never sets.
        ivf_pq = faiss.downcast_index(faiss.extract_index_ivf(cpu_index))
        ivf_pq.do_polysemous_training = False

    def _search_parameters(self) -> dict[str, int]:
        settings = super()._search_parameters()  # nprobe reaches the IVF part inside IndexRefine
        if self.refine is not None:
            _check_positive(k_factor=self.k_factor)
            settings["k_factor_rf"] = self.k_factor
        return settings

    def _min_training_rows(self) -> int:
        return max(self.nlist, 2**self.nbits)

    def _too_few_message(self, count: int) -> str:
        if count < 2**self.nbits:
            return (
                f"ivf_pq with nbits={self.nbits} needs at least {2**self.nbits} training vectors, "
                f"got {count}; pass a smaller nbits (e.g. nbits={max(1, int(math.log2(count)))}) "
                "or use 'ivf_flat'"
            )
        return super()._too_few_message(count)


@INDEXES.register("hnsw")
class HNSWIndex(FaissIndex):
    """Hierarchical navigable small-world graph (Malkov & Yashunin, TPAMI 2018); CPU only.

    Args:
        dim: Embedding width ``D``.
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" (FAISS has no GPU HNSW).
        M: Graph neighbours per node.
        ef_construction: Candidate list size while building.
        ef_search: Candidate list size while searching (settable between searches).
    """

    kind = "hnsw"
    supports_gpu = False

    def __init__(
        self,
        dim: int,
        metric: Metric | str = "cosine",
        device: str = "cpu",
        M: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
    ) -> None:
        _check_positive(M=M, ef_construction=ef_construction, ef_search=ef_search)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        super().__init__(dim, metric, device)

    @property
    def params(self) -> dict[str, int]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def factory_string(self) -> str:
        return f"HNSW{self.M}"

    def _configure(self, cpu_index: Any) -> None:
        faiss.downcast_index(cpu_index).hnsw.efConstruction = self.ef_construction

    def _search_parameters(self) -> dict[str, int]:
        _check_positive(ef_search=self.ef_search)
        return {"efSearch": self.ef_search}
