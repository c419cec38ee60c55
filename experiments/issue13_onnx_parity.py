"""Issue 13 evidence: the ONNX fp32 export gives the same Caltech all-vs-all metrics as PyTorch.

Takes two embedding folders of the same images (one from the PyTorch model, one from its ONNX
export through ONNX Runtime), checks they list the same images, and prints every metric of the
all-vs-all protocol for both, on the 101 object classes and with ``BACKGROUND_Google``, plus the
rows where the two differ (JPEG draft decoding of large photos is the usual cause)::

    lookalike export efficientnet_lite:lite0 --pool gap -o runs/exp13/lite0_onnx
    lookalike embed ../shared/data/caltech101 --model efficientnet_lite:lite0 --pool gap -o runs/exp13/torch
    lookalike embed ../shared/data/caltech101 --checkpoint runs/exp13/lite0_onnx -o runs/exp13/onnx
    python experiments/issue13_onnx_parity.py runs/exp13/torch runs/exp13/onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.metrics.retrieval import evaluate_retrieval

BACKGROUND = "BACKGROUND_Google"


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("torch_embeddings", type=Path)
    parser.add_argument("onnx_embeddings", type=Path)
    args = parser.parse_args()
    torch_set, onnx_set = EmbeddingSet.load(args.torch_embeddings), EmbeddingSet.load(args.onnx_embeddings)
    if torch_set.ids != onnx_set.ids or torch_set.labels != onnx_set.labels:
        raise SystemExit("the two folders do not hold the same images in the same order")
    reference, exported = unit(torch_set.embeddings), unit(onnx_set.embeddings)
    cosine = (reference * exported).sum(1)
    moved = np.flatnonzero(cosine < 0.9999)
    same = np.flatnonzero(cosine >= 0.9999)
    print(f"{len(moved)} of {len(cosine)} rows with cosine < 0.9999 (min {cosine.min():.4f}); "
          f"max |difference| on the others {np.abs(reference[same] - exported[same]).max():.2e}")
    objects = [i for i, label in enumerate(torch_set.labels) if label != BACKGROUND]
    for subset, rows in ((f"101 classes ({len(objects)})", objects),
                         (f"all ({len(cosine)})", list(range(len(cosine))))):
        labels = [torch_set.labels[i] for i in rows]
        for name, rows_of in (("pytorch", reference), ("onnx", exported)):
            x = np.ascontiguousarray(rows_of[rows])
            scores = evaluate_retrieval(x, labels, x, labels, self_index=np.arange(len(rows)))
            print(f"{name:8s} {subset:20s}",
                  {key: round(value, 4) for key, value in scores.items() if not key.startswith("n_")})


if __name__ == "__main__":
    main()
