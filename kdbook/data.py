"""Named data sets as uint8 tensors, and a batched loader that augments on the tensor.

``load_dataset("digits")`` needs nothing on disk (scikit-learn ships the images), nor ``glyphs``;
``cifar10`` reads torchvision's real ``CIFAR10`` files from ``root``; ``imagefolder:PATH``
reads a ``train/ val/ test/ <class>/`` tree through torchvision's real ``ImageFolder``;
``synthetic-cifar10[:N]`` makes CIFAR-shaped SYNTHETIC images in seconds (no download).

>>> data = load_dataset("digits")
>>> data.train.images.dtype, data.train.images.shape[1:], len(data.classes)
(torch.uint8, torch.Size([1, 8, 8]), 10)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from kdbook.augment import Augment as Augment  # the batched augmentation, here since its start
from kdbook.config import GLYPHS, SYNTHETIC_CIFAR10, check_dataset_spec, synthetic_size
from kdbook.runtime import UNLABELED

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # source 1's normalisation
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # source 4's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
CIFAR10_FOLDER = "cifar-10-batches-py"
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds notebooks/ and data/
SYNTHETIC_CIFAR10_SIZE = 5000  # training images of 'synthetic-cifar10' (':N' chooses N)


def resolve_path(path: str | os.PathLike) -> Path:
    """A user's path: as given if absolute or found from here, else under the project root.

    In a clone, notebooks run with ``notebooks/`` as the current folder and the command line
    from anywhere, so ``data/...`` means the project's ``data/`` folder in both. An
    installed kdbook (a wheel) has no project folder: there the path is the current
    folder's (the notebook's, in Jupyter).
    """
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not (PROJECT_ROOT / "pyproject.toml").is_file():
        return path
    return PROJECT_ROOT / path


def check_available(spec: str, root: str | os.PathLike = "data") -> None:
    """Raise FileNotFoundError, saying what to put where, unless ``spec``'s files are present.

    Cheap: looks at folders and file names only, so commands can call it before any work.
    """
    check_dataset_spec(spec)
    if spec == "cifar10":
        folder = resolve_path(root) / CIFAR10_FOLDER
        needed = [*CIFAR10_FILES, "test_batch", "batches.meta"]
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"dataset 'cifar10' needs {folder}/ with {', '.join(missing)}: extract "
                f"cifar-10-python.tar.gz into {folder.parent}/ (see data/README.md)"
            )
    elif spec.startswith("imagefolder:"):
        path = resolve_path(spec.split(":", 1)[1])
        if not path.is_dir():
            raise FileNotFoundError(
                f"dataset 'imagefolder:{path}': folder {path} does not exist; "
                "it must hold train/, val/ and test/, each with one folder per class"
            )
        for name in ("train", "val", "test"):
            if not (path / name).is_dir():
                raise FileNotFoundError(
                    f"dataset 'imagefolder:{path}': missing split folder {path / name}/ "
                    "(expected train/, val/ and test/, each with one folder per class)"
                )


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, C, H, W)`` and int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    """A named data set: splits, class names, normalisation and its default augmentation,
    and ``origin``: where each split comes from, in words (notebook 01's table)."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment
    origin: Mapping[str, str] = field(default_factory=lambda: carved_origin(0.1))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float32."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def with_label_fraction(self, fraction: float, seed: int = 0) -> Dataset:
        """Hide all but ``fraction`` of the training labels (per class), marking them UNLABELED.

        The images stay: a teacher can still label them with soft targets.
        """
        if not 0 < fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
        labels = self.train.labels.clone()
        g = torch.Generator().manual_seed(seed)
        for c in range(self.num_classes):
            idx = (self.train.labels == c).nonzero().flatten()
            keep = max(1, round(fraction * len(idx)))
            hidden = idx[torch.randperm(len(idx), generator=g)[keep:]]
            labels[hidden] = UNLABELED
        return replace(self, train=Split(self.train.images, labels))

    def with_teacher_labels(self, logits: torch.Tensor) -> Dataset:
        """The training split with every hidden label replaced by the teacher's top class
        (``logits``: the teacher's on the training split, in order); labelled images keep
        theirs. The control that separates what a teacher's labels give a student from what
        its soft targets add (notebook 05)."""
        if logits.shape != (len(self.train), self.num_classes):
            raise ValueError(
                f"logits must be the teacher's on the training split, shape "
                f"{(len(self.train), self.num_classes)}, got {tuple(logits.shape)}"
            )
        labels = self.train.labels.clone()
        hidden = labels == UNLABELED
        labels[hidden] = logits.argmax(1)[hidden].to(labels.dtype)
        return replace(self, train=Split(self.train.images, labels))

    def without_class(self, cls: int) -> Dataset:
        """The training split without any image of class ``cls`` (validation and test keep it).

        Hinton et al.'s omitted-class experiment (2015, §3): a student distilled on this
        never sees the class, labelled or not; what it knows of it came from the teacher.
        """
        if not (isinstance(cls, int) and 0 <= cls < self.num_classes):
            raise ValueError(f"cls must be a class index in [0, {self.num_classes}), got {cls!r}")
        return replace(self, train=self.train.subset(self.train.labels != cls))

    def summary(self) -> dict[str, object]:
        """Sizes, shape and class count as a dict (for tables and results.json)."""
        return {
            "dataset": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "shape": list(self.train.images.shape[1:]),
            "classes": self.num_classes,
        }


def _stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask selecting ``fraction`` of each class, reproducibly."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        take = max(1, round(fraction * len(idx)))
        mask[idx[torch.randperm(len(idx), generator=g)[:take]]] = True
    return mask


def carved_origin(val_fraction: float) -> dict[str, str]:
    """:attr:`Dataset.origin` of a data set whose validation split is carved out of train.

    >>> carved_origin(0.1)["val"]
    'carved from train (stratified, 10%)'
    """
    return {
        "train": "training data minus the val share",
        "val": f"carved from train (stratified, {val_fraction:.0%})",
        "test": "held out, untouched until the final report",
    }


def _carve_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a stratified validation split out of train (never out of test)."""
    mask = _stratified_split(train.labels, val_fraction, seed)
    return train.subset(~mask), train.subset(mask)


def _load_digits(val_fraction: float, split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    full = Split(images.unsqueeze(1).contiguous(), torch.from_numpy(bunch.target).long())
    test_mask = _stratified_split(full.labels, 0.2, split_seed)
    train, val = _carve_val(full.subset(~test_mask), val_fraction, split_seed + 1)
    # Digits are not mirror-symmetric: shift by one pixel, never flip.
    return Dataset(
        "digits",
        train,
        val,
        full.subset(test_mask),
        [str(i) for i in range(10)],
        mean=(0.0,),
        std=(1.0,),
        augment=Augment(pad=1, flip=False),
        origin=carved_origin(val_fraction),
    )


def _load_glyphs(root: Path, seed: int) -> Dataset:
    from kdbook.glyphs import (
        GLYPH_CLASSES,
        GLYPH_MEAN,
        GLYPH_PAD,
        GLYPH_STD,
        SPLIT_FONTS,
        load_glyphs,
    )

    splits = [Split(x, y) for x, y, _ in load_glyphs(root, seed).values()]  # train, val, test
    fonts = {name: len(faces) for name, faces in SPLIT_FONTS.items()}
    origin = {
        "train": f"drawn from {fonts['train']} font faces",
        "val": f"drawn from {fonts['val']} other faces, none of train's",
        "test": f"drawn from {fonts['test']} faces of its own, untouched until the final report",
    }
    return Dataset(
        GLYPHS, *splits, list(GLYPH_CLASSES), GLYPH_MEAN, GLYPH_STD, Augment(GLYPH_PAD), origin
    )


def _check_cifar10_md5(folder: Path) -> None:
    """Raise ValueError naming the first CIFAR-10 file whose md5 is not torchvision's."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5

    expected = [
        *CIFAR10.train_list,
        *CIFAR10.test_list,
        [CIFAR10.meta["filename"], CIFAR10.meta["md5"]],
    ]
    for name, md5 in expected:
        got = calculate_md5(str(folder / name))
        if got != md5:
            raise ValueError(
                f"dataset 'cifar10': file {folder / name} is corrupted (md5 {got}, expected "
                f"{md5}): delete {folder}/ and extract cifar-10-python.tar.gz into "
                f"{folder.parent}/ again"
            )


def _load_cifar10(root: Path, val_fraction: float, split_seed: int) -> Dataset:
    from torchvision.datasets import CIFAR10

    check_available("cifar10", root)
    _check_cifar10_md5(root / CIFAR10_FOLDER)

    def as_split(train: bool) -> tuple[Split, list[str]]:
        ds = CIFAR10(str(root), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.long)), list(ds.classes)

    full_train, classes = as_split(True)
    test, _ = as_split(False)
    train, val = _carve_val(full_train, val_fraction, split_seed)
    return Dataset(
        "cifar10",
        train,
        val,
        test,
        classes,
        CIFAR10_MEAN,
        CIFAR10_STD,
        Augment(pad=4, flip=True),
        carved_origin(val_fraction),
    )


def _open_rgb(path: str):
    """An image file as 8-bit RGB; ValueError naming the file if it cannot be decoded.

    Grayscale (X-rays), palette and RGBA images become RGB; 16-bit grayscale is scaled
    to 8 bits (Pillow's own conversion would clip it at 255).
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16") or img.mode == "I":
                wide = np.asarray(img, dtype=np.float64)
                if img.mode != "I" or wide.max() > 255:
                    wide = wide / 257.0
                img = Image.fromarray(np.clip(wide.round(), 0, 255).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable image {path}: {e}") from None


def _check_image_folder(folder: Path, spec: str) -> None:
    """Raise FileNotFoundError naming a split without class folders or a class without images."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(
            f"dataset {spec!r}: {folder}/ holds no class folders "
            "(expected one folder of images per class)"
        )
    for cls in classes:
        has_image = any(
            name.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(cls) for name in files
        )
        if not has_image:
            raise FileNotFoundError(
                f"dataset {spec!r}: class folder {cls}/ holds no images "
                f"(accepted: {', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            )


def _read_image_folder(folder: Path, image_size: int) -> tuple[Split, list[str]]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor, resize

    ds = ImageFolder(str(folder), loader=_open_rgb)
    images = torch.empty(len(ds), 3, image_size, image_size, dtype=torch.uint8)
    for i, (img, _) in enumerate(ds):
        images[i] = resize(pil_to_tensor(img), [image_size, image_size], antialias=True)
    return Split(images, torch.tensor(ds.targets, dtype=torch.long)), list(ds.classes)


def _load_image_folder(path: Path, image_size: int) -> Dataset:
    spec = f"imagefolder:{path}"
    check_available(spec)
    if not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    for name in ("train", "val", "test"):
        _check_image_folder(path / name, spec)
    train_classes = sorted(p.name for p in (path / "train").iterdir() if p.is_dir())
    if len(train_classes) < 2:
        raise ValueError(
            f"dataset {spec!r}: {path / 'train'}/ has {len(train_classes)} class "
            f"{train_classes}; KD needs >= 2 classes (one folder per class)"
        )
    splits, classes = {}, None
    for name in ("train", "val", "test"):
        splits[name], split_classes = _read_image_folder(path / name, image_size)
        if classes is not None and split_classes != classes:
            raise ValueError(
                f"dataset 'imagefolder:{path}': {name}/ has classes {split_classes}, "
                f"train/ has {classes}"
            )
        classes = split_classes
    return Dataset(
        f"imagefolder:{path}",
        splits["train"],
        splits["val"],
        splits["test"],
        classes,
        IMAGENET_MEAN,
        IMAGENET_STD,
        Augment(pad=image_size // 8, flip=True),
        {
            "train": f"the tree's train/ folder, resized to {image_size} px",
            "val": "the tree's val/ folder",
            "test": "the tree's test/ folder, untouched until the final report",
        },
    )


def synthetic_cifar10(num_train: int = SYNTHETIC_CIFAR10_SIZE, seed: int = 0) -> Dataset:
    """SYNTHETIC CIFAR-shaped data: uint8 ``3 x 32 x 32`` images of 10 made-up classes with
    CIFAR-10's normalisation and augmentation, made here in seconds (no file, no download).

    Each class is a fixed random colour pattern, smooth at the scale of a few pixels; each
    of its images shows it at a random contrast and a shift of up to 6 pixels, under smooth
    noise as strong as the pattern. A model can learn it (a teacher does clearly better
    than chance, and not perfectly), so every chapter runs on it, and a training step costs
    what it costs on CIFAR-10 (``kdbook bench --synthetic`` times on it). It is not CIFAR-10:
    its name (``synthetic-cifar10``, ``synthetic-cifar10:N`` for another size) and its class
    names say so, and :func:`kdbook.config.dataset_note` labels it SYNTHETIC.

    Args:
        num_train: training images; validation and test have ``num_train // 5`` each (at
            least 10), and every split holds the classes in equal shares (to one image).
        seed: the patterns, the images and the labels all follow from it.
    """
    if not (isinstance(num_train, int) and num_train >= 1):
        raise ValueError(f"num_train must be an integer >= 1, got {num_train!r}")
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(10, 3, 4, 4, generator=g) * 2 - 1  # each class's pattern, 4 x 4 blocks
    patterns = F.interpolate(low, size=32, mode="bilinear", align_corners=False)
    patterns = patterns / patterns.abs().amax(dim=(1, 2, 3), keepdim=True)
    shift = Augment(pad=6)

    def split(n: int) -> Split:
        labels = torch.randperm(n, generator=g) % 10
        contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
        noise = F.interpolate(
            torch.randn(n, 3, 8, 8, generator=g), size=32, mode="bilinear", align_corners=False
        ) + 0.5 * torch.randn(n, 3, 32, 32, generator=g)
        x = 60 * contrast * patterns[labels] + 60 * noise  # grey levels around mid-grey
        x = shift.apply(x, shift.sample(n, g))
        return Split((128 + x).clamp(0, 255).round().to(torch.uint8), labels)

    small = max(10, num_train // 5)
    default_size = num_train == SYNTHETIC_CIFAR10_SIZE
    return Dataset(
        SYNTHETIC_CIFAR10 if default_size else f"{SYNTHETIC_CIFAR10}:{num_train}",
        split(num_train),
        split(small),
        split(small),
        [f"synthetic {i}" for i in range(10)],
        CIFAR10_MEAN,
        CIFAR10_STD,
        Augment(pad=4, flip=True),
        {
            "train": f"made here from seed {seed} (SYNTHETIC)",
            "val": "made here as train, other images of the same patterns",
            "test": "made here as train, untouched until the final report",
        },
    )


def load_dataset(
    spec: str,
    root: str | Path = "data",
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    image_size: int = 64,
) -> Dataset:
    """Load a named data set as uint8 tensors with train/val/test splits.

    Introduced in notebook 01_data.

    Args:
        spec: ``"digits"`` (embedded), ``"glyphs"`` (made here), ``"cifar10"`` (files in ``root``),
            ``"synthetic-cifar10"`` or ``"synthetic-cifar10:N"`` (made up here, N training
            images: :func:`synthetic_cifar10`) or ``"imagefolder:PATH"`` (a
            ``train/ val/ test/ <class>/`` tree).
        root: folder of downloaded data sets (CIFAR-10) and the glyphs made here; a relative
            path that does not exist from the current folder is taken under the project root.
        val_fraction: share of train carved out as validation (digits, cifar10).
        split_seed: seed of the split, fixed apart from the training seed so that
            every model in a comparison sees the same split (of the synthetic images and
            the glyphs: the seed they are made from).
        image_size: side length ImageFolder images are resized to.

    Returns:
        A :class:`Dataset`.
    """
    check_dataset_spec(spec)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if spec == "digits":
        return _load_digits(val_fraction, split_seed)
    if spec == "cifar10":
        return _load_cifar10(resolve_path(root), val_fraction, split_seed)
    if spec == GLYPHS:
        return _load_glyphs(resolve_path(root), split_seed)
    if (size := synthetic_size(spec)) is not None:
        return synthetic_cifar10(size or SYNTHETIC_CIFAR10_SIZE, seed=split_seed)
    return _load_image_folder(resolve_path(spec.split(":", 1)[1]), image_size)


class Loader:
    """Batches of ``(images, labels, indices)`` from a split, normalised, optionally augmented.

    Works on tensors already in memory (or on the GPU, where the uint8 images stay resident
    and each batch is gathered, augmented and normalised there): no per-sample Python work.
    ``indices`` are the positions in the split, for looking up cached teacher logits.
    ``num_batches`` fixes the batches per pass, reshuffling and cycling through a split
    smaller than that (so that a student on few labels gets as many updates as the rest).

    ``replay``: when set to augmentation parameters for every sample of the split (``(N, 5)``
    from :meth:`Augment.sample`), each sample is shown in that stored view instead of a
    fresh random one (the views a teacher's cached logits were computed on).

    ``shard=(rank, world_size)``: the data-parallel slice. Every rank draws the same global
    batch (the same seed, so the same permutation: what ``DistributedSampler.set_epoch``
    arranges for a DataLoader) and the same augmentation parameters, then keeps its own
    contiguous part; the parts of all ranks are exactly the single-process batch (a pass's
    last batch, when it has fewer samples than there are ranks, is dropped on every rank).
    ``global_size`` holds the size of the last global batch.
    """

    def __init__(
        self,
        data: Dataset,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        num_batches: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        rank, world = shard
        if not (0 <= rank < world):
            raise ValueError(
                f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}"
            )
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.augment = data.augment if augment else None
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        if len(self.labels) == 0:
            raise ValueError("the split has no samples to load")
        self.num_batches = num_batches or math.ceil(len(self.labels) / batch_size)
        self.shard = shard
        self.replay: torch.Tensor | None = None
        self.views: torch.Tensor | None = None  # the last batch's view parameters, if any
        self.global_size = 0

    def __len__(self) -> int:
        return self.num_batches

    def _batches(self) -> Iterator[torch.Tensor]:
        """Index batches; a split smaller than the pass is cycled, every batch full."""
        n = len(self.labels)

        def order() -> torch.Tensor:
            return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

        if self.num_batches <= math.ceil(n / self.batch_size):
            yield from order().split(self.batch_size)
            return
        stream = torch.empty(0, dtype=torch.long)
        while True:
            while len(stream) < self.batch_size:
                stream = torch.cat([stream, order()])
            yield stream[: self.batch_size]
            stream = stream[self.batch_size :]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        rank, world = self.shard
        for _ in range(self.num_batches):
            idx = next(batches)
            params = None
            if self.replay is not None:
                params = self.replay[idx]
            elif self.augment is not None:
                params = self.augment.sample(len(idx), self.generator)
            self.global_size = len(idx)
            if world > 1 and len(idx) < world:
                continue  # a pass's last few samples, fewer than the ranks: dropped alike
            if world > 1:
                keep = torch.arange(len(idx)).tensor_split(world)[rank]
                idx = idx[keep]
                params = None if params is None else params[keep]
            idx = idx.to(self.device, non_blocking=True)
            x = self.images[idx]
            if params is not None:
                augment = self.augment or self.data.augment
                x = augment.apply(x, params)
            self.views = params
            yield self.data.normalize(x), self.labels[idx], idx
