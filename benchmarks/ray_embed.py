"""The Ray engine against the local path: same model, same images, same shard settings.

Embeds the images into embedding folders with ``embed_image_set`` (the local path, this
process, its core plan) and with ``embed_image_set_ray`` (Ray started on this machine, or joined
at ``--address``, ``--actors`` model actors), once each or, with ``--abba``, in the order local,
Ray, Ray, local (so that a load drifting on a shared machine cancels out). Prints the wall times
(the Ray one includes starting Ray and the actors), their ratio (> 1: Ray is faster), the
largest difference between the two embeddings, and the counts: rows embedded and skipped, ids
missing, duplicated or out of order against the local path, the first row of every shard.

    python benchmarks/ray_embed.py [--images DIR] [--n 1000] [--actors 2] [--abba]

``--images`` defaults to ``../shared/data/caltech101`` beside the checkout; ``--n`` images are
taken evenly across it (every class represented), ``--n 0`` takes them all.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.embed.ray_engine import embed_image_set_ray
from lookalike.models import create_embedder

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101"


def shard_starts(folder: Path) -> list[int]:
    """The first row of each shard file in ``folder/shards``, in file order."""
    starts = []
    for path in sorted((folder / "shards").iterdir()):
        with np.load(path) as shard:
            starts.append(int(shard["start"]))
    return starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=CALTECH, help="A folder per class")
    parser.add_argument("--n", type=int, default=1000, help="Images, spread evenly (0: all)")
    parser.add_argument("--model", default="efficientnet_lite:lite0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--address", default=None, help="A Ray cluster (default: Ray on this machine)")
    parser.add_argument("--abba", action="store_true",
                        help="Run local, Ray, Ray, local and average (a drifting load cancels)")
    args = parser.parse_args()

    images = load_source(args.images)
    if args.n and args.n < len(images):
        images = images.select(np.linspace(0, len(images) - 1, args.n).round().astype(int).tolist())
    for record in images:  # every run reads the files from the page cache
        record.path.read_bytes()
    model = create_embedder(args.model, pool="gap").eval()
    # shards close by size only, so that both engines cut the same ones
    settings = {"batch_size": args.batch_size, "shard_size": args.shard_size, "device": "cpu",
                "shard_seconds": 1e9}
    order = ["local", "ray", "ray", "local"] if args.abba else ["local", "ray"]
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    results, starts = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for run, engine in enumerate(order):
            folder = Path(scratch) / f"{engine}_{run}"
            begin = time.perf_counter()
            if engine == "local":
                result = embed_image_set(model, images, output_dir=folder, **settings)
            else:
                result = embed_image_set_ray(model, images, output_dir=folder, **settings,
                                             address=args.address, actors=args.actors)
            seconds[engine].append(time.perf_counter() - begin)
            print(f"run {run}: {engine} {seconds[engine][-1]:.1f} s", flush=True)
            results.setdefault(engine, result)
            starts.setdefault(engine, shard_starts(folder))
            assert result.ids == results[engine].ids
            assert np.array_equal(result.embeddings, results[engine].embeddings)

    n, local, ray = len(images), results["local"], results["ray"]
    local_s, ray_s = float(np.mean(seconds["local"])), float(np.mean(seconds["ray"]))
    print(f"{args.model}, {n} images of {args.images}, batch {args.batch_size}, "
          f"shards of {args.shard_size}, {args.actors} Ray actors, {len(order) // 2} run(s) each")
    print(f"local path : {local_s:7.1f} s  ({n / local_s:6.1f} images/s)  runs {seconds['local']}")
    print(f"Ray engine : {ray_s:7.1f} s  ({n / ray_s:6.1f} images/s, with Ray and actor start-up)"
          f"  runs {seconds['ray']}")
    print(f"ratio (local / Ray wall time): {local_s / ray_s:.2f}x")
    print(f"rows embedded: local {len(local)}, Ray {len(ray)}; skipped: local "
          f"{len(local.info['skipped'])}, Ray {len(ray.info['skipped'])}")
    print(f"shard starts: local {starts['local']}, Ray {starts['ray']}, same {starts['local'] == starts['ray']}")
    print(f"ids: same order {ray.ids == local.ids}, missing {len(set(local.ids) - set(ray.ids))}, "
          f"duplicated {len(ray.ids) - len(set(ray.ids))}")
    print(f"max |difference| of embeddings: {np.abs(ray.embeddings - local.embeddings).max():.2e}, "
          f"allclose(rtol=1e-4, atol=1e-5): {np.allclose(ray.embeddings, local.embeddings, 1e-4, 1e-5)}")


if __name__ == "__main__":
    main()
