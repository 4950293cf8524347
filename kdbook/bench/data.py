"""The benchmark's data: the sources' loader (PIL images, per-sample transforms, worker
processes) beside kdbook's, and a synthetic CIFAR-10 of any size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdbook.config import PRESETS
from kdbook.data import Dataset, Split, load_dataset, synthetic_cifar10

BENCH_PRESETS = ("classroom", "cifar10")
SMOKE_STEPS, SMOKE_WARMUP, SMOKE_SYNTHETIC_SIZE = 3, 1, 512


class PILDataset(torch.utils.data.Dataset):
    """uint8 ``(N, C, H, W)`` images served one by one as PIL images through ``transform``.

    This is what torchvision's ``CIFAR10`` dataset does in ``__getitem__``
    (``Image.fromarray`` on an ``H x W x C`` array, then the transforms).
    """

    def __init__(self, split: Split, transform: Callable) -> None:
        images = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.images = images[..., 0] if images.shape[-1] == 1 else images  # "L" or "RGB"
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def seed_style_loader(
    data: Dataset, batch_size: int = 128, *, num_workers: int = 2, augment: bool = True
) -> torch.utils.data.DataLoader:
    """The sources' training loader: per-sample PIL transforms in ``num_workers`` workers.

    Built as source 1 builds it (``shuffle=True``, no ``pin_memory``, workers started
    afresh every epoch), with the data set's own augmentation (crop padding, flip or not)
    and normalisation, so that it produces the same kind of batches as
    :class:`kdbook.data.Loader`.
    """
    from torchvision import transforms

    steps: list[Callable] = []
    if augment and data.augment.pad:
        steps.append(transforms.RandomCrop(data.image_size, padding=data.augment.pad))
    if augment and data.augment.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    dataset = PILDataset(data.train, transforms.Compose(steps))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers
    )


def bench_data(preset: str, *, synthetic: bool = False, smoke: bool = False) -> Dataset:
    """The data set a bench of ``preset`` runs on.

    ``classroom`` uses the embedded digits. ``cifar10`` uses the real CIFAR-10 in ``data/``,
    or :func:`synthetic_cifar10` with ``synthetic=True`` (smaller in ``smoke`` mode).
    """
    check_preset(preset)
    if preset == "cifar10" and synthetic:
        return synthetic_cifar10(SMOKE_SYNTHETIC_SIZE if smoke else 45000)
    if synthetic:
        raise ValueError("synthetic data is for the cifar10 preset only (classroom is embedded)")
    try:
        return load_dataset(PRESETS[preset]["dataset"])
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}; or time on CIFAR-shaped random data with --synthetic (timing needs no "
            "real images)"
        ) from None


def check_preset(preset: str) -> None:
    if preset not in BENCH_PRESETS:
        raise ValueError(f"preset must be one of {list(BENCH_PRESETS)}, got {preset!r}")
