"""GPU embedding throughput: images/s and the fraction of the device's bf16 roofline reached.

For EfficientNet-Lite0 (ImageNet weights) and a ViT-B/16 with random weights (timm
``vit_base_patch16_224``, pretrained=False), in one run:

* pre-decoded tensors (uint8, pinned host memory): a plain PyTorch loop (pageable copy, fp32,
  ``torch.no_grad``) beside the device loop lookalike's extraction runs (non-blocking copy from
  pinned memory, normalisation on the device, channels-last, ``inference_mode``) in fp32, bf16
  and fp16 (autocast);
* JPEG files: a plain ``DataLoader`` loop (PIL decode + eval transform, fp32) beside
  ``lookalike.embed.extract.embed_image_set`` (core budget, draft decoding, pinned memory, in
  fp32 and with its autocast dtype), and JPEGs decoded on the device
  (``torchvision.io.decode_jpeg(device=...)``, nvJPEG on CUDA) then resized there.

Each row gives images/s, the ratio to the plain loop of the same input, achieved TFLOP/s (FLOPs
per image counted once by ``torch.utils.flop_counter.FlopCounterMode``) and the fraction of the
device's dense bf16 peak (a table keyed by device name, or ``--peak-tflops``). Timings are
bracketed by ``torch.cuda.synchronize()`` on CUDA, after warm-up batches.

    python benchmarks/gpu_embed.py                       # CUDA, 1024 images per row
    python benchmarks/gpu_embed.py --device cpu --quick  # 2 images of 64 px: checks the script
    python benchmarks/gpu_embed.py --images DIR --json results.json --peak-tflops 312
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _images import write_random_jpegs
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF

from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder

MODELS = {
    "lite0": ("efficientnet_lite:lite0", "pretrained"),
    "vit_b16": ("timm:vit_base_patch16_224", None),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
"""Dense (no sparsity) bf16 tensor-core peak by device name (NVIDIA data sheets; SXM parts)."""


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16 peak: ``override``, else the table entry its name contains."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    """FLOPs of one image's forward pass (a multiply-add counts 2), on the CPU in fp32; attention
    runs as plain matmuls here so that the counter sees it (it skips the CPU's fused kernel)."""
    model = model.to("cpu").float().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def timed(run: Callable[[], int], device: torch.device) -> float:
    """Images per second of ``run`` (which returns the images it embedded), synchronised."""
    synchronize(device)
    start = time.perf_counter()
    images = run()
    synchronize(device)
    return images / (time.perf_counter() - start)


def batches(tensors: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(tensors), batch_size):
        yield tensors[start : start + batch_size]


def plain_tensor_loop(model: Embedder, images: torch.Tensor, batch: int, device: torch.device) -> int:
    """What people write: pageable copy, fp32, normalise on the host side of the copy."""
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for chunk in batches(images, batch):
            model(((chunk.float() / 255 - mean) / std).to(device))
    return len(images)


def device_tensor_loop(
    model: Embedder, images: torch.Tensor, batch: int, device: torch.device, dtype: torch.dtype | None
) -> int:
    """lookalike's extraction loop: non-blocking copy of pinned uint8, normalise on the device,
    channels-last, inference mode, autocast."""
    mean = torch.tensor(model.preprocessing.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.preprocessing.std, device=device).view(1, 3, 1, 1) * 255
    model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        for chunk in batches(images, batch):
            on_device = chunk.to(device, non_blocking=True).float()
            inputs = ((on_device - mean) / std).contiguous(memory_format=torch.channels_last)
            model(inputs)
    return len(images)


class _PlainFiles(Dataset):
    def __init__(self, paths: list[Path], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def plain_file_loop(model: Embedder, paths: list[Path], batch: int, workers: int, device: torch.device) -> int:
    loader = DataLoader(_PlainFiles(paths, model.eval_transform()), batch_size=batch, num_workers=workers)
    model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for chunk in loader:
            model(chunk.to(device))
    return len(paths)


def device_decode_loop(
    model: Embedder, paths: list[Path], batch: int, device: torch.device, dtype: torch.dtype | None
) -> int:
    """JPEG bytes -> ``decode_jpeg(device=...)`` (nvJPEG on CUDA) -> resize, crop and normalise
    on the device, then the model."""
    pre = model.preprocessing
    data = [read_file(str(path)) for path in paths]
    model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        for start in range(0, len(data), batch):
            decoded = decode_jpeg(data[start : start + batch], mode=ImageReadMode.RGB, device=device)
            resized = [
                TF.center_crop(TF.resize(image, pre.resize_size, antialias=True), pre.input_size)
                for image in decoded
            ]
            inputs = TF.normalize(torch.stack(resized).float() / 255, list(pre.mean), list(pre.std))
            model(inputs.contiguous(memory_format=torch.channels_last))
    return len(paths)


def decoded_tensors(paths: list[Path], model: Embedder, pin: bool) -> torch.Tensor:
    """The images resized and cropped as uint8 ``(N, 3, S, S)``, pinned for CUDA."""
    pre = model.preprocessing
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            pixels = TF.pil_to_tensor(image.convert("RGB"))
        tensors.append(TF.center_crop(TF.resize(pixels, pre.resize_size, antialias=True), pre.input_size))
    stacked = torch.stack(tensors)
    return stacked.pin_memory() if pin else stacked


def rows_for_model(key: str, args: argparse.Namespace, root: Path, device: torch.device) -> list[dict[str, Any]]:
    name, weights = MODELS[key]
    options = {"img_size": args.image_size} if args.image_size and key == "vit_b16" else {}
    model = create_embedder(name, pool="auto", weights=weights, **options).eval()
    if args.image_size:
        model.preprocessing = replace(model.preprocessing, input_size=args.image_size)
    size = model.preprocessing.input_size
    flops = flops_per_image(model, size)
    model.to(device)
    image_set = load_source(root)
    image_set.records = image_set.records[: args.n]
    paths = [record.path for record in image_set]
    tensors = decoded_tensors(paths, model, pin=device.type == "cuda")
    dtypes = args.dtypes or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    rows: list[dict[str, Any]] = []

    def add(source: str, method: str, dtype: str, images_per_s: float, baseline: float) -> None:
        rows.append({"model": key, "source": source, "method": method, "dtype": dtype,
                     "images_per_s": images_per_s, "ratio": images_per_s / baseline,
                     "gflops_per_image": flops / 1e9, "tflops": images_per_s * flops / 1e12})

    warm = tensors[: args.batch_size]
    plain_tensor_loop(model, warm, args.batch_size, device)
    for dtype in dtypes:
        device_tensor_loop(model, warm, args.batch_size, device, DTYPES[dtype])
    plain = timed(lambda: plain_tensor_loop(model, tensors, args.batch_size, device), device)
    add("tensors", "plain PyTorch loop", "fp32", plain, plain)
    for dtype in dtypes:
        speed = timed(lambda d=DTYPES[dtype]: device_tensor_loop(model, tensors, args.batch_size, device, d), device)
        add("tensors", "device loop (pinned, non_blocking, channels_last)", dtype, speed, plain)

    workers = args.workers
    plain_files = timed(lambda: plain_file_loop(model, paths, args.batch_size, workers, device), device)
    add("jpeg", f"plain DataLoader loop ({workers} workers)", "fp32", plain_files, plain_files)
    for amp in (False, True):
        holder: dict[str, Any] = {}

        def run_lookalike(amp: bool = amp, holder: dict[str, Any] = holder) -> int:
            result = embed_image_set(model, image_set, batch_size=args.batch_size, device=device,
                                     amp=amp, num_workers="auto")
            holder["amp"] = {"bfloat16": "bf16", "float16": "fp16"}.get(result.info["amp"], "fp32")
            return len(result)

        speed = timed(run_lookalike, device)
        add("jpeg", "lookalike embed_image_set", holder["amp"], speed, plain_files)
    for dtype in dtypes[:2]:
        device_decode_loop(model, paths[: args.batch_size], args.batch_size, device, DTYPES[dtype])
        speed = timed(lambda d=DTYPES[dtype]: device_decode_loop(model, paths, args.batch_size, device, d), device)
        add("jpeg", f"decode_jpeg(device={device.type}) + resize on device", dtype, speed, plain_files)
    model.to("cpu")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="A few images per row: checks the script")
    parser.add_argument("--images", type=Path, help="A folder per class of JPEGs (default: random JPEGs)")
    parser.add_argument("--n", type=int, default=1024, help="Images per row")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8, help="Workers of the plain DataLoader loop")
    parser.add_argument("--models", default="lite0,vit_b16", help=f"Comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--dtypes", default=None, help="Comma-separated fp32,bf16,fp16 (default: all on CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="Dense bf16 peak of the device")
    parser.add_argument("--image-size", type=int, default=None, help="Input side instead of the models' own")
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON here")
    args = parser.parse_args()
    if args.quick:  # checks the script end to end, not the speed
        args.n, args.batch_size, args.workers = 2, 2, 0
        args.image_size = args.image_size or 64
    args.dtypes = [d for d in args.dtypes.split(",") if d] if args.dtypes else None
    unknown = [m for m in args.models.split(",") if m not in MODELS] + [
        d for d in args.dtypes or [] if d not in DTYPES
    ]
    if unknown:
        parser.error(f"unknown model or dtype {unknown[0]!r}; models: {', '.join(MODELS)}; dtypes: {', '.join(DTYPES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    peak = peak_tflops(device, args.peak_tflops)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.images or write_random_jpegs(Path(scratch) / "images", args.n, classes=4)
        for key in args.models.split(","):
            rows.extend(rows_for_model(key, args, root, device))
    for row in rows:
        row["roofline_fraction"] = None if peak is None else row["tflops"] / peak

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, {torch.get_num_threads()} threads, {args.n} images, batch {args.batch_size}, "
          f"dense bf16 peak {'n/a' if peak is None else f'{peak:.0f} TFLOP/s'}")
    print(f"{'model':8} {'input':7} {'method':58} {'dtype':5} {'img/s':>9} {'ratio':>6} {'TFLOP/s':>8} {'roofline':>8}")
    for row in rows:
        fraction = "n/a" if row["roofline_fraction"] is None else f"{row['roofline_fraction']:.1%}"
        print(f"{row['model']:8} {row['source']:7} {row['method']:58} {row['dtype']:5} "
              f"{row['images_per_s']:9.1f} {row['ratio']:5.2f}x {row['tflops']:8.3f} {fraction:>8}")
    print("GFLOPs per image: " + ", ".join(
        sorted({f"{row['model']} {row['gflops_per_image']:.2f}" for row in rows})))
    if args.json:
        args.json.write_text(json.dumps({"device": name, "peak_tflops": peak, "rows": rows}, indent=1))
    assert all(math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0 for row in rows)


if __name__ == "__main__":
    main()
