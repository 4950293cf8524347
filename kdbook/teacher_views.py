"""A teacher's answers for every view of every training image, computed once.

The book's augmentations draw from a few views per image (digits: 9 shifts by at most one
pixel), so a teacher in eval mode answers each view the same way every time it is asked;
the runs of a stack (:mod:`kdbook.stack`) that share the teacher look its answer up instead
of running it again: its logits, and its features for runs with a feature term.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdbook.runtime import autocast


class TeacherViews:
    """A teacher's logits (and, when asked, features) for every view of every training image.

    A table is built only when it costs fewer teacher passes than the runs would make, and
    never for views that cannot be listed (cutout).
    """

    MAX_BYTES = 1 << 30

    def __init__(
        self, logits: torch.Tensor, augment: Any, features: torch.Tensor | None = None
    ) -> None:
        self.logits, self.augment = logits, augment  # (views, images, classes)
        self.features = features  # (views, images, *feature shape), fp32

    @staticmethod
    def count(augment: Any) -> int | None:
        """How many views ``augment`` draws (1 without one; None when too many to list)."""
        if augment is None:
            return 1
        if augment.cutout:
            return None
        return (2 * augment.pad + 1) ** 2 * (2 if augment.flip else 1)

    @classmethod
    @torch.no_grad()
    def build(
        cls, teacher: nn.Module, loader: Any, runtime: Any, passes: int, features: bool = False
    ) -> TeacherViews | None:
        """The table for ``loader``'s images and augmentation, or None when ``passes`` over
        the images (what the runs would cost) are fewer than the views, or it is too big.
        ``features``: keep the teacher's ``forward_features`` too (its logits are then
        ``forward_head`` of them, as :class:`kdbook.distill.Distiller` asks for them)."""
        views = cls.count(loader.augment)
        n = len(loader.images)
        if views is None or views >= passes:
            return None
        per_image = loader.data.num_classes
        if features:
            x = loader.data.normalize(loader.images[:1])
            per_image += teacher.forward_features(x).numel()
        if views * n * per_image * 4 > cls.MAX_BYTES:
            return None
        side = 2 * loader.augment.pad + 1 if loader.augment is not None else 1
        out, maps = [], []
        for v in range(views):
            params = torch.zeros(n, 5, dtype=torch.long)
            params[:, 0], params[:, 1] = (v % (side * side)) // side, v % side
            params[:, 2] = v // (side * side)
            rows, feats = [], []
            for chunk in torch.arange(n).split(512):
                x = loader.images[chunk.to(loader.images.device)]
                if loader.augment is not None:
                    x = loader.augment.apply(x, params[chunk])
                with autocast(runtime.precision, runtime.device):
                    if features:
                        f = teacher.forward_features(loader.data.normalize(x))
                        rows.append(teacher.forward_head(f).float())
                        feats.append(f.float())
                    else:
                        rows.append(teacher(loader.data.normalize(x)).float())
            out.append(torch.cat(rows))
            maps += [torch.cat(feats)] if features else []
        return cls(torch.stack(out), loader.augment, torch.stack(maps) if features else None)

    def _view(self, params: torch.Tensor, device: torch.device) -> torch.Tensor:
        side = 2 * self.augment.pad + 1
        params = params.to(device)
        return params[:, 0] * side + params[:, 1] + params[:, 2] * side * side

    def lookup(self, idx: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """The logits of images ``idx`` in the views ``params`` (from Augment.sample)."""
        if params is None:
            return self.logits[0, idx]
        return self.logits[self._view(params, idx.device), idx]

    def lookup_features(self, idx: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """The features of images ``idx`` in the views ``params`` (a table built with them)."""
        if self.features is None:
            raise ValueError("this table holds logits only: build it with features=True")
        if params is None:
            return self.features[0, idx]
        return self.features[self._view(params, idx.device), idx]
