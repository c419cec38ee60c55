"""Every refusal of the server: the 4xx status, and a JSON body with a one-line message.

Oversized uploads and bodies, decompression bombs, non-images, unknown ids, bad k, bad
thresholds and vectors, missing or wrong tokens, path traversal on the image endpoint, and
queries the server's model cannot embed.
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import CLIP_ARCH, TINY_CLIP, catalogue_image, noise_png, serve_in_thread

from lookalike import EmbeddingSet, build_index
from lookalike.models import create_embedder
from lookalike.serve import ServeSettings, create_app
from lookalike.serve.encoders import text_support


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> str:
    """The response is ``status`` with ``{"error": one line, "status": status}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    message = body["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert fragment.lower() in message.lower(), message
    return message


def image_files(
    *payloads: bytes, name: str = "query.png"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, payload, "image/png")) for payload in payloads]


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's shape:
    a few bytes that would decode to gigabytes)."""
    data = bytearray(noise_png(0, (4, 4)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------- uploads


def test_upload_over_the_size_limit_is_413(make_client, clip_index: Path) -> None:
    with make_client(clip_index, max_upload_bytes=2000) as client:
        big = noise_png(1, (64, 64))
        assert len(big) > 2000
        response = client.post("/api/search/image", files=image_files(big))
        assert_error(response, 413, "limit is 2000")


def test_request_body_over_the_limit_is_413_before_it_is_read(make_client, clip_index) -> None:
    with make_client(clip_index, max_upload_bytes=1000, max_images=1) as client:
        limit = ServeSettings(max_upload_bytes=1000, max_images=1).request_bytes
        payload = b"x" * (limit + 10)
        response = client.post("/api/search/image", files=image_files(payload))
        assert_error(response, 413, "request body is larger")


def test_chunked_body_over_the_limit_is_413(make_client, clip_index: Path) -> None:
    with make_client(clip_index, max_upload_bytes=1000, max_images=1) as client:
        limit = ServeSettings(max_upload_bytes=1000, max_images=1).request_bytes

        def chunks() -> Iterator[bytes]:
            for _ in range(limit // 65536 + 2):
                yield b"y" * 65536

        response = client.post(
            "/api/search/image",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert_error(response, 413, "request body is larger")


def test_too_many_images_is_413(make_client, clip_index: Path, catalogue_images: Path) -> None:
    with make_client(clip_index, max_images=2) as client:
        image = catalogue_image(catalogue_images)
        response = client.post("/api/search/image", files=image_files(image, image, image))
        assert_error(response, 413, "3 images")


def test_decompression_bomb_is_refused_before_decoding(clip_client: TestClient) -> None:
    bomb = png_claiming_size(60_000, 60_000)  # 3.6 gigapixels in under 100 bytes
    assert len(bomb) < 200
    response = clip_client.post("/api/search/image", files=image_files(bomb))
    assert_error(response, 413)


def test_image_over_the_pixel_limit_is_413(make_client, clip_index: Path) -> None:
    with make_client(clip_index, max_pixels=1000) as client:
        response = client.post("/api/search/image", files=image_files(noise_png(2, (40, 30))))
        assert_error(response, 413, "1200 pixels; the limit is 1000")
        header_only = png_claiming_size(8000, 6000)  # under Pillow's own bomb limit
        assert_error(client.post("/api/search/image", files=image_files(header_only)), 413)


def test_content_is_sniffed_not_the_file_name(clip_client: TestClient) -> None:
    text = b"#!/bin/sh\necho this is not an image\n"
    response = clip_client.post("/api/search/image", files=image_files(text, name="photo.png"))
    assert_error(response, 415, "not an image")
    # a real JPEG under a misleading name and type is accepted: its bytes say what it is
    files = [("images", ("notes.txt", jpeg_bytes(), "text/plain"))]
    assert clip_client.post("/api/search/image", files=files).status_code == 200


def test_unaccepted_format_is_415(clip_client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="ICO")
    response = clip_client.post("/api/search/image", files=image_files(buffer.getvalue()))
    assert_error(response, 415, "accepted formats")


def test_empty_and_truncated_images_are_422(clip_client: TestClient) -> None:
    assert_error(clip_client.post("/api/search/image", files=image_files(b"")), 422, "empty")
    truncated = jpeg_bytes((256, 256))[:600]
    response = clip_client.post("/api/search/image", files=image_files(truncated))
    assert_error(response, 422, "cannot")


def test_no_image_at_all_is_422(clip_client: TestClient) -> None:
    assert_error(clip_client.post("/api/search/image", data={"k": "3"}), 422, "images")


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("k", [0, -1, 101, 10_000])
def test_k_out_of_range_is_422(clip_client: TestClient, catalogue_images: Path, k: int) -> None:
    assert_error(clip_client.post("/api/search/item", json={"id": "cat/cat_0.png", "k": k}),
                 422, "k must be between 1 and 100")  # fmt: skip
    files = image_files(catalogue_image(catalogue_images))
    response = clip_client.post("/api/search/image", files=files, data={"k": str(k)})
    assert_error(response, 422, "k must be between")


def test_k_that_is_not_a_number_is_422(clip_client: TestClient) -> None:
    response = clip_client.post("/api/search/item", json={"id": "cat/cat_0.png", "k": "many"})
    assert_error(response, 422, "k:")


def test_non_finite_threshold_is_422(clip_client: TestClient, catalogue_images: Path) -> None:
    body = b'{"vector": [' + b",".join([b"0.1"] * 16) + b'], "threshold": NaN}'
    response = clip_client.post(
        "/api/search/vector", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "threshold")
    files = image_files(catalogue_image(catalogue_images))
    response = clip_client.post("/api/search/image", files=files, data={"threshold": "inf"})
    assert_error(response, 422, "threshold")


def test_threshold_with_use_threshold_false_is_422(clip_client: TestClient) -> None:
    body = {"id": "cat/cat_0.png", "threshold": 0.5, "use_threshold": False}
    assert_error(clip_client.post("/api/search/item", json=body), 422, "use_threshold")


# ---------------------------------------------------------------- vectors


def test_vector_of_the_wrong_length_is_422(clip_client: TestClient) -> None:
    response = clip_client.post("/api/search/vector", json={"vector": [0.5] * 15})
    assert_error(response, 422, "15 values; this index holds 16-d")


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"-Infinity"])
def test_vector_with_nan_or_infinity_is_422(clip_client: TestClient, bad: bytes) -> None:
    body = b'{"vector": [' + bad + b"," + b",".join([b"0.1"] * 15) + b"]}"
    response = clip_client.post(
        "/api/search/vector", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "NaN or infinite")


def test_zero_vector_under_cosine_is_422(clip_client: TestClient) -> None:
    assert_error(clip_client.post("/api/search/vector", json={"vector": [0.0] * 16}), 422, "zeros")


def test_malformed_json_is_422(clip_client: TestClient) -> None:
    response = clip_client.post(
        "/api/search/vector",
        content=b'{"vector": [1, 2',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 422)


# ---------------------------------------------------------------- unknown ids


def test_unknown_ids_are_404(clip_client: TestClient) -> None:
    assert_error(clip_client.post("/api/search/item", json={"id": "no/such.png"}), 404, "no item")
    assert_error(clip_client.get("/api/items/no/such.png"), 404, "no item")
    assert_error(clip_client.get("/api/image/no%2Fsuch.png"), 404, "no item")
    assert_error(clip_client.delete("/api/items/no/such.png"), 404, "no item")


def test_unknown_route_is_json_404(clip_client: TestClient) -> None:
    assert_error(clip_client.get("/api/nothing-here"), 404)


def test_deleted_item_is_404(clip_client: TestClient) -> None:
    assert clip_client.delete("/api/items/cat/cat_1.png").status_code == 200
    assert_error(clip_client.post("/api/search/item", json={"id": "cat/cat_1.png"}), 404)
    assert_error(clip_client.get("/api/image/cat%2Fcat_1.png"), 404)


# ---------------------------------------------------------------- the image endpoint


TRAVERSALS = [
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "cat%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "....//....//etc/passwd",
    "cat/cat_0.png/../../../../etc/passwd",
]


@pytest.mark.parametrize("attempt", TRAVERSALS)
def test_path_traversal_on_the_image_endpoint_is_404(clip_client: TestClient, attempt: str) -> None:
    response = clip_client.get(f"/api/image/{attempt}")
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_a_file_path_is_never_an_item(clip_client: TestClient, catalogue_images: Path) -> None:
    real_file = catalogue_images / "cat" / "cat_0.png"
    response = clip_client.get("/api/image/" + quote(str(real_file), safe=""))
    assert_error(response, 404, "no item")
    assert clip_client.get("/api/image/" + quote("cat/cat_0.png", safe="")).status_code == 200


def test_raw_dot_segments_reach_the_server_and_are_refused(tiny_clip, clip_index: Path) -> None:
    """A client that does not normalise ``..`` (curl --path-as-is) gets 404 too."""
    app = create_app(clip_index, model=tiny_clip, settings=ServeSettings(token="", device="cpu"))
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for path in ("/api/image/../../../../etc/passwd", "/api/image/cat/../../../etc/passwd"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                connection.sendall(request.encode())
                answer = b""
                while chunk := connection.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
            assert b"root:" not in answer


def test_thumbnail_size_out_of_range_is_422(clip_client: TestClient) -> None:
    assert_error(clip_client.get("/api/image/cat%2Fcat_0.png?size=5000"), 422, "size")
    assert_error(clip_client.get("/api/image/cat%2Fcat_0.png?size=1"), 422, "size")


# ---------------------------------------------------------------- writes and the token


def add_files(*seeds: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{seed}.png", noise_png(seed), "image/png")) for seed in seeds]


def test_write_endpoints_need_the_token(make_client, clip_index: Path) -> None:
    with make_client(clip_index, token="s3cret") as client:
        add = {"files": add_files(1), "data": {"ids": ["new-1"]}}
        assert_error(client.post("/api/items", **add), 401, "Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(client.post("/api/items", headers=wrong, **add), 403, "wrong")
        assert_error(client.post("/api/items", headers={"Authorization": "s3cret"}, **add), 401)
        assert_error(client.delete("/api/items/cat/cat_0.png"), 401)
        assert_error(client.delete("/api/items/cat/cat_0.png", headers=wrong), 403)
        assert_error(client.post("/api/admin/compact"), 401)
        vectors = {"items": [{"id": "v1", "vector": [0.1] * 16}]}
        assert_error(client.post("/api/items/vectors", json=vectors), 401)
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/api/items", headers=good, **add).status_code == 201
        assert client.delete("/api/items/new-1", headers=good).status_code == 200
        # searching needs no token
        assert client.post("/api/search/item", json={"id": "cat/cat_0.png"}).status_code == 200


def test_token_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tiny_clip, clip_index: Path
) -> None:
    monkeypatch.setenv("LOOKALIKE_SERVE_TOKEN", "from-env")
    app = create_app(clip_index, model=tiny_clip, settings=ServeSettings(device="cpu"))
    with TestClient(app) as client:
        assert_error(client.delete("/api/items/cat/cat_0.png"), 401)
        headers = {"Authorization": "Bearer from-env"}
        assert client.delete("/api/items/cat/cat_0.png", headers=headers).status_code == 200


def test_adding_an_existing_id_is_409(clip_client: TestClient) -> None:
    response = clip_client.post("/api/items", files=add_files(1), data={"ids": ["cat/cat_0.png"]})
    assert_error(response, 409, "already in the catalogue")
    response = clip_client.post("/api/items", files=add_files(1, 2), data={"ids": ["a", "a"]})
    assert_error(response, 409, "repeated")


def test_add_with_mismatched_ids_labels_or_bad_ids_is_422(clip_client: TestClient) -> None:
    response = clip_client.post("/api/items", files=add_files(1, 2), data={"ids": ["only-one"]})
    assert_error(response, 422, "one id per image")
    data = {"ids": ["x"], "labels": ["a", "b"]}
    assert_error(clip_client.post("/api/items", files=add_files(1), data=data), 422, "labels")
    for bad in ("", " padded", "line\nbreak", "x" * 300):
        response = clip_client.post("/api/items", files=add_files(1), data={"ids": [bad]})
        assert response.status_code == 422, bad
    assert clip_client.get("/api/info").json()["items"] == 12


def test_vector_items_are_checked(clip_client: TestClient) -> None:
    body = {"items": [{"id": "v", "vector": [0.1] * 3}]}
    assert_error(clip_client.post("/api/items/vectors", json=body), 422, "16-d")


# ---------------------------------------------------------------- what the model cannot do


def test_a_server_without_a_model_refuses_image_and_text_queries(
    make_client, clip_index: Path, catalogue_images: Path
) -> None:
    with make_client(clip_index, model=None) as client:
        files = image_files(catalogue_image(catalogue_images))
        assert_error(client.post("/api/search/image", files=files), 400, "no model")
        assert_error(client.post("/api/search/text", json={"text": "a cat"}), 400, "no model")
        response = client.post("/api/items", files=add_files(1), data={"ids": ["n"]})
        assert_error(response, 400, "no model")
        # search by item and by vector still work, and so do vector additions
        assert client.post("/api/search/item", json={"id": "cat/cat_0.png"}).status_code == 200
        assert client.post("/api/search/vector", json={"vector": [0.2] * 16}).status_code == 200
        body = {"items": [{"id": "v", "vector": [0.3] * 16, "label": "cat"}]}
        assert client.post("/api/items/vectors", json=body).status_code == 201
        assert client.get("/readyz").status_code == 200


def test_text_search_needs_a_text_tower(tmp_path: Path) -> None:
    image_only = create_embedder(CLIP_ARCH, weights=None, with_text=False, **TINY_CLIP)
    assert "no text tower" in text_support(image_only)
    with_head = create_embedder(CLIP_ARCH, weights=None, head="linear:8", **TINY_CLIP)
    assert "head" in text_support(with_head)
    vectors = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(5)]
    gallery = EmbeddingSet(vectors, ids, [""] * 5, [None] * 5)  # no fingerprint stored
    _, folder = build_index(gallery, tmp_path / "index")
    with TestClient(
        create_app(folder, model=image_only, settings=ServeSettings(token="", device="cpu"))
    ) as client:
        response = client.post("/api/search/text", json={"text": "a cat"})
        assert_error(response, 400, "no text tower")
        assert client.get("/api/info").json()["text_search"] is False


def test_empty_or_long_text_is_refused(make_client, clip_index: Path) -> None:
    with make_client(clip_index, max_text_chars=20) as client:
        assert_error(client.post("/api/search/text", json={"text": ""}), 422)
        assert_error(client.post("/api/search/text", json={"text": "   "}), 422, "empty")
        assert_error(client.post("/api/search/text", json={"text": "x" * 21}), 413, "limit is 20")


# ---------------------------------------------------------------- the app itself


def test_another_model_is_refused_at_start(clip_index: Path) -> None:
    torch.manual_seed(1)
    other = create_embedder(CLIP_ARCH, weights=None, **TINY_CLIP)  # other random weights
    with pytest.raises(ValueError, match="fingerprint"):
        create_app(clip_index, model=other)


def test_two_servers_cannot_share_a_state_folder(tiny_clip, clip_index: Path) -> None:
    first = create_app(clip_index, model=tiny_clip, settings=ServeSettings(token="", device="cpu"))
    with pytest.raises(ValueError, match="another server holds"):
        create_app(clip_index, model=None)
    first.state.serve.stop()
    second = create_app(clip_index, model=None)  # free again once the first has stopped
    second.state.serve.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"max_k": 0}, "max_k"), ({"default_k": 200}, "default_k"), ({"batch_max": 0}, "batch_max"),
     ({"batch_wait_ms": -1}, "batch_wait_ms"), ({"compact_every": -3}, "compact_every")],
)  # fmt: skip
def test_invalid_settings_are_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServeSettings(**settings)


def test_a_bad_device_fails_before_the_state_folder_is_taken(tiny_clip, clip_index: Path) -> None:
    with pytest.raises(ValueError, match="device"):
        create_app(clip_index, model=tiny_clip, settings=ServeSettings(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA device"):
            create_app(clip_index, model=tiny_clip, settings=ServeSettings(device="cuda"))
    create_app(clip_index, model=None).state.serve.stop()  # the folder is still free


def test_changes_to_a_memory_mapped_index_are_a_409_not_a_poisoned_journal(
    tmp_path: Path,
) -> None:
    vectors = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(40)]
    gallery = EmbeddingSet(vectors, ids, [""] * 40, [None] * 40)
    _, folder = build_index(gallery, tmp_path / "index", kind="ivf_flat", nlist=2, mmap=True)
    settings = ServeSettings(token="", device="cpu")
    with TestClient(create_app(folder, model=None, settings=settings)) as client:
        assert client.get("/api/info").json()["read_only"] is True
        added = client.post("/api/items/vectors",
                            json={"items": [{"id": "new", "vector": vectors[0].tolist()}]})  # fmt: skip
        assert_error(added, 409, "read-only; rebuild it without mmap")
        assert_error(client.delete("/api/items/v3"), 409, "read-only")
        assert_error(client.post("/api/admin/compact"), 409, "read-only")
        assert client.get("/api/items", params={"limit": 100}).json()["total"] == 40
    with TestClient(create_app(folder, model=None, settings=settings)) as client:  # restarts
        assert client.get("/api/info").json()["items"] == 40
