"""Batched augmentation on uint8 or float image tensors: random shifts, flips and cutout,
drawn as parameters first so that the same views can be replayed (a cache of a teacher's
logits for a view stays valid for the student that later sees that very view).

:class:`kdbook.data.Dataset` carries each data set's default; ``fit(augment=...)`` and
``fit(teacher_augment=...)`` take one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batched augmentation: random shift by up to ``pad`` pixels, optional horizontal flip,
    optional cutout (a ``cutout`` x ``cutout`` square set to 0).

    Each call draws its random parameters with :meth:`sample` and applies them with
    :meth:`apply`; keeping the parameters lets the same views be replayed later (a teacher's
    logits cached for a view stay valid for the student that sees that very view).
    """

    pad: int = 0
    flip: bool = False
    cutout: int = 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Parameters of ``n`` random views: int64 ``(n, 5)`` columns dy, dx, flip, cy, cx."""
        params = torch.zeros(n, 5, dtype=torch.long)
        if self.pad:
            params[:, 0] = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            params[:, 1] = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
        if self.flip:
            params[:, 2] = (torch.rand(n, generator=generator) < 0.5).long()
        if self.cutout:
            params[:, 3:] = torch.randint(0, 1 << 30, (n, 2), generator=generator)
        return params

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The views of ``x`` (N, C, H, W) that ``params`` (from :meth:`sample`) describe."""
        n, c, h, w = x.shape
        params = params.to(x.device)
        if self.pad:
            padded = F.pad(x, (self.pad,) * 4)
            rows = params[:, :1] + torch.arange(h, device=x.device)  # (N, H)
            cols = params[:, 1:2] + torch.arange(w, device=x.device)  # (N, W)
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            x = torch.where(params[:, 2].bool()[:, None, None, None], x.flip(-1), x)
        if self.cutout:
            cy = (params[:, 3] % h)[:, None, None]
            cx = (params[:, 4] % w)[:, None, None]
            ys = torch.arange(h, device=x.device)[None, :, None]
            xs = torch.arange(w, device=x.device)[None, None, :]
            top, left = cy - self.cutout // 2, cx - self.cutout // 2  # a square centred there
            hole = (ys >= top) & (ys < top + self.cutout) & (xs >= left) & (xs < left + self.cutout)
            x = x.masked_fill(hole[:, None], 0)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample(len(x), generator))
