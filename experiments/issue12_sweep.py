"""Issue 12 evidence: the best trial of the Caltech-101 sweep on the unseen test classes.

The sweep itself is the command line (``configs/sweep_caltech_lite0.yaml`` and
``configs/spaces/caltech_lite0.yaml``)::

    lookalike sweep --config configs/sweep_caltech_lite0.yaml \
        --space configs/spaces/caltech_lite0.yaml --trials 8 --startup-trials 2 -o runs/sweep_caltech

This script reads the finished study, takes its best trial's exported model (trained at 128 px)
and scores it on the recipe's unseen classes (class-disjoint, ``train_fraction 0.5,
val_fraction 0.1``: the last 50 classes, each image a query against all others) at
``--eval-size`` (224, as the recipe's 0.7324 / 0.9468 were measured), then prints one JSON line
with those metrics, the sweep's trials and pruning savings::

    python experiments/issue12_sweep.py runs/sweep_caltech
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from lookalike.config import resolve_config
from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.embed.spec import EmbedSpec
from lookalike.models import load_embedder
from lookalike.pipeline.sweep import load_study
from lookalike.pipeline.wise_ft import retrieval_metrics_of
from lookalike.report.sweep_report import pruning_savings
from lookalike.runs import CONFIG_FILE, MODEL_DIR
from lookalike.train.config import TrainConfig
from lookalike.train.validation import validation_set

REPORTED = ("recall@1", "map", "map@r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--eval-size", type=int, default=224)
    parser.add_argument("--trial", type=int, help="a trial's number instead of the best one")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started, cpu_started = time.monotonic(), time.process_time()
    study = load_study(args.sweep)
    best = study.best_trial if args.trial is None else study.trials[args.trial]
    run = args.sweep / best.user_attrs["run"]
    config = resolve_config(TrainConfig, run / CONFIG_FILE)
    embedder = load_embedder(run / MODEL_DIR).eval()
    embedder.preprocessing = replace(embedder.preprocessing, input_size=args.eval_size)
    data = config.data
    split = make_split(load_source(data.source), data.protocol, **data.protocol_args)
    metrics = retrieval_metrics_of(embedder, validation_set(split, "test"),
                                   EmbedSpec(batch_size=64, num_workers=1))
    trials = study.get_trials()
    spared_epochs, spared_seconds, trial_seconds = pruning_savings(
        trials, config.trainer.max_epochs)
    print(json.dumps({
        "trial": best.number, "is_best": best.number == study.best_trial.number,
        "val_map@r": round(best.value, 4), "params": best.params,
        "eval_size": args.eval_size,
        **{f"unseen_{key}": round(float(metrics[key]), 4) for key in REPORTED},
        "trials": [[t.number, t.state.name, None if t.value is None else round(t.value, 4),
                    t.user_attrs.get("epochs_run")] for t in trials],
        "trial_seconds": round(trial_seconds), "spared_epochs": spared_epochs,
        "spared_seconds": round(spared_seconds),
        "eval_wall_seconds": round(time.monotonic() - started),
        "eval_cpu_seconds": round(time.process_time() - cpu_started),
    }))


if __name__ == "__main__":
    main()
