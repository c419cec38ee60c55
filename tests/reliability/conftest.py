"""Pristine artefacts, made once per test session (per worker) by the real CLI."""

from __future__ import annotations

import pytest
from artefact_kit import Artefacts, build_artefacts


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    return build_artefacts(tmp_path_factory.mktemp("pristine"))
