"""Reports people look at (one HTML page per run) and files competitions accept."""

from lookalike.report.analysis import analyse_ranking, similarity_samples
from lookalike.report.html import REPORT_FILE, build_report
from lookalike.report.projection import project_2d
from lookalike.report.run_folder import RunFolder, load_run_folder
from lookalike.report.submission import (
    NO_MATCH_TOKEN,
    predictions,
    read_competition_json,
    read_kaggle_csv,
    write_competition_json,
    write_kaggle_csv,
)
from lookalike.report.submit import SubmissionError, SubmitResponse, submit_file

__all__ = [
    "NO_MATCH_TOKEN",
    "REPORT_FILE",
    "RunFolder",
    "SubmissionError",
    "SubmitResponse",
    "analyse_ranking",
    "build_report",
    "load_run_folder",
    "predictions",
    "project_2d",
    "read_competition_json",
    "read_kaggle_csv",
    "similarity_samples",
    "submit_file",
    "write_competition_json",
    "write_kaggle_csv",
]
