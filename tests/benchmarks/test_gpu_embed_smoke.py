"""benchmarks/gpu_embed.py runs end to end on the CPU (``--device cpu --quick``) and counts the
FLOPs of ViT-B/16 as the closed form of its matmuls does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_embed.py"


def vit_b16_flops(size: int, depth: int = 12, width: int = 768, patch: int = 16) -> float:
    """2 x multiply-adds of ViT-B/16's matmuls for one image: patch embedding, then per block
    qkv (3D), projection (D), MLP (4D, twice) over T tokens and attention (T x T, twice)."""
    patches = (size // patch) ** 2
    tokens = patches + 1  # the class token
    per_block = 2 * tokens * width * width * (3 + 1 + 4 + 4) + 2 * 2 * tokens * tokens * width
    return depth * per_block + 2 * patches * width * 3 * patch * patch


@pytest.mark.slow
def test_quick_cpu_run_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False, cwd=SCRIPT.parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["peak_tflops"] is None
    rows = result["rows"]
    for model in ("lite0", "vit_b16"):
        mine = [row for row in rows if row["model"] == model]
        assert [(row["source"], row["dtype"]) for row in mine] == [
            ("tensors", "fp32"), ("tensors", "fp32"), ("tensors", "bf16"),
            ("jpeg", "fp32"), ("jpeg", "fp32"), ("jpeg", "bf16"), ("jpeg", "fp32"), ("jpeg", "bf16"),
        ]
        assert all(row["images_per_s"] > 0 and row["roofline_fraction"] is None for row in mine)
        assert mine[0]["ratio"] == pytest.approx(1) and mine[3]["ratio"] == pytest.approx(1)
        for row in mine:
            assert row["tflops"] == pytest.approx(row["images_per_s"] * row["gflops_per_image"] / 1e3)
    vit = next(row for row in rows if row["model"] == "vit_b16")
    assert vit["gflops_per_image"] * 1e9 == pytest.approx(vit_b16_flops(64), rel=1e-3)
    assert "decode_jpeg(device=cpu)" in done.stdout and "GFLOPs per image" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True,
        timeout=300, check=False, cwd=SCRIPT.parents[1],
    )
    assert done.returncode == 2
    assert "no CUDA device here; use --device cpu" in done.stderr
    assert "Traceback" not in done.stderr
