"""A registry of the teachers and students the book uses, sized to the input.

Every model takes ``num_classes``, ``in_channels`` and ``image_size`` and splits its
forward pass into ``forward_features`` (the last feature map, for feature and
attention distillation) and ``forward_head`` (pooling and classifier).

>>> model = build_model("tiny_cnn", num_classes=10, in_channels=1, image_size=8)
>>> count_params(model)
694
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a model constructor to the registry under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def build_model(
    name: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32, **kwargs
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the output layer.
        in_channels: channels of the input images (1 for digits, 3 for colour).
        image_size: side of the square input, for models whose head depends on it.

    Returns:
        The model, in train mode, on the CPU.
    """
    if name not in _REGISTRY:
        raise ValueError(f"model must be one of {list_models()}, got {name!r}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    model = _REGISTRY[name](
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
    )
    model.kdbook_name = name
    return model


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: the brick of the small CNNs here."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """A feature extractor followed by a head; ``forward = forward_head(forward_features(x))``."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _pool_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


@register_model
def resnet18_cifar(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """torchvision's ResNet18 with the CIFAR stem: 3x3 stride-1 conv, no max-pool.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8
    before the first block (SOURCES.md bug 5). Random init: no pretrained download.
    """
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    features = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return Classifier(features, nn.Sequential(net.avgpool, nn.Flatten(), net.fc))


@register_model
def simple_resnet(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Source 1's student: a 3x3 stem and three stages of plain conv-BN-ReLU pairs."""
    features = nn.Sequential(
        conv_bn_relu(in_channels, 32),
        conv_bn_relu(32, 32),
        conv_bn_relu(32, 32),
        conv_bn_relu(32, 64, stride=2),
        conv_bn_relu(64, 64),
        conv_bn_relu(64, 128, stride=2),
        conv_bn_relu(128, 128),
    )
    return Classifier(features, _pool_head(128, num_classes))


@register_model
def tiny_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Source 4's student: one 3x3 conv to 4 channels, BN, ReLU, 2x2 max-pool, linear.

    The linear layer's input is ``4 * (image_size // 2) ** 2``: about 100k weights at
    224x224 with 2 classes, as the source says, and 694 parameters on 8x8 digits.
    """
    features = nn.Sequential(conv_bn_relu(in_channels, 4), nn.MaxPool2d(2))
    side = image_size // 2
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * side * side, num_classes))
    return Classifier(features, head)


def _mnist_net(width: int, hidden: int, num_classes: int, in_channels: int, image_size: int):
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    side = image_size // 2
    head = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(2 * width * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )
    return Classifier(features, head)


@register_model
def mnist_teacher(num_classes: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Source 3's teacher: convs of 32 and 64 channels, max-pool, dropout, fc 128."""
    return _mnist_net(32, 128, num_classes, in_channels, image_size)


@register_model
def mnist_student(num_classes: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Source 3's student: the teacher at half width (16/32 channels, fc 64)."""
    return _mnist_net(16, 64, num_classes, in_channels, image_size)


@register_model
def digits_teacher(num_classes: int, in_channels: int = 1, image_size: int = 8) -> nn.Module:
    """A small BN CNN that reaches about 99% on 8x8 digits in seconds on a CPU."""
    features = nn.Sequential(
        conv_bn_relu(in_channels, 32),
        conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        conv_bn_relu(64, 128),
        nn.Dropout(0.2),
    )
    return Classifier(features, _pool_head(128, num_classes))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass, by torch's own flop counter.

    Counts a multiply-add as 2 FLOPs (so MACs = FLOPs / 2). ``input_shape`` includes the
    batch dimension; use batch 1 for a per-image count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
