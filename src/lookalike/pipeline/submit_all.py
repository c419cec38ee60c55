"""``submit-all`` as a library call: every epoch's results file of a run (or of every run in a
folder) sent to a competition server, one at a time, each reply recorded.

The files are the ``epochs/epoch_N/results_epoch_N.json`` of a run trained with
``trainer.keep_every_epoch`` (:mod:`lookalike.train.epoch_artefacts`), each checked against its
folder's manifest before it is sent; ``RUN_DIR`` is such a run, or a folder of runs (sent run by
run, epoch by epoch). Each one goes through :func:`lookalike.report.submit.submit_file` (bearer
token from the environment, https only unless allowed, redirects refused), and every reply the
server gives is appended to ``RUN_DIR/submission_scores.csv``::

    file, sha256, status, score, submitted_at, seconds, reply

``file`` is relative to ``RUN_DIR``, ``score`` is read from a JSON reply (a dotted key path;
by default ``score`` or ``public_score``), ``submitted_at`` is the UTC time of the reply and
``reply`` the start of its body. The CSV is rewritten atomically after each reply, so a kill
loses nothing already recorded; a rerun skips every file recorded with a 2xx status and the same
SHA-256 (a rewritten file is sent again), whether it was recorded by a call on this folder, on
the folder of runs holding it, or on one of the runs it holds. The first file the server refuses
(a 4xx such as 429 or 403, or any answer but 2xx) or cannot be sent stops the run with one line
saying how many were submitted: competitions limit submissions, and the next ones would be
refused too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lookalike.report.submit import DEFAULT_TOKEN_ENV, SubmissionError, submit_file
from lookalike.runs import EPOCHS_DIR
from lookalike.train.epoch_artefacts import EPOCH_KIND, epoch_name
from lookalike.utils.atomic import atomic_write_text
from lookalike.utils.folders import file_sha256, verify_folder
from lookalike.utils.progress import ProgressFactory, tracker

logger = logging.getLogger(__name__)

SCORES_FILE = "submission_scores.csv"
SCORE_COLUMNS = ("file", "sha256", "status", "score", "submitted_at", "seconds", "reply")
DEFAULT_SCORE_KEYS = ("score", "public_score")
_RESULTS_PATTERN = re.compile(r"results_epoch_(\d+)\.json")
_REPLY_CHARS = 200


class SubmitAllStopped(SubmissionError):
    """A file was refused or could not be sent; ``submit_all`` stopped there.

    Attributes:
        submitted: Files sent and accepted in this call before it stopped.
    """

    def __init__(self, message: str, status_code: int | None, submitted: int) -> None:
        super().__init__(message, status_code)
        self.submitted = submitted


@dataclass
class SubmissionRecord:
    """One reply, as a row of ``submission_scores.csv``.

    Attributes:
        file: The results file, relative to the run folder (POSIX).
        sha256: Its SHA-256 when sent.
        status: The HTTP status of the reply.
        score: The score the reply carried, None when it carried none.
        submitted_at: UTC time of the reply (ISO 8601).
        seconds: Time from sending to the reply.
        reply: The start of the reply's body, whitespace collapsed.
    """

    file: str
    sha256: str
    status: int
    score: float | None
    submitted_at: str
    seconds: float
    reply: str

    @property
    def accepted(self) -> bool:
        """The server answered 2xx."""
        return 200 <= self.status < 300


@dataclass
class SubmitAllOutcome:
    """What :func:`submit_all` did.

    Attributes:
        scores_csv: ``submission_scores.csv``.
        files: Every results file found, in submission order (relative to the run folder).
        submitted: The replies of this call, in order.
        skipped: Files already submitted earlier (a 2xx row with the same SHA-256).
    """

    scores_csv: Path
    files: list[str]
    submitted: list[SubmissionRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def find_results_files(run_dir: str | Path) -> list[Path]:
    """Every ``epochs/epoch_N/results_epoch_N.json`` of ``run_dir`` (a run) or of its
    sub-folders (a folder of runs), run by run in name order, then by epoch."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist")
    found = []
    for pattern in (f"{EPOCHS_DIR}/epoch_*/results_epoch_*.json",
                    f"*/{EPOCHS_DIR}/epoch_*/results_epoch_*.json"):
        for path in root.glob(pattern):
            match = _RESULTS_PATTERN.fullmatch(path.name)
            if match and path.parent.name == epoch_name(int(match.group(1))):
                run = path.parent.parent.parent.relative_to(root).as_posix()
                found.append(((run, int(match.group(1))), path))
    return [path for _, path in sorted(found)]


def score_from_reply(body: str, score_key: str | None = None) -> float | None:
    """The score in a JSON reply: the value at the dotted ``score_key`` (``"result.public"``),
    or by default the first of ``score``/``public_score`` present; None for a reply that is not
    JSON or carries no number there."""
    try:
        reply: Any = json.loads(body)
    except ValueError:
        return None
    paths = [score_key] if score_key else list(DEFAULT_SCORE_KEYS)
    for path in paths:
        value = reply
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def read_scores(path: str | Path) -> list[SubmissionRecord]:
    """The rows of a ``submission_scores.csv`` (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != SCORE_COLUMNS:
            raise ValueError(
                f"{path} has columns {reader.fieldnames}, not {', '.join(SCORE_COLUMNS)}; move "
                "it aside to start a new record"
            )
        try:
            return [
                SubmissionRecord(
                    row["file"], row["sha256"], int(row["status"]),
                    float(row["score"]) if row["score"] else None, row["submitted_at"],
                    float(row["seconds"]), row["reply"],
                )
                for row in reader
            ]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path} holds a malformed row ({error}); fix or move it") from None


def _write_scores(path: Path, records: Sequence[SubmissionRecord]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    for record in records:
        writer.writerow([
            record.file, record.sha256, record.status,
            "" if record.score is None else repr(record.score),
            record.submitted_at, f"{record.seconds:.3f}", record.reply,
        ])
    atomic_write_text(path, buffer.getvalue())


def _accepted(root: Path, paths: Sequence[Path]) -> set[tuple[Path, str]]:
    """(absolute file, SHA-256) of every 2xx reply recorded in ``root``'s scores file, in its
    parent's (``root`` a run inside a folder of runs) and in each run's below ``root``."""
    done = set()
    for folder in {root, root.parent, *(path.parent.parent.parent for path in paths)}:
        try:
            records = read_scores(folder / SCORES_FILE)
        except ValueError:
            if folder == root:
                raise
            logger.warning("%s is not a submit-all record; not read", folder / SCORES_FILE)
            continue
        done.update(
            ((folder / record.file).resolve(), record.sha256)
            for record in records
            if record.accepted
        )
    return done


def submit_all(
    run_dir: str | Path,
    url: str,
    *,
    token_env: str = DEFAULT_TOKEN_ENV,
    field_name: str = "file",
    timeout: float = 30.0,
    allow_insecure: bool = False,
    score_key: str | None = None,
    interval: float = 0.0,
    progress: ProgressFactory | None = None,
) -> SubmitAllOutcome:
    """Submit every results file of ``run_dir`` not yet submitted; record every reply.

    Args:
        run_dir: A run trained with ``trainer.keep_every_epoch`` and a query/gallery split, or
            a folder of such runs; ``submission_scores.csv`` is kept here.
        url: The endpoint that accepts submissions (see :func:`~lookalike.report.submit.submit_file`).
        token_env: Environment variable holding the API token.
        field_name: Form field the file is sent in.
        timeout: Seconds to wait for the server, per file.
        allow_insecure: Allow a plain ``http://`` URL.
        score_key: Dotted key of the score in a JSON reply; None tries ``score``, then
            ``public_score``.
        interval: Seconds to wait between two submissions (a server's rate limit).
        progress: Asked for one step, "submitting" over the files not yet submitted.

    Returns:
        The files found, the replies of this call and the files skipped.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist.
        ValueError: No results file in ``run_dir``, a damaged epoch folder, a negative
            ``interval`` or a ``submission_scores.csv`` of another shape.
        SubmitAllStopped: A file was refused (its reply is recorded first) or could not be sent;
            the message says how many were submitted.
    """
    root = Path(run_dir)
    if not interval >= 0:
        raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
    paths = find_results_files(root)
    if not paths:
        raise ValueError(
            f"no epochs/epoch_N/results_epoch_N.json in {root} or its sub-folders; train with "
            "trainer.keep_every_epoch=true and data.val_split=test"
        )
    scores_csv = root / SCORES_FILE
    records = read_scores(scores_csv)
    done = _accepted(root, paths)
    outcome = SubmitAllOutcome(scores_csv, [path.relative_to(root).as_posix() for path in paths])
    pending = []
    for path, name in zip(paths, outcome.files, strict=True):
        verify_folder(path.parent, kind=EPOCH_KIND)
        digest = file_sha256(path)
        if (path.resolve(), digest) in done:
            outcome.skipped.append(name)
        else:
            pending.append((path, name, digest))
    advance = tracker(progress, "submitting", len(pending))
    for position, (path, name, digest) in enumerate(pending):
        if position and interval:
            time.sleep(interval)
        started = time.monotonic()
        try:
            response = submit_file(path, url, token_env=token_env, field_name=field_name,
                                   timeout=timeout, allow_insecure=allow_insecure)
            status, body, error = response.status_code, response.body, None
        except SubmissionError as refused:
            status, body, error = refused.status_code, "", refused
        if status is not None:
            record = SubmissionRecord(
                name, digest, status, score_from_reply(body, score_key) if error is None else None,
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                time.monotonic() - started, " ".join(str(error or body).split())[:_REPLY_CHARS],
            )
            records.append(record)
            _write_scores(scores_csv, records)
            if error is None:
                outcome.submitted.append(record)
                logger.info("submitted %s: HTTP %d, score %s", name, status, record.score)
        if error is not None:
            count = len(outcome.submitted)
            raise SubmitAllStopped(
                f"stopped at {name}: {error}; {count} of {len(pending)} pending files submitted "
                f"({len(outcome.skipped)} already before), replies in {scores_csv}; rerun later "
                "to send the rest",
                status,
                count,
            ) from None
        advance(1)
    return outcome
