"""lookalike: train, evaluate and serve top-k image retrieval.

The front door: every verb of the command line is one function here, and the settings they take::

    from lookalike import ModelSpec, embed_images, build_index, search_index, evaluate, train_model

Names are imported on first use (PEP 562), so ``import lookalike`` stays cheap and a submodule
never drags the whole pipeline in. (The verbs ``embed``, ``search`` and ``train`` are also the
names of subpackages, so their functions are ``embed_images``, ``search_index`` and
``train_model``.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # models
    "create_embedder": ("lookalike.models", "create_embedder"),
    "load_embedder": ("lookalike.models", "load_embedder"),
    "save_embedder": ("lookalike.models", "save_embedder"),
    "ModelSpec": ("lookalike.models.spec", "ModelSpec"),
    # the verbs
    "embed_images": ("lookalike.pipeline.embedding", "embed_images"),
    "build_index": ("lookalike.pipeline.indexing", "build_index"),
    "load_index": ("lookalike.index", "load_index"),
    "search_index": ("lookalike.pipeline.indexing", "search_index"),
    "embed_texts": ("lookalike.pipeline.text", "embed_text_file"),
    "search_text": ("lookalike.pipeline.text", "search_text"),
    "choose_metric": ("lookalike.pipeline.metric_choice", "choose_metric_on"),
    "evaluate": ("lookalike.pipeline.evaluate", "evaluate"),
    "export_model": ("lookalike.pipeline.export", "export_model"),
    "train_model": ("lookalike.pipeline.training", "train"),
    "tune_threshold": ("lookalike.pipeline.open_set", "tune_and_save_threshold"),
    "write_submission": ("lookalike.pipeline.submission", "write_submission"),
    "submit_all": ("lookalike.pipeline.submit_all", "submit_all"),
    "build_report": ("lookalike.report.html", "build_report"),
    "predict": ("lookalike.pipeline.predict", "predict"),
    "tune_class_threshold": ("lookalike.pipeline.predict", "tune_class_threshold"),
    "wise_ft": ("lookalike.pipeline.wise_ft", "wise_ft_curve"),
    "sweep": ("lookalike.pipeline.sweep", "sweep"),
    "SweepSettings": ("lookalike.pipeline.sweep", "SweepSettings"),
    "compare_runs": ("lookalike.report.compare", "compare_runs"),
    # the objects that cross layers, and the settings
    "rank": ("lookalike.ranking", "rank"),
    "Ranking": ("lookalike.ranking", "Ranking"),
    "EmbeddingSet": ("lookalike.embed.store", "EmbeddingSet"),
    "EmbedSpec": ("lookalike.embed.spec", "EmbedSpec"),
    "IndexSpec": ("lookalike.index.spec", "IndexSpec"),
    "EvaluateConfig": ("lookalike.pipeline.evaluate_config", "EvaluateConfig"),
    "TrainConfig": ("lookalike.train.config", "TrainConfig"),
    "RejectionSpec": ("lookalike.pipeline.open_set", "RejectionSpec"),
    "PredictSpec": ("lookalike.pipeline.predict", "PredictSpec"),
    "RetrievalSet": ("lookalike.pipeline.wise_ft", "RetrievalSet"),
    "retrieval_metrics": ("lookalike.metrics", "retrieval_metrics"),
}

__all__ = [
    "__version__",
    "EmbedSpec",
    "EmbeddingSet",
    "EvaluateConfig",
    "IndexSpec",
    "ModelSpec",
    "PredictSpec",
    "Ranking",
    "RejectionSpec",
    "RetrievalSet",
    "SweepSettings",
    "TrainConfig",
    "build_index",
    "build_report",
    "choose_metric",
    "compare_runs",
    "create_embedder",
    "embed_images",
    "embed_texts",
    "evaluate",
    "export_model",
    "load_embedder",
    "load_index",
    "predict",
    "rank",
    "retrieval_metrics",
    "save_embedder",
    "search_index",
    "search_text",
    "submit_all",
    "sweep",
    "train_model",
    "tune_class_threshold",
    "tune_threshold",
    "wise_ft",
    "write_submission",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from lookalike.embed.spec import EmbedSpec
    from lookalike.embed.store import EmbeddingSet
    from lookalike.index import load_index
    from lookalike.index.spec import IndexSpec
    from lookalike.metrics import retrieval_metrics
    from lookalike.models import create_embedder, load_embedder, save_embedder
    from lookalike.models.spec import ModelSpec
    from lookalike.pipeline.embedding import embed_images
    from lookalike.pipeline.evaluate import evaluate
    from lookalike.pipeline.evaluate_config import EvaluateConfig
    from lookalike.pipeline.export import export_model
    from lookalike.pipeline.indexing import build_index, search_index
    from lookalike.pipeline.metric_choice import choose_metric_on as choose_metric
    from lookalike.pipeline.open_set import RejectionSpec
    from lookalike.pipeline.open_set import tune_and_save_threshold as tune_threshold
    from lookalike.pipeline.predict import PredictSpec, predict, tune_class_threshold
    from lookalike.pipeline.submission import write_submission
    from lookalike.pipeline.submit_all import submit_all
    from lookalike.pipeline.sweep import SweepSettings, sweep
    from lookalike.pipeline.text import embed_text_file as embed_texts
    from lookalike.pipeline.text import search_text
    from lookalike.pipeline.training import train as train_model
    from lookalike.pipeline.wise_ft import RetrievalSet
    from lookalike.pipeline.wise_ft import wise_ft_curve as wise_ft
    from lookalike.ranking import Ranking, rank
    from lookalike.report.compare import compare_runs
    from lookalike.report.html import build_report
    from lookalike.train.config import TrainConfig
