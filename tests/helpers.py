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
