"""The package root is the front door: every listed name resolves to the library's function."""

from __future__ import annotations

import subprocess
import sys

import lookalike
from lookalike.pipeline.evaluate import evaluate
from lookalike.pipeline.indexing import search_index
from lookalike.pipeline.training import train


def test_every_public_name_resolves_and_is_listed() -> None:
    assert set(lookalike.__all__) - {"__version__"} == set(lookalike._EXPORTS)
    for name in lookalike.__all__:
        assert getattr(lookalike, name) is not None, name
    assert lookalike.evaluate is evaluate
    assert lookalike.search_index is search_index and lookalike.train_model is train


def test_importing_the_root_loads_no_pipeline() -> None:
    code = (
        "import sys, lookalike; "
        "print(any(m.startswith('lookalike.pipeline') for m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False"


def test_unknown_names_raise_attribute_error() -> None:
    try:
        lookalike.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("lookalike.no_such_name resolved")
