"""Search results of the server equal the library's: ``lookalike.search.topk.search`` on the same
index, the exact reference where the index is exact, and ``apply_threshold`` for "no match"."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import CLASSES, PER_CLASS, catalogue_image, noise_png

from lookalike import EmbeddingSet, EmbedSpec, build_index, embed_images, load_index
from lookalike.index import exact_search
from lookalike.search.rejection import apply_threshold
from lookalike.search.topk import search, self_exclusion
from lookalike.serve import ServeSettings, create_app

DIM = 16
ROWS = 120
LABELS = ("red", "green", "blue")


def vector_index(
    folder: Path, kind: str = "flat", metric: str = "cosine", threshold: float | None = None,
    **params: int,
) -> tuple[Path, EmbeddingSet]:  # fmt: skip
    """An index over ``ROWS`` seeded random vectors with three labels (no model needed)."""
    vectors = np.random.default_rng(7).normal(size=(ROWS, DIM)).astype(np.float32)
    ids = [f"item-{i:03d}" for i in range(ROWS)]
    labels = [LABELS[i % 3] for i in range(ROWS)]
    gallery = EmbeddingSet(vectors, ids, [""] * ROWS, labels)
    _, path = build_index(gallery, folder, kind=kind, metric=metric, threshold=threshold, **params)
    return path, gallery


def queries(count: int = 4, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)


def hit_ids(response_json: dict, query: int = 0) -> list[str | None]:
    return [hit["id"] for hit in response_json["results"][query]["hits"]]


def hit_scores(response_json: dict, query: int = 0) -> np.ndarray:
    hits = response_json["results"][query]["hits"]
    return np.array([hit["score"] for hit in hits if not hit["no_match"]], dtype=np.float64)


def vector_search(client: TestClient, vector: np.ndarray, **options: object) -> dict:
    response = client.post("/api/search/vector", json={"vector": vector.tolist(), **options})
    assert response.status_code == 200, response.text
    return response.json()


def serve(folder: Path, model: object = None, **settings: object) -> TestClient:
    return TestClient(
        create_app(folder, model=model, settings=ServeSettings(token="", device="cpu", **settings))
    )


@pytest.mark.parametrize(
    ("kind", "metric", "params"),
    [("flat", "cosine", {}), ("exact_torch", "l2", {}), ("hnsw", "cosine", {"M": 8}),
     ("ivf_flat", "ip", {"nlist": 4, "nprobe": 2})],
)  # fmt: skip
def test_vector_search_equals_topk_search(tmp_path: Path, kind: str, metric: str, params) -> None:
    folder, gallery = vector_index(tmp_path / "index", kind, metric, **params)
    index, metadata = load_index(folder)
    with serve(folder) as client:
        for vector in queries():
            found = vector_search(client, vector, k=7)
            reference = search(index, vector[None], 7)
            assert hit_ids(found) == [metadata.ids[row] for row in reference.indices[0]]
            np.testing.assert_allclose(hit_scores(found), reference.scores[0], rtol=1e-5, atol=1e-5)
            if index.exact:  # and the naive exact reference
                naive = exact_search(vector[None], gallery.embeddings, 7, metric)
                assert hit_ids(found) == [gallery.ids[row] for row in naive.indices[0]]


def test_image_search_equals_embedding_then_topk(
    tiny_clip, clip_client: TestClient, clip_index: Path, catalogue_images: Path
) -> None:
    """Several uploads in one request, each answered as the offline pipeline would."""
    names = [("cat", 1), ("dog", 2), ("fox", 3)]
    files = [
        ("images", (f"{c}{n}.png", catalogue_image(catalogue_images, c, n), "image/png"))
        for c, n in names
    ]
    response = clip_client.post("/api/search/image", files=files, data={"k": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [result["query"] for result in body["results"]] == ["cat1.png", "dog2.png", "fox3.png"]
    offline = embed_images(
        catalogue_images, None, model=tiny_clip, embed=EmbedSpec(num_workers=0, device="cpu")
    )
    index, metadata = load_index(clip_index)
    rows = [offline.ids.index(f"{c}/{c}_{n}.png") for c, n in names]
    reference = search(index, offline.embeddings[rows], 5)
    for query, row in enumerate(rows):
        assert hit_ids(body, query) == [metadata.ids[i] for i in reference.indices[query]]
        np.testing.assert_allclose(hit_scores(body, query), reference.scores[query], atol=1e-5)
        assert hit_ids(body, query)[0] == offline.ids[row]  # a gallery image finds itself first
        first = body["results"][query]["hits"][0]
        assert first["label"] == names[query][0]
        assert first["image_url"] == "/api/image/" + offline.ids[row].replace("/", "%2F")


def test_item_search_is_topk_search_with_self_exclusion(tmp_path: Path) -> None:
    folder, gallery = vector_index(tmp_path / "index")
    index, metadata = load_index(folder)
    with serve(folder) as client:
        for item in ("item-000", "item-057", "item-119"):
            response = client.post("/api/search/item", json={"id": item, "k": 6})
            row = metadata.ids.index(item)
            vector = gallery.embeddings[row : row + 1]
            excluded = self_exclusion([item], metadata.ids)
            reference = search(index, vector, 6, exclude_rows=excluded)
            assert hit_ids(response.json()) == [metadata.ids[i] for i in reference.indices[0]]
            assert item not in hit_ids(response.json())
            np.testing.assert_allclose(hit_scores(response.json()), reference.scores[0], atol=1e-5)
            with_self = client.post("/api/search/item", json={"id": item, "include_self": True})
            assert hit_ids(with_self.json())[0] == item


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_no_match_sits_where_apply_threshold_puts_it(tmp_path: Path, metric: str) -> None:
    folder, _ = vector_index(tmp_path / "index", metric=metric)
    index, _ = load_index(folder)
    vector = queries(1)[0]
    reference = search(index, vector[None], 10)
    stored = float(reference.scores[0, 4])  # the 5th score: "no match" ranks 5th or 6th
    folder_with, _ = vector_index(tmp_path / "stored", metric=metric, threshold=stored)
    with serve(folder_with) as client:
        found = vector_search(client, vector, k=10)
        position = int(apply_threshold(reference, stored)[0])
        assert found["threshold"] == pytest.approx(stored)
        flags = [hit["no_match"] for hit in found["results"][0]["hits"]]
        assert flags.index(True) == position and flags.count(True) == 1
        assert len(flags) == 10
        assert [hit["rank"] for hit in found["results"][0]["hits"]] == list(range(1, 11))
        # an override moves it, and use_threshold=false removes it
        override = float(reference.scores[0, 1])
        moved = vector_search(client, vector, k=10, threshold=override)
        at = int(apply_threshold(reference, override)[0])
        assert [hit["no_match"] for hit in moved["results"][0]["hits"]].index(True) == at
        plain = vector_search(client, vector, k=10, use_threshold=False)
        assert not any(hit["no_match"] for hit in plain["results"][0]["hits"])
        assert plain["threshold"] is None


def test_a_threshold_nothing_passes_puts_no_match_first(tmp_path: Path) -> None:
    folder, _ = vector_index(tmp_path / "index")
    with serve(folder) as client:
        found = vector_search(client, queries(1)[0], k=3, threshold=1.5)
        hits = found["results"][0]["hits"]
        assert hits[0] == {"rank": 1, "id": None, "label": None, "score": None,
                           "image_url": None, "no_match": True}  # fmt: skip
        assert len(hits) == 3


def test_label_filter_equals_the_exact_search_over_that_label(tmp_path: Path) -> None:
    folder, gallery = vector_index(tmp_path / "index")
    rows = np.array([i for i, label in enumerate(gallery.labels) if label == "green"])
    with serve(folder) as client:
        for vector in queries(3):
            found = vector_search(client, vector, k=8, label="green")
            naive = exact_search(vector[None], gallery.embeddings[rows], 8)
            assert hit_ids(found) == [gallery.ids[rows[i]] for i in naive.indices[0]]
            np.testing.assert_allclose(hit_scores(found), naive.scores[0], atol=1e-5)
            assert {hit["label"] for hit in found["results"][0]["hits"]} == {"green"}
        assert hit_ids(vector_search(client, queries(1)[0], label="purple")) == []


def test_deleted_items_leave_results_before_and_after_compaction(tmp_path: Path) -> None:
    folder, gallery = vector_index(tmp_path / "index")
    vector = queries(1)[0]
    first = exact_search(vector[None], gallery.embeddings, 10).indices[0]
    deleted = [gallery.ids[row] for row in first[:4]]  # the four best answers
    keep = np.array([i for i in range(ROWS) if gallery.ids[i] not in deleted])
    naive = exact_search(vector[None], gallery.embeddings[keep], 10)
    expected = [gallery.ids[keep[i]] for i in naive.indices[0]]
    with serve(folder) as client:
        for item in deleted:
            assert client.delete(f"/api/items/{item}").status_code == 200
        assert hit_ids(vector_search(client, vector, k=10)) == expected
        blue = vector_search(client, vector, k=5, label="blue")
        assert not set(hit_ids(blue)) & set(deleted)
        report = client.post("/api/admin/compact").json()
        assert report["dropped"] == 4 and report["rows"] == ROWS - 4
        assert hit_ids(vector_search(client, vector, k=10)) == expected
        info = client.get("/api/info").json()
        assert info["rows"] == ROWS - 4 and info["deleted_rows"] == 0
    index, metadata = load_index(folder)
    assert index.ntotal == ROWS - 4 and not set(metadata.ids) & set(deleted)


def test_added_items_are_found_exactly(
    clip_client: TestClient, clip_index: Path, catalogue_images: Path, tiny_clip
) -> None:
    new = [noise_png(seed) for seed in (101, 102, 103)]
    files = [("images", (f"n{i}.png", data, "image/png")) for i, data in enumerate(new)]
    data = {"ids": ["new-a", "new-b", "new-c"], "labels": ["cat", "", "fox"]}
    response = clip_client.post("/api/items", files=files, data=data)
    assert response.status_code == 201, response.text
    assert response.json()["ids"] == ["new-a", "new-b", "new-c"]
    assert response.json()["items"] == 15
    item = clip_client.get("/api/items/new-b").json()
    assert item == {"id": "new-b", "label": None, "image_url": "/api/image/new-b"}
    for number, payload in enumerate(new):
        found = clip_client.post(
            "/api/search/image", files=[("images", ("q.png", payload, "image/png"))]
        ).json()
        assert hit_ids(found)[0] == data["ids"][number]
        assert hit_scores(found)[0] == pytest.approx(1.0, abs=1e-5)
    # the server's rows for the additions are the offline embeddings of the same files
    transform = tiny_clip.eval_transform()
    images = [Image.open(io.BytesIO(payload)).convert("RGB") for payload in new]
    with torch.inference_mode():
        offline = tiny_clip(torch.stack([transform(image) for image in images])).numpy()
    gallery = embed_images(
        catalogue_images, None, model=tiny_clip, embed=EmbedSpec(num_workers=0, device="cpu")
    )
    everything = np.concatenate([gallery.embeddings, offline])
    ids = gallery.ids + data["ids"]
    vector = queries(1)[0]
    naive = exact_search(vector[None], everything, 15)
    found = vector_search(clip_client, vector, k=15)
    assert hit_ids(found) == [ids[i] for i in naive.indices[0]]
    np.testing.assert_allclose(hit_scores(found), naive.scores[0], atol=1e-5)


def test_text_search_ranks_by_the_clip_text_embedding(
    tiny_clip, clip_client: TestClient, clip_index: Path
) -> None:
    text = "a photo of a red cat"
    found = clip_client.post("/api/search/text", json={"text": text, "k": 12})
    assert found.status_code == 200, found.text
    backbone = tiny_clip.backbone
    with torch.inference_mode():
        tokens = backbone.tokenizer([text])
        query = torch.nn.functional.normalize(backbone.text_model.encode_text(tokens), dim=-1)
    index, metadata = load_index(clip_index)
    reference = search(index, query.numpy(), 12)
    assert hit_ids(found.json()) == [metadata.ids[row] for row in reference.indices[0]]
    np.testing.assert_allclose(hit_scores(found.json()), reference.scores[0], atol=1e-5)
    assert found.json()["results"][0]["query"] == text
    labelled = clip_client.post("/api/search/text", json={"text": text, "label": "dog", "k": 3})
    assert {hit["label"] for hit in labelled.json()["results"][0]["hits"]} == {"dog"}


def test_k_is_clamped_to_the_catalogue(clip_client: TestClient) -> None:
    found = clip_client.post("/api/search/item", json={"id": "cat/cat_0.png", "k": 50}).json()
    assert len(hit_ids(found)) == len(CLASSES) * PER_CLASS - 1


def test_item_lookup_and_thumbnail(clip_client: TestClient) -> None:
    item = clip_client.get("/api/items/dog/dog_1.png").json()
    assert item == {
        "id": "dog/dog_1.png",
        "label": "dog",
        "image_url": "/api/image/dog%2Fdog_1.png",
    }
    response = clip_client.get(item["image_url"] + "?size=24")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 24
    assert response.headers["x-content-type-options"] == "nosniff"
    page = clip_client.get("/api/items", params={"offset": 10, "limit": 5}).json()
    assert page["total"] == 12 and page["offset"] == 10
    assert [item["id"] for item in page["items"]] == ["fox/fox_2.png", "fox/fox_3.png"]


def test_page_docs_health_and_info(clip_client: TestClient) -> None:
    page = clip_client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for text in (page.text, *(clip_client.get(f"/static/app.{x}").text for x in ("js", "css"))):
        assert "http://" not in text and "https://" not in text  # self-contained: no CDN
    assert clip_client.get("/docs").status_code == 200
    paths = clip_client.get("/openapi.json").json()["paths"]
    for path in ("/api/search/image", "/api/search/text", "/api/search/item", "/api/search/vector",
                 "/api/items", "/api/items/{item_id}", "/api/image/{item_id}", "/healthz",
                 "/readyz", "/metrics"):  # fmt: skip
        assert path in paths, sorted(paths)
    assert clip_client.get("/healthz").json() == {"status": "ok"}
    assert clip_client.get("/readyz").json() == {"status": "ready", "items": 12}
    info = clip_client.get("/api/info").json()
    assert info["text_search"] is True and info["labels"] == ["cat", "dog", "fox"]
    assert (
        "access-control-allow-origin"
        not in clip_client.get("/api/info", headers={"Origin": "https://elsewhere.example"}).headers
    )


def test_metrics_count_requests_errors_size_and_batches(clip_client: TestClient) -> None:
    clip_client.post("/api/search/item", json={"id": "cat/cat_0.png"})
    clip_client.post("/api/search/item", json={"id": "missing"})
    clip_client.post("/api/search/text", json={"text": "a dog"})
    text = clip_client.get("/metrics").text
    assert (
        'lookalike_requests_total{method="POST",route="/api/search/item",status="200"} 1.0' in text
    )
    assert 'lookalike_errors_total{route="/api/search/item",status="404"} 1.0' in text
    assert "lookalike_index_items 12.0" in text
    assert (
        'lookalike_request_seconds_bucket{le="0.005",method="POST",route="/api/search/item"}'
        in text
    )
    assert 'lookalike_batch_size_count{encoder="text"} 1.0' in text
    assert "lookalike_journal_transactions 0.0" in text


def test_cors_only_for_the_origins_given(make_client, clip_index: Path) -> None:
    with make_client(clip_index, cors_origins=["https://shop.example"]) as client:
        preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
        allowed = client.options("/api/search/vector", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = {**preflight, "Origin": "https://elsewhere.example"}
        refused = client.options("/api/search/vector", headers=other)
        assert "access-control-allow-origin" not in refused.headers
