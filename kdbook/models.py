"""A registry of the teachers and students the book uses, sized to the input.

Every model takes ``num_classes``, ``in_channels`` and ``image_size`` and splits its
forward pass into ``forward_features`` (the last feature map, for feature and
attention distillation) and ``forward_head`` (pooling and classifier).

>>> model = build_model("tiny_cnn", num_classes=10, in_channels=1, image_size=8)
>>> count_params(model)
694
>>> from kdbook.data import load_dataset
>>> count_params(build_model("tiny_cnn", load_dataset("digits")))  # sized to the data
694
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn


class DataShape(Protocol):
    """What a model is sized to: a :class:`kdbook.data.Dataset` has these."""

    num_classes: int
    in_channels: int
    image_size: int


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_MIN_IMAGE_SIZE: dict[str, int] = {}
_KIND: dict[str, str] = {}
KINDS = ("image", "text")


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, min_image_size: int = 1, kind: str = "image"
) -> Callable[..., nn.Module]:
    """Add a model constructor to the registry under its function name.

    Use as ``@register_model``, or ``@register_model(min_image_size=2)`` for a model whose
    pooling needs images at least that large (:func:`build_model` checks it), or
    ``@register_model(kind="text")`` for a language model (built from a vocabulary size
    and a ``context``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[f.__name__] = f
        _MIN_IMAGE_SIZE[f.__name__] = min_image_size
        _KIND[f.__name__] = kind
        return f

    return add if fn is None else add(fn)


def list_models(kind: str | None = "image") -> list[str]:
    """Names accepted by :func:`build_model`: the image models (the teachers and students
    of the image chapters), ``kind="text"`` the language models, ``kind=None`` all."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)} or None, got {kind!r}")
    return sorted(n for n in _REGISTRY if kind is None or _KIND[n] == kind)


def build_model(
    name: str,
    num_classes: int | DataShape,
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, sized to a data set or to the sizes given.

    Introduced in notebook 02_teacher.

    ``build_model(name, data)`` takes the classes, channels and image side of ``data`` (a
    :class:`kdbook.data.Dataset`); ``build_model(name, 10, in_channels=1, image_size=8)``
    gives them one by one.

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the output layer, or the data set to size the model to.
        in_channels: channels of the input images (1 for digits, 3 for colour; default 3).
        image_size: side of the square input, for models whose head depends on it
            (default 32).

    A language model (``list_models("text")``) takes its vocabulary size as ``num_classes``
    (or a :class:`kdbook.text.TextData`) and its sizes as keywords (``context=64``).

    Returns:
        The model, in train mode, on the CPU.
    """
    if _KIND.get(name) == "text":
        return _build_text_model(name, num_classes, in_channels, image_size, kwargs)
    if not _is_int(num_classes) and hasattr(num_classes, "num_classes"):  # a Dataset
        data = num_classes
        for given, size in (("in_channels", in_channels), ("image_size", image_size)):
            if size is not None:
                raise ValueError(
                    f"{given} must not be given with a data set (it sizes the model), "
                    f"got {given}={size!r}"
                )
        num_classes, in_channels, image_size = data.num_classes, data.in_channels, data.image_size
    in_channels = 3 if in_channels is None else in_channels
    image_size = 32 if image_size is None else image_size
    if name not in _REGISTRY:
        raise ValueError(f"model must be one of {list_models(None)}, got {name!r}")
    if not (_is_int(num_classes) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not (_is_int(in_channels) and in_channels >= 1):
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    least = _MIN_IMAGE_SIZE[name]
    if not (_is_int(image_size) and image_size >= least):
        raise ValueError(f"image_size must be an integer >= {least} for {name}, got {image_size!r}")
    model = _REGISTRY[name](
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
    )
    model.kdbook_name = name
    return model


def _build_text_model(
    name: str, vocab: Any, in_channels: Any, image_size: Any, kwargs: dict[str, Any]
) -> nn.Module:
    for given, size in (("in_channels", in_channels), ("image_size", image_size)):
        if size is not None:
            raise ValueError(f"{given} is for image models, not language model {name!r}")
    if not _is_int(vocab) and hasattr(vocab, "vocab_size"):  # a TextData
        vocab = vocab.vocab_size
    if not (_is_int(vocab) and vocab >= 2):
        raise ValueError(f"vocab_size (num_classes) must be an integer >= 2, got {vocab!r}")
    model = _REGISTRY[name](vocab, **kwargs)
    model.kdbook_name = name
    model.kdbook_kwargs = {**kwargs, "context": model.context}  # what rebuilds it (checkpoint)
    return model


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


@register_model(min_image_size=2)
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


@register_model(min_image_size=2)
def mnist_teacher(num_classes: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Source 3's teacher: convs of 32 and 64 channels, max-pool, dropout, fc 128."""
    return _mnist_net(32, 128, num_classes, in_channels, image_size)


@register_model(min_image_size=2)
def mnist_student(num_classes: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Source 3's student: the teacher at half width (16/32 channels, fc 64)."""
    return _mnist_net(16, 64, num_classes, in_channels, image_size)


@register_model(min_image_size=2)
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


class ViTClassifier(nn.Module):
    """torchvision's VisionTransformer with the kdbook split.

    ``forward_features`` returns the encoder's token sequence ``(N, 1 + h*w, D)`` (class
    token first, after the final LayerNorm); ``forward_head`` classifies the class token.
    ``kdbook.losses.tokens_to_map`` turns the tokens into a ``(N, D, h, w)`` map.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    @property
    def head(self) -> nn.Module:
        """The classifier (``forward_head``'s parameters), as ``Classifier.head``."""
        return self.vit.heads

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        patches = vit.conv_proj(x).flatten(2).transpose(1, 2)  # (N, h*w, D)
        cls = vit.class_token.expand(x.shape[0], -1, -1)
        return vit.encoder(torch.cat([cls, patches], dim=1))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.heads(tokens[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(min_image_size=4)
def vit_tiny(
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    *,
    patch_size: int | None = None,
    num_layers: int = 2,
    num_heads: int = 4,
    hidden_dim: int = 64,
    mlp_dim: int = 128,
) -> nn.Module:
    """A small ViT (torchvision's VisionTransformer), the teacher of 10_vit_to_resnet.

    Sized for the input: by default the patches cut the image into a 2x2 grid of tokens
    below 16 pixels (8x8 digits: patch 4), 4x4 below 32 (28x28 MNIST: patch 7) and 8x8
    from 32 up (32x32 CIFAR: patch 4), plus the class token; ``num_layers`` encoder layers
    of width 64, 4 heads, MLP 128: about 70k parameters on digits and CIFAR with 2 layers
    (the patch embedding grows with the patch). The patch embedding takes ``in_channels``
    (torchvision's assumes 3). No pretrained weights.

    Why 2x2 on digits: with patch 2 (a 4x4 grid) the 1-pixel random shifts of the digits
    augmentation cost this ViT 10 to 30 points of accuracy over 20-30 epochs; with patch 4
    it reaches about 97% (AdamW, lr 3e-3, weight decay 0.05, 30 epochs, 3 s on one CPU
    thread). Pass ``patch_size`` to choose another grid.
    """
    from torchvision.models import VisionTransformer

    if patch_size is None:
        patch_size = image_size // (2 if image_size < 16 else 4 if image_size < 32 else 8)
    if not (_is_int(patch_size) and patch_size >= 1 and image_size % patch_size == 0):
        raise ValueError(
            f"patch_size must be an integer >= 1 that divides image_size={image_size}, "
            f"got {patch_size!r}"
        )
    vit = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
    )
    vit.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
    nn.init.trunc_normal_(vit.conv_proj.weight, std=(1.0 / (in_channels * patch_size**2)) ** 0.5)
    nn.init.zeros_(vit.conv_proj.bias)
    return ViTClassifier(vit)


def _char_transformer(vocab_size: int, context: int, width: int, layers: int, heads: int):
    from kdbook.transformer import CharTransformer

    return CharTransformer(vocab_size, context, width, layers, heads)


@register_model(kind="text")
def char_tiny(vocab_size: int, context: int = 64) -> nn.Module:
    """The language-model student of 15-16: 1 block of width 32, 2 heads (about 21k
    parameters with 100 characters and context 64)."""
    return _char_transformer(vocab_size, context, 32, 1, 2)


@register_model(kind="text")
def char_mini(vocab_size: int, context: int = 64) -> nn.Module:
    """2 blocks of width 64, 4 heads (about 0.12M parameters): the GPU preset's student."""
    return _char_transformer(vocab_size, context, 64, 2, 4)


@register_model(kind="text")
def char_small(vocab_size: int, context: int = 64) -> nn.Module:
    """The language-model teacher of 15-16 on a CPU: 2 blocks of width 128, 4 heads
    (about 0.42M parameters; 600 AdamW steps reach about 1.5 nats a character)."""
    return _char_transformer(vocab_size, context, 128, 2, 4)


@register_model(kind="text")
def char_medium(vocab_size: int, context: int = 256) -> nn.Module:
    """4 blocks of width 256, 8 heads (about 3.3M parameters): the GPU preset's teacher."""
    return _char_transformer(vocab_size, context, 256, 4, 8)


def feature_shape(model: nn.Module, in_channels: int, image_size: int) -> tuple[int, ...]:
    """Shape of ``model.forward_features`` for one image, without the batch dimension.

    ``(C, H, W)`` for a CNN, ``(1 + h*w, D)`` for a ViT: what a feature loss's adapter
    needs to know (e.g. ``HintLoss(feature_shape(student, 1, 8)[0], ...)``).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, in_channels, image_size, image_size, device=device)
            return tuple(model.forward_features(x).shape[1:])
    finally:
        model.train(was_training)


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


@torch.no_grad()
def check_model_fits(model: nn.Module, data: Any, device: torch.device, role: str) -> None:
    """One forward pass in eval mode (no state changes): ``model`` fits ``data``'s classes.

    Raises ValueError naming ``role`` ("model", "teacher") when the images do not go
    through it or it outputs another number of classes than ``data.num_classes``.
    """
    was_training = model.training
    model.eval()
    x = data.normalize(data.train.images[:2].to(device))
    try:
        out = model(x)
    except RuntimeError as e:
        raise ValueError(
            f"{role} cannot run on data set {data.name!r}'s images of shape "
            f"{tuple(x.shape[1:])}: {e}"
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ValueError(
            f"{role} outputs {out.shape[-1]} classes, data set {data.name!r} has "
            f"{data.num_classes}: build it with num_classes={data.num_classes}"
        )
