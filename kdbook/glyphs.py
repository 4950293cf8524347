"""Glyphs: look-alike characters rendered from the fonts matplotlib ships, a harder second
embedded image set (``load_dataset("glyphs")``).

Ten characters in two families of look-alikes, round (``O 0 Q C G D``) and upright
(``I 1 J 7``), are drawn from 21 font faces that come with matplotlib (DejaVu Sans, Sans
Mono and Serif, STIX General, Computer Modern), each image under its own random stroke
width, affine warp, blur, contrast and noise, in the spirit of notMNIST: 16 x 16 grey
images, light ink on a dark background. The validation and test splits are drawn from
faces that training never sees (five each, disjoint), so a model is graded on typefaces it
has not met: even a good teacher is clearly imperfect, and what it takes for what (``1``
for ``I``, ``O`` for ``0``) is a likeness a reader can name.

Nothing is downloaded: the fonts are matplotlib's own files. The images follow from the
seed, given the installed matplotlib (its fonts and FreeType): :func:`make_glyphs` makes
them in about a second, :func:`load_glyphs` keeps them in ``data/glyphs/`` after the first
time, and :func:`kdbook.data.load_dataset` wraps them in a ``Dataset``. data/README.md
says how they are made and under which licences the fonts are.

>>> splits = make_glyphs(per_font=2)
>>> images, labels, faces = splits["train"]
>>> images.dtype, tuple(images.shape), labels.bincount().tolist() == [len(TRAIN_FONTS) * 2] * 10
(torch.uint8, (220, 1, 16, 16), True)
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from kdbook.config import GLYPHS
from kdbook.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.ft2font import FT2Font

# Capital I and lowercase l are one and the same bar in the sans faces (DejaVu Sans,
# Computer Modern Sans): a third of their images would have no right answer, so l is left
# out and 7 (a look-alike of 1) stands in.
GLYPH_CLASSES: tuple[str, ...] = ("O", "0", "Q", "C", "G", "D", "I", "1", "J", "7")
# Font files of matplotlib's mpl-data/fonts/ttf, by split, disjoint: each held-out split has a
# face of every family that training has (DejaVu Sans, Sans Mono, Serif; STIX; Computer Modern).
TRAIN_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)
VAL_FONTS: tuple[str, ...] = (
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneralItalic.ttf",
    "cmtt10.ttf",
)
TEST_FONTS: tuple[str, ...] = (
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralBol.ttf",
    "cmss10.ttf",
)
SPLIT_FONTS = {"train": TRAIN_FONTS, "val": VAL_FONTS, "test": TEST_FONTS}
PER_FONT = {"train": 12, "val": 12, "test": 20}  # images of each class from each face
GLYPH_MEAN, GLYPH_STD = (0.17,), (0.18,)  # of the default training images, grey levels in [0, 1]
GLYPH_PAD = 1  # training shifts by up to this many pixels, never flips (a mirrored J is no J)
IMAGE_SIZE = 16
MASTER = 4  # characters are drawn at MASTER x the image side, then warped and averaged down
STROKES = (0, 1, 2)  # thickenings of the strokes, in pixels of the drawing (thinning would
# erase the hairlines of the serif faces: an O would become two bars)
# Each image's affine map: a rotation up to +-degrees, a shear up to +-shear, a scale, an
# aspect ratio within 1 +- aspect, a shift up to +-shift of half the side.
WARP = {"degrees": 15.0, "shear": 0.25, "scale": (0.7, 0.95), "aspect": 0.05, "shift": 0.22}
BLUR = (0.1, 0.8)  # the Gaussian blur's sigma, in pixels of the image
INK, PAPER = (0.6, 1.0), (0.0, 0.2)  # grey levels of the strokes and of the background
NOISE = (0.0, 0.08)  # the standard deviation of the Gaussian noise on each image
CACHE_VERSION = 1  # raise when the images change for the same settings


def font_folder() -> Path:
    """matplotlib's folder of TrueType fonts (``mpl-data/fonts/ttf``)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def missing_fonts() -> list[str]:
    """The font files of :data:`SPLIT_FONTS` that are not in :func:`font_folder`."""
    folder = font_folder()
    return [
        name for fonts in SPLIT_FONTS.values() for name in fonts if not (folder / name).is_file()
    ]


def _render(font: FT2Font, char: str, em: float) -> tuple[np.ndarray, float]:
    """The antialiased bitmap of ``char`` at ``em`` pixels per em, ink 1, and how far its
    bottom row lies below the baseline, in pixels."""
    font.set_size(em, 72)  # points at 72 dpi: pixels
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return np.asarray(font.get_image(), dtype=np.float32) / 255.0, font.get_descent() / 64.0


def render_masters(
    fonts: tuple[str, ...], classes: tuple[str, ...] = GLYPH_CLASSES, side: int = 64
) -> torch.Tensor:
    """Every character of ``classes`` in every face of ``fonts`` (files in
    :func:`font_folder`), float ``(len(fonts), len(classes), side, side)`` in [0, 1], ink 1.

    One scale per face, so that its characters keep their sizes relative to each other
    (``0`` narrower than ``O``, ``J`` below the baseline in some faces): the face's
    characters together span 80 % of the height, on one baseline, each centred across.
    """
    from matplotlib.ft2font import FT2Font

    folder = font_folder()
    masters = np.zeros((len(fonts), len(classes), side, side), dtype=np.float32)
    for f, name in enumerate(fonts):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"font {name} is not in {folder}: the glyphs data set needs the fonts that "
                "matplotlib ships; reinstall matplotlib"
            )
        font = FT2Font(str(folder / name))
        drawn = [_render(font, c, 100.0) for c in classes]
        span = max(img.shape[0] - d for img, d in drawn) + max(d for _, d in drawn)
        drawn = [_render(font, c, 100.0 * 0.8 * side / span) for c in classes]
        top = max(img.shape[0] - d for img, d in drawn)
        baseline = side / 2 + (top - max(d for _, d in drawn)) / 2  # its row, centring the span
        for k, (img, descent) in enumerate(drawn):
            h, w = img.shape
            row, col = round(baseline - (h - descent)), (side - w) // 2
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + h, side), min(col + w, side)
            masters[f, k, r0:r1, c0:c1] = img[r0 - row : r1 - row, c0 - col : c1 - col]
    return torch.from_numpy(masters)


def _strokes(masters: torch.Tensor) -> torch.Tensor:
    """The masters at every thickening of :data:`STROKES` (grey-level dilation by a 3 x 3
    square, repeated): ``(len(STROKES), *masters.shape)``."""
    flat = masters.flatten(0, 1).unsqueeze(1)
    out = []
    for change in STROKES:
        x = flat
        for _ in range(change):
            x = F.max_pool2d(x, 3, 1, 1)
        out.append(x.view(masters.shape))
    return torch.stack(out)


def _uniform(n: int, bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=g)


def _warp(x: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
    """Each image under its own random affine map (:data:`WARP`), sampled on a ``side`` x
    ``side`` grid."""
    n = len(x)
    angle = _uniform(n, (-WARP["degrees"], WARP["degrees"]), g) * math.pi / 180
    shear = _uniform(n, (-WARP["shear"], WARP["shear"]), g)
    scale = _uniform(n, WARP["scale"], g)
    aspect = _uniform(n, (1 - WARP["aspect"], 1 + WARP["aspect"]), g)
    shift = _uniform(2 * n, (-WARP["shift"], WARP["shift"]), g).view(n, 2, 1)
    cos, sin = angle.cos(), angle.sin()
    rotate = torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
    shape = torch.zeros(n, 2, 2)
    shape[:, 0, 0], shape[:, 0, 1], shape[:, 1, 1] = 1 / (scale * aspect), shear, aspect / scale
    theta = torch.cat([rotate @ shape, shift], 2)  # from output to input coordinates
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image blurred by a 5 x 5 Gaussian of its own sigma (:data:`BLUR`)."""
    n = len(x)
    sigma = _uniform(n, BLUR, g)
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(taps**2)[None, :] / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel2d = (kernel[:, :, None] * kernel[:, None, :]).unsqueeze(1)  # (n, 1, 5, 5)
    out = F.conv2d(F.pad(x, (2,) * 4, mode="replicate").transpose(0, 1), kernel2d, groups=n)
    return out.transpose(0, 1)


def glyph_images(
    masters: torch.Tensor,
    faces: torch.Tensor,
    labels: torch.Tensor,
    image_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """uint8 images ``(N, 1, image_size, image_size)``: image ``i`` shows class ``labels[i]``
    in face ``faces[i]`` of ``masters`` (:func:`render_masters`, side ``MASTER * image_size``)
    with its own stroke width, affine warp, blur, contrast and noise."""
    n, g = len(labels), generator
    stroke = torch.randint(0, len(STROKES), (n,), generator=g)
    x = _strokes(masters)[stroke, faces, labels].unsqueeze(1)
    x = F.avg_pool2d(_warp(x, 2 * image_size, g), 2)  # 2 x 2 samples a pixel
    x = _blur(x, g)
    ink, paper = (_uniform(n, bounds, g).view(n, 1, 1, 1) for bounds in (INK, PAPER))
    noise = _uniform(n, NOISE, g).view(n, 1, 1, 1) * torch.randn(x.shape, generator=g)
    x = paper + (ink - paper) * x + noise
    return (255 * x).clamp(0, 255).round().to(torch.uint8)


def make_glyphs(
    per_font: int | None = None, image_size: int = IMAGE_SIZE, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The glyph images of every split, made here in about a second.

    Args:
        per_font: images of each class from each face, in every split; None: the data
            set's sizes (:data:`PER_FONT`: 12 in train and validation, 20 in test, so
            1320, 600 and 1000 images).
        image_size: side of the square images, >= 8.
        seed: the stroke widths, warps, blurs, contrasts, noise and order follow from it.

    Returns:
        ``{"train": (images, labels, faces), "val": ..., "test": ...}``: uint8 images
        ``(N, 1, image_size, image_size)``, int64 labels (indices into
        :data:`GLYPH_CLASSES`) and int64 faces (indices into the split's fonts in
        :data:`SPLIT_FONTS`), every class and face in equal shares, in a random order.
    """
    if per_font is not None and not (_is_int(per_font) and per_font >= 1):
        raise ValueError(f"per_font must be an integer >= 1 or None, got {per_font!r}")
    if not (_is_int(image_size) and image_size >= 8):
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for name, fonts in SPLIT_FONTS.items():
        masters = render_masters(fonts, GLYPH_CLASSES, MASTER * image_size)
        count, classes = per_font or PER_FONT[name], len(GLYPH_CLASSES)
        faces = torch.arange(len(fonts)).repeat_interleave(classes * count)
        labels = torch.arange(classes).repeat_interleave(count).repeat(len(fonts))
        order = torch.randperm(len(labels), generator=g)
        faces, labels = faces[order], labels[order]
        splits[name] = (glyph_images(masters, faces, labels, image_size, g), labels, faces)
    return splits


def cache_path(root: str | os.PathLike, seed: int = 0) -> Path:
    """Where :func:`load_glyphs` keeps the images of ``seed``: ``root/glyphs/``, under a name
    that changes with the settings above and with the matplotlib that drew them."""
    import matplotlib

    settings = (CACHE_VERSION, matplotlib.__version__, GLYPH_CLASSES, SPLIT_FONTS, PER_FONT)
    settings += (IMAGE_SIZE, MASTER, STROKES, WARP, BLUR, INK, PAPER, NOISE)
    key = hashlib.sha1(repr(settings).encode()).hexdigest()[:12]
    return Path(root) / GLYPHS / f"{GLYPHS}-seed{seed}-{key}.pt"


def load_glyphs(
    root: str | os.PathLike = "data", seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`make_glyphs`'s images of ``seed``, kept in ``root/glyphs/`` (:func:`cache_path`).

    The first call makes and writes them (atomically); later calls read them. A folder that
    cannot be written only costs making them again next time.
    """
    path = cache_path(root, seed)
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            pass  # unreadable: made again below, and written over
    splits = make_glyphs(seed=seed)
    try:
        atomic_write(path, lambda f: torch.save(splits, f))
    except OSError:
        pass  # a read-only data folder: the images are made again (a second) next time
    return splits


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
