"""Small builders the unit tests share (imported as ``from helpers import tiny``)."""

from __future__ import annotations

import torch
from torch import nn

from kdbook.data import Dataset
from kdbook.models import build_model


def tiny(data: Dataset, seed: int = 0, name: str = "tiny_cnn") -> nn.Module:
    """A registered model for 8x8 one-channel digits, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return build_model(name, data.num_classes, in_channels=1, image_size=8)


def random_batch(n: int = 6, c: int = 5, seed: int = 0, scale: float = 3.0):
    """Student logits, teacher logits ``(n, c)`` and labels ``(n,)`` drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(n, c, generator=g)
    teacher = scale * torch.randn(n, c, generator=g)
    targets = torch.randint(0, c, (n,), generator=g)
    return student, teacher, targets


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


class Interrupt:
    """A forward hook that raises KeyboardInterrupt (Ctrl-C) at the n-th training step."""

    def __init__(self, at_step: int) -> None:
        self.at_step, self.steps = at_step, 0

    def __call__(self, module, inputs, output):
        if module.training:
            self.steps += 1
            if self.steps == self.at_step:
                raise KeyboardInterrupt
