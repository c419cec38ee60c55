"""The web page in real headless Chromium (Debian's ``chromium`` driven by Playwright): upload a
Caltech image and see its class first; search by text with a CLIP model; drop, paste, click.

Skipped where chromium or Playwright is absent (``make test`` installs both).
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import serve_in_thread

from lookalike import EmbedSpec, ModelSpec, build_index, embed_images
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.index import set_index_threshold
from lookalike.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

CALTECH_CLASSES = ("accordion", "airplanes", "Motorbikes", "sunflower")
GALLERY_PER_CLASS = 12
QUERY = ("accordion", 20)  # held out of the gallery
PHONE = {"width": 390, "height": 844}
LITE0 = ModelSpec("efficientnet_lite:lite0", pool="gap")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


def caltech_index(caltech: Path, folder: Path) -> Path:
    records = [
        ImageRecord(id=path.relative_to(caltech).as_posix(), path=path, label=name)
        for name in CALTECH_CLASSES
        for path in sorted((caltech / name).glob("*.jpg"))[:GALLERY_PER_CLASS]
    ]
    gallery = embed_images(
        ImageSet(records, "gallery"), None, model=LITE0,
        embed=EmbedSpec(batch_size=16, num_workers=0, device="cpu"),
    )  # fmt: skip
    return build_index(gallery, folder)[1]


def assert_not_blank(png: bytes) -> None:
    """A screenshot with content: many colours, and contrast."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image)
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


def wait_until(page: object, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page until it is true (``wait_for_function`` evaluates strings
    with ``eval``, which the page's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


ALL_IMAGES_LOADED = (
    "[...document.querySelectorAll('#results .hit img')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def no_horizontal_scroll(page: object) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.shared_data
@pytest.mark.slow
def test_uploading_a_caltech_image_shows_its_class_first(
    shared_data: Path, tmp_path: Path, browser: object
) -> None:
    caltech = shared_data / "caltech101"
    index = caltech_index(caltech, tmp_path / "index")
    query = caltech / QUERY[0] / f"image_{QUERY[1]:04d}.jpg"
    app = create_app(index, model=LITE0, settings=ServeSettings(token="", device="cpu"))
    with serve_in_thread(app) as url:
        page = browser.new_page(viewport=PHONE, device_scale_factor=2)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        assert "48 items" in page.inner_text("#catalogue")
        assert page.is_hidden("#text-form")  # Lite0 has no text tower
        page.set_input_files("#file-input", str(query))
        page.wait_for_selector("#results .hit")
        labels = page.locator("#results .hit .label").all_inner_texts()
        assert labels[0] == f"1. {QUERY[0]}", labels
        assert sum(label.endswith(QUERY[0]) for label in labels[:5]) >= 4
        wait_until(page, ALL_IMAGES_LOADED)
        assert no_horizontal_scroll(page)
        shot = page.screenshot(path=str(tmp_path / "caltech_phone.png"), full_page=True)
        assert_not_blank(shot)
        # a click on a result searches by that item
        first = page.locator("#results .hit").first
        clicked = first.get_attribute("data-id")
        first.click()
        wait_until(
            page, f"document.querySelector('#query-caption').textContent === 'similar to {clicked}'"
        )
        page.wait_for_selector("#results .hit")
        assert clicked not in page.locator("#results .hit").evaluate_all(
            "cards => cards.map(c => c.dataset.id)"
        )
        page.close()


@pytest.fixture
def clip_page(browser: object, tiny_clip, clip_index: Path) -> Iterator[object]:
    app = create_app(clip_index, model=tiny_clip, settings=ServeSettings(token="", device="cpu"))
    with serve_in_thread(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        yield page
        page.close()


def test_text_search_with_a_clip_model_shows_a_grid(clip_page: object, tmp_path: Path) -> None:
    page = clip_page
    assert page.is_visible("#text-form")
    page.fill("#text-input", "a red square")
    page.press("#text-input", "Enter")
    page.wait_for_selector("#results .hit")
    assert page.locator("#results .hit").count() == 12
    scores = page.locator("#results .hit .score").all_inner_texts()
    assert all(score.startswith("score ") for score in scores)
    assert page.inner_text("#query-caption") == "“a red square”"
    wait_until(page, ALL_IMAGES_LOADED)
    assert_not_blank(page.screenshot(path=str(tmp_path / "clip_text.png"), full_page=True))


DROP_OR_PASTE = """async (kind) => {
  const blob = await (await fetch('/api/image/dog%2Fdog_1.png?size=64')).blob();
  const data = new DataTransfer();
  data.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
  const event = kind === 'drop'
    ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
    : new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
  document.dispatchEvent(event);
}"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_dropping_or_pasting_an_image_searches_by_it(clip_page: object, kind: str) -> None:
    page = clip_page
    page.evaluate(DROP_OR_PASTE, kind)
    page.wait_for_selector("#results .hit")
    assert page.inner_text("#query-caption") == "dropped.jpg"
    assert page.locator("#results .hit").count() == 12


def test_no_match_marker_and_errors_are_shown(
    browser: object, tiny_clip, clip_index: Path, catalogue_images: Path
) -> None:
    set_index_threshold(clip_index, 0.99999)  # only the image itself passes
    app = create_app(clip_index, model=tiny_clip, settings=ServeSettings(token="", device="cpu"))
    with serve_in_thread(app) as url:
        page = browser.new_page(viewport=PHONE)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(catalogue_images / "cat" / "cat_0.png"))
        page.wait_for_selector("#results .no-match")
        cards = page.locator("#results > *").evaluate_all(
            "cards => cards.map(c => c.className + ':' + (c.dataset.id || c.textContent))"
        )
        assert cards[:2] == ["hit:cat/cat_0.png", "no-match:no match (rank 2)"]
        assert len(cards) == 12
        page.set_input_files(
            "#file-input",
            files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image"}],
        )
        page.wait_for_selector("#status.error")
        assert "not an image" in page.inner_text("#status")
        page.close()
