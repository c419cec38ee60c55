"""``lookalike export``: a model to an ONNX folder, checked against PyTorch, optionally int8."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.export import export_model


@friendly_errors
def export(
    model: Annotated[str, typer.Argument(help="A saved model folder, a training checkpoint (.ckpt), or a backbone name (efficientnet_lite:lite0).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The export folder.")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    pool: Annotated[str | None, typer.Option(help="Pooling of a backbone name [default: auto].")] = None,
    head: Annotated[str | None, typer.Option(help="Head of a backbone name [default: none].")] = None,
    weights: Annotated[str | None, typer.Option(help="Weights of a backbone name: pretrained, none, or a local file [default: pretrained].")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or later).")] = 18,
    sample: Annotated[str | None, typer.Option(help="Images the parity check embeds [default: the calibration images, else random tensors].")] = None,
    sample_size: Annotated[int, typer.Option(help="Images of --sample used (spread over it).")] = 64,
    tolerance: Annotated[float, typer.Option(help="Largest |ONNX - PyTorch| accepted in an embedding.")] = 1e-4,
    quantize: Annotated[str | None, typer.Option(help="int8: quantise the checked export.")] = None,
    quantize_mode: Annotated[str, typer.Option(help="static (calibrated on --calibration, QDQ, per-channel) or dynamic.")] = "static",
    calibration: Annotated[str | None, typer.Option(help="Your images that calibrate int8 (a folder per class, a manifest).")] = None,
    calibration_size: Annotated[int, typer.Option(help="Images of --calibration used to calibrate.")] = 128,
    calibration_method: Annotated[str, typer.Option(help="minmax, percentile or entropy.")] = "minmax",
    holdout: Annotated[str | None, typer.Option(help="Images int8's retrieval cost is measured on [default: --calibration images not used to calibrate].")] = None,
    holdout_size: Annotated[int, typer.Option(help="Images of the holdout used.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
) -> None:
    """Export MODEL to ONNX (dynamic batch, preprocessing saved beside it); fails unless ONNX
    Runtime gives PyTorch's embeddings and top-k lists on a sample."""
    named = {"pool": pool, "head": head, "weights": weights}
    given = {name: value for name, value in named.items() if value is not None}
    spec = (
        ModelSpec(backbone=model, **given)
        if given or (":" in model and not Path(model).exists())
        else model
    )
    if quantize is not None and quantize.lower() in ("none", "fp32"):
        quantize = None
    with progress_bars() as progress:
        result = export_model(
            spec, output, format=format, opset=opset, sample=sample, sample_size=sample_size,
            tolerance=tolerance, quantize=quantize, quantize_mode=quantize_mode,
            calibration=calibration, calibration_size=calibration_size,
            calibration_method=calibration_method, holdout=holdout, holdout_size=holdout_size,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
    parity = result.parity
    console.print(
        f"parity on {parity.images} {parity.sample}: max |ONNX - PyTorch| "
        f"{parity.max_abs_difference:.1e}, top-{parity.k} lists identical"
    )
    cost = result.retrieval_cost
    if cost is not None:
        table = Table(title=f"int8 against fp32 on {cost.images} {cost.evaluated_on} images")
        table.add_column("metric")
        table.add_column("fp32", justify="right")
        table.add_column("int8", justify="right")
        for name in cost.fp32:
            table.add_row(name, f"{cost.fp32[name]:.4f}", f"{cost.int8[name]:.4f}")
        table.add_row("top-1 agreement", "", f"{cost.top1_agreement:.4f}")
        table.add_row("cosine to fp32 (min / mean)", "", f"{cost.cosine_min:.4f} / {cost.cosine_mean:.4f}")
        console.print(table)
    console.print(
        f"{result.precision} ONNX export (fingerprint {result.fingerprint}) written to "
        f"[bold]{result.folder}[/]"
    )
