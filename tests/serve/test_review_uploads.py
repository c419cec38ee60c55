"""Review: an uploaded image is answered as the library's own search answers that file.

The reference is :func:`lookalike.embed_images` (default :class:`~lookalike.EmbedSpec`) on the
same files, then :func:`lookalike.search.topk.search` on the served index: the server must decode
an upload as ``embed`` decodes a file, so a gallery image finds itself with score 1.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import png_bytes

from lookalike import EmbedSpec, build_index, embed_images, load_index
from lookalike.models import Embedder
from lookalike.search.topk import search
from lookalike.serve import ServeSettings, create_app


def smooth_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A JPEG of smooth colour fields with fine stripes: decoding it at a reduced scale (Pillow's
    draft mode) changes what a 32-pixel model sees."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(0.01, 0.08, 3)
        stripes = 60 * np.sin(x * rng.uniform(0.5, 1.5)) * (rng.random() > 0.5)
        channels.append(128 + 70 * np.sin(a * x + b * y + c * x * y / 50) + stripes)
    pixels = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg_catalogue(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Embedder) -> Path:
    """10 large JPEGs in two classes, embedded and indexed as ``lookalike embed`` does."""
    root = tmp_path_factory.mktemp("jpegs") / "images"
    for number in range(10):
        folder = root / ("sky" if number % 2 else "sea")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number}.jpg").write_bytes(smooth_jpeg(number, (240, 180)))
    gallery = embed_images(root, None, model=tiny_clip, embed=EmbedSpec(num_workers=0))
    _, folder = build_index(gallery, root.parent / "index", kind="flat")
    return folder


def client_of(index: Path, tiny_clip: Embedder, tmp_path: Path) -> TestClient:
    settings = ServeSettings(token="", device="cpu", batch_wait_ms=1.0,
                             state_dir=str(tmp_path / "state"))  # fmt: skip
    return TestClient(create_app(index, model=tiny_clip, settings=settings))


def upload(client: TestClient, *payloads: bytes, k: int = 10) -> dict:
    files = [("images", (f"q{i}", data, "application/octet-stream")) for i, data in
             enumerate(payloads)]  # fmt: skip
    response = client.post("/api/search/image", files=files,
                           data={"k": str(k), "use_threshold": "false"})  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def answer(body: dict, query: int = 0) -> tuple[list[str], list[float]]:
    hits = body["results"][query]["hits"]
    return [hit["id"] for hit in hits], [hit["score"] for hit in hits]


def test_a_large_jpeg_is_answered_as_the_library_answers_it(
    tmp_path: Path, tiny_clip: Embedder, jpeg_catalogue: Path
) -> None:
    """Queries (new JPEGs) and the gallery's own files: the same ids and scores as
    ``embed_images`` + ``search``; each gallery image first, with score 1."""
    queries = tmp_path / "queries" / "q"
    queries.mkdir(parents=True)
    for number in range(4):
        (queries / f"{number}.jpg").write_bytes(smooth_jpeg(100 + number, (320, 200)))
    images = jpeg_catalogue.parent / "images"
    gallery_files = sorted(images.rglob("*.jpg"))
    index, metadata = load_index(jpeg_catalogue)
    offline = embed_images(queries.parent, None, model=tiny_clip, embed=EmbedSpec(num_workers=0))
    reference = search(index, offline.embeddings, 10)
    with client_of(jpeg_catalogue, tiny_clip, tmp_path) as client:
        for row, item in enumerate(offline.ids):
            ids, scores = answer(upload(client, (queries.parent / item).read_bytes()))
            assert ids == [metadata.ids[i] for i in reference.indices[row]]
            np.testing.assert_allclose(scores, reference.scores[row], atol=2e-5)
        for path in gallery_files:
            ids, scores = answer(upload(client, path.read_bytes(), k=1))
            assert ids == [path.relative_to(images).as_posix()]
            assert scores[0] == pytest.approx(1.0, abs=2e-5)


def test_several_images_in_one_request_keep_their_order(
    tmp_path: Path, tiny_clip: Embedder, jpeg_catalogue: Path
) -> None:
    payloads = [smooth_jpeg(200 + number, (96, 80)) for number in range(5)]
    with client_of(jpeg_catalogue, tiny_clip, tmp_path) as client:
        alone = [answer(upload(client, payload)) for payload in payloads]
        for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
            body = upload(client, *(payloads[i] for i in order))
            assert [result["query"] for result in body["results"]] == [f"q{i}" for i in range(5)]
            for position, number in enumerate(order):
                ids, scores = answer(body, position)
                assert ids == alone[number][0]
                np.testing.assert_allclose(scores, alone[number][1], atol=1e-5)


@pytest.mark.parametrize("size", [(60, 40), (240, 180)])
def test_a_png_of_a_jpegs_pixels_answers_as_the_jpeg_decoded_in_full(
    tmp_path: Path, tiny_clip: Embedder, jpeg_catalogue: Path, size: tuple[int, int]
) -> None:
    """Below the size ``embed`` decodes at a reduced scale the two are the same image; above
    it the JPEG is answered as ``embed`` decodes it (checked above) and the PNG as its pixels."""
    jpeg = smooth_jpeg(300, size)
    pixels = Image.open(io.BytesIO(jpeg))
    pixels.load()
    png = png_bytes(pixels)
    with client_of(jpeg_catalogue, tiny_clip, tmp_path) as client:
        body = upload(client, png, jpeg)
        decoded_png = Image.open(io.BytesIO(png)).convert("RGB")
        assert np.array_equal(np.asarray(decoded_png), np.asarray(pixels.convert("RGB")))
        if size == (60, 40):
            assert answer(body, 0) == answer(body, 1)
        else:  # the PNG is the full-size pixels: the answer of the JPEG decoded in full
            full = tmp_path / "full" / "x"
            full.mkdir(parents=True)
            (full / "a.jpg").write_bytes(jpeg)
            offline = embed_images(full.parent, None, model=tiny_clip,
                                   embed=EmbedSpec(num_workers=0, draft_decode=False))  # fmt: skip
            index, metadata = load_index(jpeg_catalogue)
            reference = search(index, offline.embeddings, 10)
            ids, scores = answer(body, 0)
            assert ids == [metadata.ids[i] for i in reference.indices[0]]
            np.testing.assert_allclose(scores, reference.scores[0], atol=2e-5)


def mpo_bytes(seed: int) -> bytes:
    """A multi-picture JPEG (MPO: a photo and a second picture, as phone cameras write)."""
    photo = Image.open(io.BytesIO(smooth_jpeg(seed, (90, 70))))
    second = Image.new("RGB", (30, 20), (0, 0, 0))
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[second])
    return buffer.getvalue()


def test_a_multi_picture_jpeg_is_answered_as_the_library_reads_it(
    tmp_path: Path, tiny_clip: Embedder, jpeg_catalogue: Path
) -> None:
    """Pillow calls such a JPEG "MPO": it was refused (415) though ``embed`` reads its photo."""
    data = mpo_bytes(400)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    folder = tmp_path / "queries" / "q"
    folder.mkdir(parents=True)
    (folder / "phone.jpg").write_bytes(data)
    offline = embed_images(folder.parent, None, model=tiny_clip, embed=EmbedSpec(num_workers=0))
    index, metadata = load_index(jpeg_catalogue)
    reference = search(index, offline.embeddings, 10)
    with client_of(jpeg_catalogue, tiny_clip, tmp_path) as client:
        ids, scores = answer(upload(client, data))
        assert ids == [metadata.ids[i] for i in reference.indices[0]]
        np.testing.assert_allclose(scores, reference.scores[0], atol=2e-5)
        files = [("images", ("phone", data, "image/jpeg"))]
        added = client.post("/api/items", files=files, data={"ids": ["phone"]})
        assert added.status_code == 201, added.text
        stored = client.app.state.serve.store.catalogue.path_of("phone")
        assert stored.endswith(".jpg")
        assert answer(upload(client, data, k=1))[0] == ["phone"]
