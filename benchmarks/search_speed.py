"""Search speed and memory: lookalike against raw FAISS and a NumPy full-matrix baseline.

Every image queries the whole gallery (the SOP protocol, 60k x 60k in the issue; scaled down by
default to fit a small machine: ``--n 60000`` for the full size). Each method runs in its own
process so its peak memory is its own; all are timed in this same run and printed as ratios.

    python benchmarks/search_speed.py [--n 20000] [--dim 128] [--k 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from collections.abc import Callable

import numpy as np


def _vectors(n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def numpy_full_matrix(vectors: np.ndarray, k: int) -> np.ndarray:
    """The naive baseline: the whole (N, N) similarity matrix, then a partial sort per row."""
    scores = vectors @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def raw_faiss(vectors: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(vectors, k)[1]


def lookalike_flat(vectors: np.ndarray, k: int) -> np.ndarray:
    from lookalike.index import create_index

    index = create_index("flat", vectors.shape[1], "cosine")
    index.add(vectors)
    return index.search(vectors, k).indices


def lookalike_exact_torch(vectors: np.ndarray, k: int) -> np.ndarray:
    from lookalike.index.exact import exact_search

    return exact_search(vectors, vectors, k, "cosine").indices


def lookalike_hnsw(vectors: np.ndarray, k: int) -> np.ndarray:
    from lookalike.index import create_index

    index = create_index("hnsw", vectors.shape[1], "cosine", M=32, ef_search=128)
    index.add(vectors)
    return index.search(vectors, k).indices


METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "numpy full matrix": numpy_full_matrix,
    "raw faiss IndexFlatIP": raw_faiss,
    "lookalike flat": lookalike_flat,
    "lookalike exact_torch": lookalike_exact_torch,
    "lookalike hnsw": lookalike_hnsw,
}


def _run(name: str, n: int, dim: int, k: int, queue: mp.Queue) -> None:
    vectors = _vectors(n, dim)
    # Libraries are imported before the clock starts: the search is timed, not Python's imports.
    import faiss  # noqa: F401

    if name.startswith("lookalike"):
        import lookalike.index  # noqa: F401
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    indices = METHODS[name](vectors, k)
    seconds = time.perf_counter() - start
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    queue.put((seconds, peak_mib, indices))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="gallery = query count")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    embeddings_mib = args.n * args.dim * 4 / 2**20
    print(f"{args.n} x {args.n} search, dim {args.dim}, k {args.k}; embeddings {embeddings_mib:.0f} MiB")
    rows = {}
    for name in METHODS:
        queue: mp.Queue = context.Queue()
        process = context.Process(target=_run, args=(name, args.n, args.dim, args.k, queue))
        process.start()
        rows[name] = queue.get()
        process.join()
    reference = rows["raw faiss IndexFlatIP"][2]
    baseline_numpy = rows["numpy full matrix"][0]
    baseline_faiss = rows["raw faiss IndexFlatIP"][0]
    header = f"{'method':24s} {'seconds':>8s} {'vs numpy':>9s} {'vs faiss':>9s} {'peak MiB':>9s} {'recall@k':>9s}"
    print(header)
    for name, (seconds, peak, indices) in rows.items():
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(indices, reference)])
        print(
            f"{name:24s} {seconds:8.2f} {baseline_numpy / seconds:8.2f}x {baseline_faiss / seconds:8.2f}x "
            f"{peak:9.0f} {recall:9.4f}"
        )
    print("ratios > 1 mean faster than the baseline; recall@k is overlap with exact FAISS results")


if __name__ == "__main__":
    main()
