"""``embed-text`` and text→image ``search``: texts through a CLIP text tower, into image space.

A texts file is either plain text, one text per line (ids are the line numbers, from 1; blank
lines are skipped), or a ``.csv`` with a ``text`` column and an optional ``id`` column. The
embeddings are an ordinary embedding folder (:class:`~lookalike.embed.store.EmbeddingSet`) whose
fingerprint is the model's, so an index of that model's image embeddings accepts them as
queries, and one that was built by another model refuses them (:mod:`lookalike.index.io`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from lookalike.embed.store import EmbeddingSet
from lookalike.models.embedder import Embedder
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.models.text import embed_texts, text_support
from lookalike.pipeline.indexing import SearchOutcome, search_index
from lookalike.utils.devices import resolve_device
from lookalike.utils.progress import ProgressFactory, tracker

logger = logging.getLogger(__name__)

TEXT_MODALITY = "text"


def read_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """The ids and texts of a texts file (see the module docstring).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A CSV without a ``text`` column, repeated or empty ids, or no text at all
            (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file {path} does not exist; give one text per line")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(content.splitlines()))
        columns = list(rows[0].keys()) if rows else []
        if "text" not in columns:
            raise ValueError(
                f"{path} has no 'text' column (columns: {', '.join(columns) or 'none'}); "
                "give a CSV with columns id,text or a plain file of one text per line"
            )
        texts = [str(row["text"] or "") for row in rows]
        ids = [str(row["id"] or "") for row in rows] if "id" in columns else [
            str(number) for number in range(1, len(rows) + 1)
        ]
    else:
        numbered = [(str(n), line.strip()) for n, line in enumerate(content.splitlines(), 1)]
        numbered = [(n, line) for n, line in numbered if line]
        ids, texts = [n for n, _ in numbered], [line for _, line in numbered]
    if not texts:
        raise ValueError(f"{path} holds no text; give one text per line")
    if any(not identifier for identifier in ids):
        raise ValueError(f"{path}: every row needs an id (an empty one was found)")
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"{path}: ids must be unique; repeated: {', '.join(repeated)}")
    return ids, texts


def embed_text_set(
    texts: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    model: ModelSpec | Embedder | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: ProgressFactory | None = None,
) -> EmbeddingSet:
    """Texts -> an :class:`EmbeddingSet` in the model's image space.

    Args:
        texts: ``T`` texts.
        ids: ``T`` unique ids; None: ``"1"`` to ``"T"``.
        model: An open_clip embedder, or the :class:`ModelSpec` naming it.
        batch_size: Texts per forward pass.
        device: "cpu", "cuda[:N]" or "auto".
        progress: Asked for one step, "embedding texts".

    Returns:
        ``(T, D)`` rows; ``paths`` hold the texts, ``labels`` are None, ``info`` the model's
        fingerprint and config and ``modality: "text"``.

    Raises:
        ValueError: A model without a usable text tower, no texts, or ids that do not match.
    """
    torch_device = resolve_device(device)  # a bad device fails before the model is built
    texts = [str(text) for text in texts]
    if not texts:
        raise ValueError("no texts to embed; give at least one")
    ids = [str(n) for n in range(1, len(texts) + 1)] if ids is None else [str(i) for i in ids]
    if len(ids) != len(texts) or len(set(ids)) != len(ids):
        raise ValueError(f"need {len(texts)} unique ids for {len(texts)} texts, got {len(ids)}")
    embedder = model if isinstance(model, Embedder) else build_embedder(model or ModelSpec())
    reason = text_support(embedder)
    if reason is not None:
        raise ValueError(reason)
    rows = embed_texts(
        embedder, texts, batch_size=batch_size, device=torch_device,
        progress=tracker(progress, "embedding texts", len(texts)),
    )
    info = {
        "fingerprint": embedder.fingerprint(),
        "config": embedder.config,
        "modality": TEXT_MODALITY,
    }
    return EmbeddingSet(rows, ids, texts, [None] * len(texts), info)


def embed_text_file(
    texts_file: str | Path,
    output: str | Path,
    *,
    model: ModelSpec | Embedder | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: ProgressFactory | None = None,
) -> EmbeddingSet:
    """``lookalike embed-text``: embed a texts file (see :func:`read_texts`) into ``output``, an
    embedding folder written whole with its manifest.

    Raises:
        ValueError: See :func:`read_texts` and :func:`embed_text_set`; nothing is written then.
    """
    ids, texts = read_texts(texts_file)
    embeddings = embed_text_set(
        texts, ids, model=model, batch_size=batch_size, device=device, progress=progress
    )
    embeddings.info["texts_file"] = str(Path(texts_file))
    embeddings.save(output)
    logger.info("embedded %d texts into %s", len(embeddings), output)
    return embeddings


def search_text(
    index_folder: str | Path,
    texts: Sequence[str] | None,
    output: str | Path,
    *,
    texts_file: str | Path | None = None,
    model: ModelSpec | Embedder | None = None,
    k: int = 10,
    device: str = "cpu",
    threshold: float | None = None,
    use_threshold: bool = True,
    progress: ProgressFactory | None = None,
) -> SearchOutcome:
    """Text→image search: texts (a list, or a texts file) against an index of the model's images.

    Args:
        index_folder: An index built from the open_clip model's image embeddings.
        texts: The query texts (ids ``"1"``, ``"2"`` ...); None when ``texts_file`` is given.
        texts_file: A texts file (see :func:`read_texts`) instead of ``texts``.
        output: Results file, ``.csv`` or ``.json``.
        model: The open_clip model that embedded the gallery (its fingerprint is checked).
        k: Results per text.
        device: Where the text tower and the index run ("cpu", "cuda[:N]", "auto").
        threshold: Rejection threshold overriding the index's stored one.
        use_threshold: Apply a threshold (given, or stored with the index) at all.
        progress: Asked for "embedding texts", then "searching".

    Raises:
        ValueError: Both or neither of ``texts`` and ``texts_file``, a model without a text
            tower, or one other than the index's.
    """
    if (texts is None) == (texts_file is None):
        raise ValueError("give query texts (--text) or a texts file (--queries-text), one of them")
    ids = None
    if texts_file is not None:
        ids, texts = read_texts(texts_file)
    elif isinstance(texts, (str, bytes)):
        texts = [str(texts)]
    queries = embed_text_set(texts, ids, model=model, device=device, progress=progress)
    return search_index(
        index_folder, queries, output, k=k, device=device, threshold=threshold,
        use_threshold=use_threshold, progress=progress,
    )
