"""A generated corpus of broken and odd image files, with what lookalike must do with each.

:func:`write_corpus` builds a folder per class of files a hostile but fair user might hand over:
every Pillow mode the loader converts, EXIF rotations, extreme sizes, odd file and class names,
files that are truncated, empty, not images at all or decompression bombs, FIFOs, broken links,
links leading outside the root, a link loop and links to images listed anyway. Each entry says
what must happen to it:

- ``"embedded"``: read, embedded once, under its class label;
- ``"skipped"``: listed in ``skipped.csv`` with a reason (never silently lost);
- ``"duplicate"``: a link to an image listed under its own path, so not embedded a second time.

Cases the machine cannot produce (a folder root can still read) are returned in ``not_built``
with the reason, rather than quietly left out.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("alpha", "beta", "gamma ñ", "EPSILON")
"""Class folders (one with a space and a non-ASCII letter, one in capitals)."""

EMBEDDED, SKIPPED, DUPLICATE = "embedded", "skipped", "duplicate"


@dataclass(frozen=True)
class Entry:
    """One file (or folder, or link) of the corpus.

    Attributes:
        id: Its id in an embedding folder: the path relative to the root, POSIX-style.
        label: Its class folder.
        outcome: "embedded", "skipped" or "duplicate".
        case: What is odd about it, in a few words.
        duplicate_of: For a duplicate, the id of the image it links to.
    """

    id: str
    label: str
    outcome: str
    case: str
    duplicate_of: str | None = None


@dataclass
class Corpus:
    """The written corpus: its root and what each entry must become."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    not_built: dict[str, str] = field(default_factory=dict)

    def ids(self, outcome: str) -> set[str]:
        """The ids of the entries with ``outcome``."""
        return {entry.id for entry in self.entries if entry.outcome == outcome}

    def label_of(self, image_id: str) -> str:
        return next(entry.label for entry in self.entries if entry.id == image_id)


def _noise(rng: np.random.Generator, size: tuple[int, int], tint: int) -> Image.Image:
    """An RGB image of ``size`` (width, height): a class tint plus noise, unique per call."""
    width, height = size
    base = np.array([(tint * 70) % 256, (tint * 130 + 60) % 256, (tint * 200 + 30) % 256])
    pixels = np.clip(base + rng.integers(-90, 90, (height, width, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png() -> bytes:
    """A well-formed PNG claiming 40000 x 40000 px (1.6e9 px, over twice Pillow's guard): Pillow
    refuses it on opening, before decoding a pixel."""
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


class _Writer:
    """Writes corpus files and records what each must become."""

    def __init__(self, root: Path, seed: int) -> None:
        self.corpus = Corpus(root)
        self.rng = np.random.default_rng(seed)

    def image(self, label: str, name: str, case: str, image: Image.Image, fmt: str,
              **options: object) -> None:
        self.raw(label, name, case, EMBEDDED, _encoded(image, fmt, **options))

    def raw(self, label: str, name: str, case: str, outcome: str, data: bytes) -> None:
        path = self.corpus.root / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.add(label, name, case, outcome)

    def add(self, label: str, name: str, case: str, outcome: str,
            duplicate_of: str | None = None) -> None:
        self.corpus.entries.append(Entry(f"{label}/{name}", label, outcome, case, duplicate_of))

    def noise(self, label: str, size: tuple[int, int] = (48, 40)) -> Image.Image:
        return _noise(self.rng, size, CLASSES.index(label))


def write_corpus(root: Path, outside: Path, seed: int = 0) -> Corpus:
    """Write the corpus under ``root``; ``outside`` receives what links lead out of the root to.

    Returns:
        The corpus with one :class:`Entry` per file, folder or link that a walk meets.
    """
    w = _Writer(root, seed)
    alpha, beta, gamma, epsilon = CLASSES
    for label in CLASSES:
        w.image(label, "plain.jpg", "RGB JPEG", w.noise(label), "JPEG", quality=90)
        w.image(label, "plain.png", "RGB PNG", w.noise(label), "PNG")

    # Pillow modes the loader converts to 8-bit RGB.
    w.image(alpha, "cmyk.jpg", "CMYK JPEG", w.noise(alpha).convert("CMYK"), "JPEG")
    sixteen = (w.rng.integers(0, 65535, (40, 48))).astype(np.uint16)
    w.image(alpha, "sixteen_bit.png", "16-bit grey PNG", Image.fromarray(sixteen), "PNG")
    palette = w.noise(alpha).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    w.image(alpha, "palette_alpha.png", "palette + transparency PNG", palette, "PNG",
            transparency=0)
    rgba = w.noise(alpha).convert("RGBA")
    rgba.putalpha(Image.fromarray(w.rng.integers(0, 255, (40, 48)).astype(np.uint8)))
    w.image(alpha, "rgba.png", "RGBA PNG", rgba, "PNG")
    w.image(alpha, "grey_alpha.png", "LA PNG", w.noise(alpha).convert("LA"), "PNG")
    w.image(alpha, "one_bit.png", "1-bit PNG", w.noise(alpha).convert("1"), "PNG")
    w.image(alpha, "one_bit.bmp", "1-bit BMP", w.noise(alpha).convert("1"), "BMP")
    w.image(alpha, "grey.jpg", "greyscale JPEG", w.noise(alpha).convert("L"), "JPEG")
    w.image(alpha, "progressive.jpg", "progressive JPEG", w.noise(alpha), "JPEG",
            progressive=True)
    w.image(alpha, "rgb24.bmp", "24-bit BMP", w.noise(alpha), "BMP")
    frames = [w.noise(beta).convert("P") for _ in range(3)]
    w.image(beta, "animated.gif", "animated GIF", frames[0], "GIF", save_all=True,
            append_images=frames[1:], duration=80, loop=0)
    w.image(beta, "still.gif", "one-frame GIF", w.noise(beta).convert("P"), "GIF")
    w.image(beta, "lossy.webp", "WebP", w.noise(beta), "WEBP", quality=80)
    w.image(beta, "alpha.webp", "WebP with alpha", w.noise(beta).convert("RGBA"), "WEBP",
            lossless=True)
    w.image(beta, "rgb.tif", "RGB TIFF", w.noise(beta), "TIFF")
    w.image(beta, "sixteen.tiff", "16-bit TIFF", Image.fromarray(sixteen), "TIFF")
    floats = Image.fromarray(w.rng.random((40, 48)).astype(np.float32), mode="F")
    w.image(beta, "float.tif", "32-bit float TIFF", floats, "TIFF")
    ints = Image.fromarray(w.rng.integers(0, 60000, (40, 48)).astype(np.int32), mode="I")
    w.image(beta, "int32.tif", "32-bit integer TIFF", ints, "TIFF")

    # Sizes and orientations.
    w.image(gamma, "one_pixel.png", "1x1 PNG", w.noise(gamma, (1, 1)), "PNG")
    w.image(gamma, "wide.png", "10000x10 PNG", w.noise(gamma, (10_000, 10)), "PNG")
    w.image(gamma, "tall.jpg", "10x10000 JPEG", w.noise(gamma, (10, 10_000)), "JPEG")
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        w.image(gamma, f"exif_{orientation}.jpg", f"EXIF orientation {orientation}",
                w.noise(gamma, (48, 32)), "JPEG", exif=exif)

    # Names.
    w.image(epsilon, "with spaces.png", "spaces in the name", w.noise(epsilon), "PNG")
    w.image(epsilon, "grenouille ñ 蛙.png", "unicode name", w.noise(epsilon), "PNG")
    w.image(epsilon, "-leading-dash.png", "leading dash", w.noise(epsilon), "PNG")
    w.image(epsilon, "n" * 200 + ".png", "200-character name", w.noise(epsilon), "PNG")
    w.image(epsilon, "UPPER.JPG", "upper-case .JPG", w.noise(epsilon), "JPEG")
    w.image(epsilon, "SHOUT.JPEG", "upper-case .JPEG", w.noise(epsilon), "JPEG")
    w.image(epsilon, "mixed.PnG", "mixed-case .PnG", w.noise(epsilon), "PNG")
    w.image(epsilon, "deep/er/nested.png", "nested two folders down", w.noise(epsilon), "PNG")
    w.image(epsilon, "folder.jpg/inside.png", "inside a folder named .jpg", w.noise(epsilon),
            "PNG")
    w.image(epsilon, "png_inside.jpg", "PNG bytes named .jpg", w.noise(epsilon), "PNG")
    w.image(epsilon, "jpeg_inside.png", "JPEG bytes named .png", w.noise(epsilon), "JPEG")
    w.image(epsilon, "tif_as.tiff.jpg", "two suffixes", w.noise(epsilon), "JPEG")

    # Files that cannot be read: each must be listed in skipped.csv with a reason.
    jpeg = _encoded(w.noise(alpha, (64, 64)), "JPEG", quality=95)
    png = _encoded(w.noise(alpha, (64, 64)), "PNG")
    gif = _encoded(w.noise(beta, (64, 64)).convert("P"), "GIF")
    webp = _encoded(w.noise(beta, (64, 64)), "WEBP", quality=90)
    tiff = _encoded(w.noise(beta, (64, 64)), "TIFF")
    for label, name, case, data in (
        (alpha, "empty.jpg", "zero bytes", b""),
        (alpha, "empty.png", "zero bytes", b""),
        (alpha, "half.jpg", "truncated JPEG", jpeg[: len(jpeg) // 2]),
        (alpha, "half.png", "truncated PNG", png[: len(png) // 2]),
        (alpha, "header_only.jpg", "JPEG header only", jpeg[:100]),
        (beta, "words.jpg", "text named .jpg", b"this is not an image\n" * 20),
        (beta, "page.png", "HTML named .png", b"<!doctype html><html><body>404</body></html>"),
        (beta, "noise.webp", "random bytes named .webp", w.rng.bytes(2048)),
        (beta, "cut.gif", "truncated GIF", gif[:40]),
        (beta, "cut.webp", "truncated WebP", webp[: len(webp) // 2]),
        (beta, "header_only.tif", "TIFF header only", tiff[:8]),
        (gamma, "bomb.png", "decompression bomb (40000x40000 header)", _bomb_png()),
        (gamma, "nul.jpg", "NUL bytes named .jpg", b"\x00" * 4096),
    ):
        w.raw(label, name, case, SKIPPED, data)

    fifo = root / gamma / "fifo.jpg"
    os.mkfifo(fifo)
    w.add(gamma, "fifo.jpg", "a FIFO named .jpg", SKIPPED)
    os.symlink(root / gamma / "never_written.jpg", root / gamma / "dangling.jpg")
    w.add(gamma, "dangling.jpg", "broken symbolic link", SKIPPED)

    # Links: out of the root (reported), back up (a loop), to images listed anyway (once).
    outside.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        _noise(w.rng, (48, 40), 9).save(outside / f"stranger_{i}.png")
    os.symlink(outside, root / beta / "escape")
    w.add(beta, "escape", "link to a folder outside the root", SKIPPED)
    os.symlink(outside / "stranger_0.png", root / beta / "stranger.png")
    w.add(beta, "stranger.png", "link to a file outside the root", SKIPPED)
    os.symlink("..", root / alpha / "dirloop")  # every class again, under alpha, if followed
    os.symlink(root / beta / "plain.png", root / alpha / "beta_alias.png")
    w.add(alpha, "beta_alias.png", "link to another class's image", DUPLICATE, f"{beta}/plain.png")
    os.symlink("plain.jpg", root / alpha / "same_again.jpg")
    w.add(alpha, "same_again.jpg", "link to an image beside it", DUPLICATE, f"{alpha}/plain.jpg")
    os.symlink(root / gamma, root / epsilon / "gamma_link")
    for entry in [e for e in w.corpus.entries if e.label == gamma and e.outcome == EMBEDDED]:
        name = entry.id.split("/", 1)[1]
        w.add(epsilon, f"gamma_link/{name}", "inside a linked class folder", DUPLICATE, entry.id)

    # A folder that cannot be listed, and a file that cannot be opened: chmod does not stop root.
    if os.geteuid() == 0:
        w.corpus.not_built["unreadable folder"] = "running as root, which reads chmod 000 folders"
        w.corpus.not_built["unreadable file"] = "running as root, which reads chmod 000 files"
    else:
        w.raw(beta, "locked/hidden.png", "in a chmod 000 folder", SKIPPED, png)
        (root / beta / "locked").chmod(0)
        w.corpus.entries[-1] = Entry(f"{beta}/locked", beta, SKIPPED, "chmod 000 folder")
        w.raw(beta, "unreadable.png", "chmod 000 file", SKIPPED, png)
        (root / beta / "unreadable.png").chmod(0)
    return w.corpus


def unlock(corpus: Corpus) -> None:
    """Give back the permissions taken, so the temporary folder can be removed."""
    for entry in corpus.entries:
        path = corpus.root / entry.id
        if not path.is_symlink() and path.exists() and entry.case.startswith("chmod 000"):
            path.chmod(0o755)
