"""Review: a client's mistake in a search request is a one-line 4xx naming it, never an answer.

A misspelt option (``"lable"``) was ignored, so the "filtered" answer held every label with a
200; a JSON ``true`` was read as the number 1 (``k``, a vector's values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import catalogue_image


def assert_error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and "\n" not in body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("vector", {"vector": [0.3] * 16, "lable": "cat"}),
        ("item", {"id": "cat/cat_0.png", "labels": "dog"}),
        ("text", {"text": "a cat", "Label": "fox", "k": 3}),
    ],
)
def test_a_misspelt_option_is_refused_not_ignored(
    clip_client: TestClient, route: str, body: dict
) -> None:
    misspelt = next(key for key in body if key not in ("vector", "id", "text", "k"))
    response = clip_client.post(f"/api/search/{route}", json=body)
    assert_error(response, 422, misspelt, "not permitted")


def test_a_misspelt_form_field_of_an_image_search_is_refused(
    clip_client: TestClient, catalogue_images: Path
) -> None:
    files = [("images", ("q.png", catalogue_image(catalogue_images), "image/png"))]
    response = clip_client.post("/api/search/image", files=files, data={"lable": "dog"})
    assert_error(response, 422, "lable")
    found = clip_client.post("/api/search/image", files=files, data={"label": "dog", "k": "3"})
    assert found.status_code == 200, found.text
    assert {hit["label"] for hit in found.json()["results"][0]["hits"]} == {"dog"}


def test_a_boolean_is_no_k_and_no_vector_value(clip_client: TestClient) -> None:
    assert_error(clip_client.post("/api/search/item", json={"id": "cat/cat_0.png", "k": True}),
                 422, "k")  # fmt: skip
    assert_error(
        clip_client.post("/api/search/vector", json={"vector": [True] * 16}), 422, "vector"
    )
    item = {"id": "x", "vector": [True] + [0.5] * 15}
    assert_error(clip_client.post("/api/items/vectors", json={"items": [item]}), 422, "vector")
    # numbers written as strings are still read, as before
    found = clip_client.post("/api/search/vector", json={"vector": np.full(16, 0.3).tolist(),
                                                         "k": "3"})  # fmt: skip
    assert found.status_code == 200 and len(found.json()["results"][0]["hits"]) == 3
