"""Views: what the teacher sees of a batch (:class:`IndependentViews`, :class:`Mixup`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdbook.data import Dataset
from kdbook.losses.logit import LogitKD


class View:
    """What the student and the teacher see of the loader's batch ``x`` (normalised images).

    Without a view both see ``x``, the same augmented images: Beyer et al.'s "consistent"
    teaching. A view returns ``(student's images, teacher's images)``; it draws its random
    numbers from the Distiller's generator (seeded per run and rank, resumed with it).
    """

    def setup(self, data: Dataset, device: torch.device) -> None:
        """Before the first batch: what the view needs of the data set, on the device."""

    def check(self, terms: Sequence[nn.Module]) -> None:
        """Raise ValueError when this view cannot be used with the loss ``terms`` (the
        Distiller's, its logit term first)."""

    def __call__(
        self, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class IndependentViews(View):
    """The teacher sees its own random view of each image, drawn apart from the student's.

    Beyer et al.'s "independent noise": each training image is augmented twice with the
    data set's augmentation (``data.augment``), once for the student (the loader's batch)
    and once, independently, for the teacher. Compare with ``teacher_augment``, which
    augments the student's view further.
    """

    def setup(self, data: Dataset, device: torch.device) -> None:
        self._images = data.train.images.to(device)
        self._augment, self._normalize = data.augment, data.normalize

    def __call__(self, x, idx, generator):
        fresh = self._augment(self._images[idx.to(self._images.device)], generator)
        return x, self._normalize(fresh)


class Mixup(View):
    """Mixup of the batch (Zhang et al. 2018), the same mixed images for teacher and student.

    ``x' = lam * x + (1 - lam) * x[perm]`` with one ``lam ~ Beta(concentration,
    concentration)`` per batch and a random pairing ``perm``: Beyer et al.'s "function
    matching" shows the teacher images that are between the training images. The labels
    are not mixed, so the loss must not use them: it needs alpha = 1 (the teacher's
    targets only, as in the paper).
    """

    def __init__(self, concentration: float = 1.0) -> None:
        if not (isinstance(concentration, int | float) and concentration > 0):
            raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
        self.concentration = float(concentration)

    def check(self, terms: Sequence[nn.Module]) -> None:
        first = terms[0]
        alpha = first.alpha if isinstance(first, LogitKD) else None
        if callable(alpha) or alpha != 1:
            raise ValueError(
                "view=Mixup(...) mixes the images, not the labels: it needs the logit KD term "
                f"with alpha=1 (the teacher's targets only), got {alpha!r}"
            )

    def __call__(self, x, idx, generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # Beta draws from the global RNG: keep it
            torch.manual_seed(seed)
            lam = float(torch.distributions.Beta(self.concentration, self.concentration).sample())
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        return mixed, mixed
