"""The books beyond the classroom one that `make test` runs: each preset on data it accepts.

:func:`extra_books` writes two small ImageFolder trees of real JPEG files under a folder
(PIL; ``train/ val/ test/ <class>/*.jpg``; mixed image sizes, colour and grayscale): one
with the chest X-ray layout's two classes (NORMAL, PNEUMONIA) and one with five classes.
It returns, per extra book, the ``kdbook book`` parameters that run it:

    books = extra_books(Path("runs/preset-data"))
    for name, params in books.items():
        subprocess.run(["kdbook", "book", "--out", f"runs/{name}", *params], check=True)

The books are sized to check that every chapter runs on the data set and preset (one epoch,
two seeds, a few images a class), not to measure anything: a few minutes each on a CPU.
``cifar10-synthetic`` runs the cifar10 preset on ``synthetic-cifar10:N``, CIFAR-shaped
SYNTHETIC images made in seconds (no download), so its ResNet-18 teacher trains on a CPU.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

XRAY_CLASSES = ("NORMAL", "PNEUMONIA")  # the chest X-ray tree's layout (source 4)
FIVE_CLASSES = ("circle", "cross", "ring", "stripes", "square")
# Images per class and split: enough that a teacher learns the classes in a few epochs
# and each test class has eight to ten images; at 10 % labels, two to four keep theirs.
SPLIT_SIZES = {"train": 40, "val": 10, "test": 10}
FIVE_SIZES = {"train": 24, "val": 8, "test": 8}
SYNTHETIC_SIZE = 100  # training images of the synthetic CIFAR-10 book (10 a class)
# The ImageFolder books train at lr 0.02: at the preset's 0.05 the tiny_cnn student's four
# channels all die in the first epoch on the five-class tree (its loss stays at ln 5).
# The parameters every extra book shares: batches of 16 (a few steps an epoch even on these
# few images), two seeds (the fewest an interval needs), the timing sections of 06 and 12 at
# small batches and few repeats (a ResNet-18 on a CPU included), and one setting per method
# tuned on one seed (the protocol's every step, at the least cost).
SHORT = ["-p", "batch_size", "16", "-p", "num_seeds", "2"]
SHORT += ["-p", "timing_batch_size", "8", "-p", "timing_calls", "5", "-p", "bench_steps", "5"]
SHORT += ["-p", "bench_repeats", "1", "-p", "memory_batch_size", "64", "-p", "check_epochs", "1"]
SHORT += ["-p", "ddp_epochs", "2", "-p", "cache_views", "2", "-p", "bench_batch_size", "16"]
SHORT += ["-p", "hint_steps", "30", "-p", "selection_seeds", "3"]  # 08's two demos, shorter
SHORT += ["-p", "tuning_budget", "1", "-p", "tuning_seeds", "1"]
# 15's language models: one pass of the teacher and the students at context 32, few windows
SHORT += ["-p", "lm_teacher_epochs", "1", "-p", "lm_epochs", "1", "-p", "lm_context", "32"]
SHORT += ["-p", "lm_windows", "128", "-p", "seq_kd_windows", "64", "-p", "kl_windows", "16"]
SHORT += ["-p", "sample_chars", "40"]
SHORT += ["-p", "gkd_steps", "20", "-p", "teacher_steps", "40", "-p", "mc_samples", "200"]  # 16
SHORT += ["-p", "second_dataset", "None"]  # 05, 09, 13: their own data set alone, not glyphs too


def _picture(
    kind: int, classes: int, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A grey picture (H, W) in [0, 1]: class ``kind``'s shape at a random place and scale,
    over a smooth background of the class's brightness (give or take), with noise: a few
    epochs learn it, not perfectly."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    cy, cx = rng.uniform(0.3, 0.7) * h / max(h, w), rng.uniform(0.3, 0.7) * w / max(h, w)
    r = np.hypot(ys - cy, xs - cx)
    scale = rng.uniform(0.18, 0.3)
    angle = math.pi * kind / classes
    shapes = [
        r < scale,  # disc
        (np.abs(ys - cy) < scale / 4) | (np.abs(xs - cx) < scale / 4),  # cross
        np.abs(r - scale) < scale / 4,  # ring
        np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 40) > 0.3,  # stripes
        (np.abs(ys - cy) < scale) & (np.abs(xs - cx) < scale),  # square
    ]
    shape = shapes[kind % len(shapes)].astype(float)
    level = 0.2 + 0.2 * kind / max(classes - 1, 1) + rng.uniform(-0.1, 0.1)  # a class's brightness
    background = level + 0.1 * np.sin(xs * rng.uniform(2, 6) + rng.uniform(0, 6))
    picture = background + rng.uniform(0.25, 0.45) * shape + rng.normal(0, 0.08, (h, w))
    return np.clip(picture, 0, 1)


def write_image_tree(
    root: Path,
    classes: Sequence[str],
    *,
    sizes: dict[str, int] | None = None,
    gray_every: int = 0,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val,test}/<class>/*.jpg`` (real JPEG files) and return ``root``.

    Image sides vary (24 to 80 pixels, not square); every ``gray_every``-th image is
    grayscale (mode L; 0: only the first), the others RGB with a tint per image. The tree
    is written afresh (an old one under ``root`` is removed first).
    """
    from PIL import Image

    sizes = sizes or SPLIT_SIZES
    rng = np.random.default_rng(seed)
    shutil.rmtree(root, ignore_errors=True)
    count = 0
    for split, per_class in sizes.items():
        for kind, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (int(rng.integers(24, 81)), int(rng.integers(24, 81)))
                grey = _picture(kind, len(classes), size, rng)
                gray = count == 0 or (gray_every and count % gray_every == 0)
                if gray:
                    image = Image.fromarray((grey * 255).round().astype(np.uint8), mode="L")
                else:
                    tint = rng.uniform(0.7, 1.0, 3)
                    rgb = (grey[..., None] * tint * 255).round().astype(np.uint8)
                    image = Image.fromarray(rgb, mode="RGB")
                image.save(folder / f"{name.lower()}_{i:03d}.jpg", quality=90)
                count += 1
    return root


def extra_books(root: Path) -> dict[str, list[str]]:
    """Write the ImageFolder trees under ``root``; return each extra book's ``-p`` parameters.

    ``imagefolder-2``: the imagefolder preset on a 2-class tree laid out like the chest X-ray
    data set (mostly grayscale); ``imagefolder-5``: the same preset on 5 classes (mostly
    colour); ``cifar10-synthetic``: the cifar10 preset on ``synthetic-cifar10``, SYNTHETIC
    CIFAR-shaped images (no download), its ResNet-18 teacher on a CPU where there is no GPU;
    ``glyphs``: the glyphs preset on its own embedded data set.
    """
    root = Path(root).resolve()
    xray = write_image_tree(root / "xray-2", XRAY_CLASSES, gray_every=2, seed=2)
    five = write_image_tree(root / "shapes-5", FIVE_CLASSES, sizes=FIVE_SIZES, gray_every=7, seed=5)
    return {
        "imagefolder-2": ["-p", "preset", "imagefolder", "-p", "dataset", f"imagefolder:{xray}",
                          "-p", "num_epochs", "8", "-p", "lr", "0.02", *SHORT],
        "imagefolder-5": ["-p", "preset", "imagefolder", "-p", "dataset", f"imagefolder:{five}",
                          "-p", "num_epochs", "8", "-p", "lr", "0.02", *SHORT],
        "cifar10-synthetic": ["-p", "preset", "cifar10", "-p", "dataset",
                              f"synthetic-cifar10:{SYNTHETIC_SIZE}",
                              "-p", "num_epochs", "2", *SHORT],  # ResNet-18 on a CPU
        # the glyphs preset on its embedded look-alike characters (rendered in seconds), at
        # batches of 64: its 1,320 training images would make 16 too many steps an epoch
        "glyphs": ["-p", "preset", "glyphs", *SHORT,
                   "-p", "num_epochs", "2", "-p", "batch_size", "64"],
    }  # fmt: skip


if __name__ == "__main__":  # python tests/preset_books.py ROOT: write the trees, print the books
    import sys

    for book, params in extra_books(
        Path(sys.argv[1] if len(sys.argv) > 1 else "runs/extra")
    ).items():
        print(book, " ".join(params))
