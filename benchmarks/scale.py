"""Million-scale on one machine: ANN indexes against exact search, and SOP-sized exact evaluation
in bounded memory, each figure beside its baseline measured in the same run.

Part 1, ``--n`` x ``--dim`` synthetic rows (seeded; clustered like real embeddings, cosine):
FAISS flat (the exact baseline and the ground truth), FAISS IVF-PQ trained on a sample and
searched memory-mapped from its saved folder (``mmap=true``), the same IVF-PQ re-ranking
``k_factor`` x k candidates with an 8-bit scalar-quantised copy (``refine=sq8``; ``--refine-sweep``
tries nprobe 16-64 x k_factor 4-16), and Milvus Lite (FLAT and IVF_FLAT).
For each: build time, resident memory, queries/s and recall@10 against exact search, as
10-recall@10 (the overlap of the top-10 sets) and 1-recall@10 (the true nearest neighbour within
the top 10, FAISS's usual figure).

Part 2, ``--sop`` x ``--sop-dim`` (60,502 x 512, Stanford Online Products' test split: ~11
images per class): the library's exact all-vs-all evaluation (:func:`lookalike.ranking.rank`,
itself excluded, then :func:`lookalike.metrics.retrieval_metrics`) against raw FAISS
``IndexFlatIP`` top-k search of the same rows: wall time and peak memory beside the size of the
embeddings.

Each measurement runs in its own process so its peak resident memory (``ru_maxrss``) is its
own; "work memory" is that peak less the process's memory before its data was made (Python and
the libraries).

    python benchmarks/scale.py                 # 1M x 128 and 60,502 x 512 (minutes)
    python benchmarks/scale.py --quick         # 100k x 128 and 12,000 x 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MB = 2**20
SEED = 0
K = 10


def current_rss() -> tuple[float, float]:
    """``(resident, anonymous)`` MiB of this process now (file-backed pages: resident - anon)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["RssAnon"]


def peak_rss() -> float:
    """Peak resident MiB of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clustered_rows(n: int, dim: int, seed: int, classes: int, block: int = 8_192) -> np.ndarray:
    """``(n, dim)`` L2-normalised float32 rows around ``classes`` centres, made block by block
    (no float64 copy of the whole array)."""
    centres = np.random.default_rng(SEED).standard_normal((classes, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        labels = class_of(np.arange(start, stop), classes, n)
        rows[start:stop] = centres[labels]
        rows[start:stop] += 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        rows[start:stop] /= np.linalg.norm(rows[start:stop], axis=1, keepdims=True)
    return rows


def class_of(rows: np.ndarray, classes: int, n: int) -> np.ndarray:
    """The class of each of ``n`` rows: consecutive rows share a class (SOP's ~11 per product)."""
    return rows * classes // n


def gallery_and_queries(args: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    classes = max(args["n"] // 100, 1)
    gallery = clustered_rows(args["n"], args["dim"], seed=1, classes=classes)
    queries = clustered_rows(args["queries"], args["dim"], seed=2, classes=classes)
    return gallery, queries


def timed_search(search: Callable[[np.ndarray, int], np.ndarray], queries: np.ndarray) -> tuple[
    np.ndarray, float
]:
    search(queries[:10], K)  # warm up (thread pools, first-touch of mapped pages is measured)
    started = time.perf_counter()
    found = search(queries, K)
    return found, len(queries) / (time.perf_counter() - started)


def recalls(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
    first = np.mean([truth[i, 0] in found[i] for i in range(len(truth))])
    return {"recall@10": float(overlap), "1-recall@10": float(first)}


# ---- workers: each runs in a fresh process and returns one row of the table -----------------


def worker_flat(args: dict[str, Any]) -> dict[str, Any]:
    from lookalike.index import create_index

    before = current_rss()[0]
    gallery, queries = gallery_and_queries(args)
    started = time.perf_counter()
    index = create_index("flat", args["dim"], "cosine")
    index.add(gallery)
    build = time.perf_counter() - started
    found, qps = timed_search(lambda q, k: index.search(q, k).indices, queries)
    np.save(Path(args["work"]) / "truth.npy", found)
    return {"build_s": build, "qps": qps, "peak_mb": peak_rss() - before,
            "recall@10": 1.0, "1-recall@10": 1.0}


def worker_ivf_pq_build(args: dict[str, Any]) -> dict[str, Any]:
    from lookalike.index import create_index, save_index

    before = current_rss()[0]
    gallery, _ = gallery_and_queries(args)
    started = time.perf_counter()
    variant = args.get("variant", "ivf_pq")  # "ivf_pq" or "ivf_pq_refine": its params and folder
    index = create_index("ivf_pq", args["dim"], "cosine", mmap=True, **args[variant])
    sample = np.random.default_rng(SEED).choice(len(gallery), args["train"], replace=False)
    index.train(gallery[np.sort(sample)])
    index.add(gallery)
    build = time.perf_counter() - started
    save_index(index, Path(args["work"]) / variant, [str(i) for i in range(len(gallery))])
    return {"build_s": build, "peak_mb": peak_rss() - before}


def worker_ivf_pq_search(args: dict[str, Any]) -> dict[str, Any]:
    from lookalike.index import load_index

    truth = np.load(Path(args["work"]) / "truth.npy")
    queries = clustered_rows(args["queries"], args["dim"], seed=2, classes=max(args["n"] // 100, 1))
    before_rss, before_anon = current_rss()
    index, _ = load_index(Path(args["work"]) / args.get("variant", "ivf_pq"))
    loaded_rss, loaded_anon = current_rss()
    settings = []
    for setting in args.get("sweep", [{}]):  # search-time settings (nprobe, k_factor) to try
        for name, value in setting.items():
            setattr(index, name, value)
        found, qps = timed_search(lambda q, k: index.search(q, k).indices, queries)
        settings.append({**setting, "qps": qps, **recalls(found, truth)})
    searched_rss, searched_anon = current_rss()
    return {**settings[0], "settings": settings, "loaded_mb": loaded_rss - before_rss,
            "loaded_anon_mb": loaded_anon - before_anon, "searched_mb": searched_rss - before_rss,
            "searched_anon_mb": searched_anon - before_anon}


def worker_milvus(args: dict[str, Any]) -> dict[str, Any]:
    from lookalike.index import create_index

    truth = np.load(Path(args["work"]) / "truth.npy")
    before = current_rss()[0]
    gallery, queries = gallery_and_queries(args)
    started = time.perf_counter()
    index = create_index("milvus", args["dim"], "cosine", **args["milvus"])
    index.add(gallery)
    found_first = index.search(queries[:1], K)  # Milvus loads / builds its index lazily
    build = time.perf_counter() - started
    del found_first
    found, qps = timed_search(lambda q, k: index.search(q, k).indices, queries)
    return {"build_s": build, "qps": qps, "peak_mb": peak_rss() - before,
            **recalls(found, truth)}


def sop_rows(args: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    n, classes = args["sop"], max(args["sop"] // 11, 1)
    labels = class_of(np.arange(n), classes, n)
    return clustered_rows(n, args["sop_dim"], seed=3, classes=classes), labels


def worker_sop_rank(args: dict[str, Any]) -> dict[str, Any]:
    from lookalike.metrics.retrieval import metrics_depth, retrieval_metrics
    from lookalike.ranking import rank

    before = current_rss()[0]
    embeddings, labels = sop_rows(args)
    made = peak_rss() - before
    started = time.perf_counter()
    queries = len(embeddings) if args["sop_queries"] is None else args["sop_queries"]
    ranking = rank(embeddings[:queries], embeddings, labels[:queries], labels, k=metrics_depth(),
                   exclude_rows=np.arange(queries))
    metrics = retrieval_metrics(ranking).summary
    return {"wall_s": time.perf_counter() - started, "peak_mb": peak_rss() - before,
            "data_peak_mb": made, "recall@1": metrics["recall@1"], "map@r": metrics["map@r"]}


def worker_sop_faiss(args: dict[str, Any]) -> dict[str, Any]:
    import faiss

    from lookalike.metrics.retrieval import metrics_depth

    before = current_rss()[0]
    embeddings, _ = sop_rows(args)
    started = time.perf_counter()
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    queries = len(embeddings) if args["sop_queries"] is None else args["sop_queries"]
    index.search(embeddings[:queries], metrics_depth() + 1)  # + 1: each row finds itself first
    return {"wall_s": time.perf_counter() - started, "peak_mb": peak_rss() - before}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "flat": worker_flat,
    "ivf_pq_build": worker_ivf_pq_build,
    "ivf_pq_search": worker_ivf_pq_search,
    "milvus": worker_milvus,
    "sop_rank": worker_sop_rank,
    "sop_faiss": worker_sop_faiss,
}


def run_worker(name: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its last stdout line is its JSON row."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--worker-args", json.dumps(args)],
        capture_output=True, text=True, check=False, timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery rows of part 1")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--sop", type=int, default=60_502, help="rows of part 2 (all vs all)")
    parser.add_argument("--sop-dim", type=int, default=512)
    parser.add_argument("--sop-queries", type=int, default=None,
                        help="rank only the first rows against all (a shorter run); all by default")
    parser.add_argument("--quick", action="store_true", help="100k x 128 and 12,000 x 512")
    parser.add_argument("--skip-milvus", action="store_true")
    parser.add_argument("--milvus-timeout", type=float, default=1800, help="seconds per Milvus run")
    parser.add_argument("--refine-nprobe", type=int, default=48,
                        help="nprobe of the IVF-PQ + Refine(SQ8) row")
    parser.add_argument("--refine-k-factor", type=int, default=16,
                        help="candidates per result re-ranked by Refine(SQ8)")
    parser.add_argument("--refine-m", type=int, default=None,
                        help="PQ sub-quantisers of the refined index (default dim/4)")
    parser.add_argument("--refine-sweep", action="store_true",
                        help="also search the refined index at nprobe 16-64 x k_factor 4/8/16")
    parser.add_argument("--part", choices=("all", "index", "eval"), default="all",
                        help="run part 1 (index), part 2 (eval) or both")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(WORKERS[options.worker](json.loads(options.worker_args))))
        return
    if options.quick:
        options.n, options.sop = 100_000, 12_000
    nlist = 1 << max(round(np.log2(np.sqrt(options.n))), 4)  # ~sqrt(N) cells: 1024 for 1M
    with tempfile.TemporaryDirectory(prefix="lookalike-scale-") as work:
        args = {
            "n": options.n, "dim": options.dim, "queries": options.queries, "work": work,
            "train": min(options.n, 64 * nlist),  # FAISS wants >= 39 per cell
            "ivf_pq": {"nlist": nlist, "m": options.dim // 2, "nbits": 8, "nprobe": 64},
            # IVF-PQ re-ranking its candidates with an 8-bit scalar-quantised copy (FAISS
            # IndexRefine, "Refine(SQ8)": dim bytes per vector, 4x smaller than flat); coarser
            # PQ codes (dim/4 bytes) suffice to pick candidates and scan ~4x faster than dim/2
            "ivf_pq_refine": {"nlist": nlist, "m": options.refine_m or options.dim // 4, "nbits": 8,
                              "nprobe": options.refine_nprobe, "refine": "sq8",
                              "k_factor": options.refine_k_factor},
            "sop": options.sop, "sop_dim": options.sop_dim, "sop_queries": options.sop_queries,
        }
        if options.part in ("all", "index"):
            report_part1(options, args)
    if options.part in ("all", "eval"):
        report_part2(options, args)


def report_part1(options: argparse.Namespace, args: dict[str, Any]) -> None:
    raw_mb = options.n * options.dim * 4 / MB
    print(f"part 1: {options.n:,} x {options.dim} float32 ({raw_mb:.0f} MiB), "
          f"{options.queries} queries, k={K}, cosine")
    flat = run_worker("flat", args)
    build = run_worker("ivf_pq_build", args)
    mapped = run_worker("ivf_pq_search", args)
    refine_args = {**args, "variant": "ivf_pq_refine"}
    refine_build = run_worker("ivf_pq_build", refine_args)
    chosen = {"nprobe": options.refine_nprobe, "k_factor": options.refine_k_factor}
    sweep = [chosen]
    if options.refine_sweep:
        sweep += [{"nprobe": p, "k_factor": f} for p in (16, 24, 32, 48, 64)
                  for f in (4, 8, 16)
                  if {"nprobe": p, "k_factor": f} != chosen]
    refined = run_worker("ivf_pq_search", {**refine_args, "sweep": sweep})
    rows = [("faiss flat (exact)", flat["build_s"], flat["peak_mb"], flat["qps"],
             flat["recall@10"], flat["1-recall@10"]),
            (f"faiss ivf_pq {args['ivf_pq']} build", build["build_s"], build["peak_mb"],
             None, None, None),
            ("faiss ivf_pq loaded mmap, search", None, mapped["searched_mb"], mapped["qps"],
             mapped["recall@10"], mapped["1-recall@10"]),
            (f"faiss ivf_pq+Refine(SQ8) {args['ivf_pq_refine']} build", refine_build["build_s"],
             refine_build["peak_mb"], None, None, None)]
    for setting in refined["settings"]:
        name = f"faiss ivf_pq+Refine(SQ8) mmap, nprobe {setting['nprobe']} k_factor " \
            f"{setting['k_factor']}"
        rows.append((name, None,
                     refined["searched_mb"] if setting is refined["settings"][0] else None,
                     setting["qps"], setting["recall@10"], setting["1-recall@10"]))
    if not options.skip_milvus:
        for index_type in ("FLAT", "IVF_FLAT"):
            extra = {"nlist": args["ivf_pq"]["nlist"], "nprobe": 32} if index_type != "FLAT" else {}
            name = f"milvus lite {index_type}"
            try:
                found = run_worker("milvus", {**args, "milvus": {"index_type": index_type,
                                                                   **extra}},
                                   timeout=options.milvus_timeout)
            except subprocess.TimeoutExpired:
                print(f"{name}: not finished within {options.milvus_timeout:.0f} s")
                continue
            rows.append((name, found["build_s"], found["peak_mb"], found["qps"],
                         found["recall@10"], found["1-recall@10"]))
    print(f"{'method':<60} {'build s':>8} {'mem MiB':>8} {'q/s':>9} {'R@10':>6} {'1-R@10':>7}"
          f" {'q/s vs flat':>11}")
    for name, seconds, memory, qps, recall, first in rows:
        print(f"{name:<60} {fmt(seconds, 1):>8} {fmt(memory, 0):>8} {fmt(qps, 0):>9} "
              f"{fmt(recall, 3):>6} {fmt(first, 3):>7} "
              f"{fmt(None if qps is None else qps / flat['qps'], 1):>11}")
    print(f"ivf_pq loaded memory-mapped: +{mapped['loaded_mb']:.0f} MiB resident after load "
          f"(+{mapped['loaded_anon_mb']:.0f} anonymous), +{mapped['searched_mb']:.0f} MiB after "
          f"{options.queries} queries (+{mapped['searched_anon_mb']:.0f} anonymous; the rest is "
          "index file pages the kernel can drop)")
    print(f"ivf_pq+Refine(SQ8) loaded memory-mapped: +{refined['loaded_mb']:.0f} MiB resident "
          f"after load (+{refined['loaded_anon_mb']:.0f} anonymous: the SQ8 codes, which FAISS "
          f"reads into memory), +{refined['searched_mb']:.0f} MiB after all its searches "
          f"(+{refined['searched_anon_mb']:.0f} anonymous); flat holds {raw_mb:.0f} MiB of vectors")


def report_part2(options: argparse.Namespace, args: dict[str, Any]) -> None:
    embeddings_mb = options.sop * options.sop_dim * 4 / MB
    queries = options.sop if options.sop_queries is None else options.sop_queries
    print(f"\npart 2: {queries:,} queries x {options.sop:,} x {options.sop_dim}, all vs all "
          f"(embeddings {embeddings_mb:.0f} MiB), ~11 images per class")
    ranked = run_worker("sop_rank", args)
    raw = run_worker("sop_faiss", args)
    print(f"{'method':<60} {'wall s':>8} {'peak MiB':>9} {'peak/emb':>9}")
    for name, row in (("lookalike rank + retrieval_metrics (exact, all metrics)", ranked),
                      ("raw faiss IndexFlatIP top-k search", raw)):
        print(f"{name:<60} {row['wall_s']:>8.1f} {row['peak_mb']:>9.0f} "
              f"{row['peak_mb'] / embeddings_mb:>9.2f}")
    print(f"lookalike / faiss wall time: {ranked['wall_s'] / raw['wall_s']:.2f}x; "
          f"recall@1 {ranked['recall@1']:.4f}, map@r {ranked['map@r']:.4f}; peak memory counts "
          "the embeddings themselves (made without a float64 copy)")


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
