"""The model registry: every model built, run, checked; sizes measured against the sources."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import kdbook.models as models
from kdbook.models import build_model, count_params, feature_shape, flops, list_models

pytestmark = pytest.mark.usefixtures("single_thread")


def natural_size(name: str) -> tuple[int, int]:
    """(in_channels, image_size) from the registered constructor's own defaults."""
    params = inspect.signature(getattr(models, name)).parameters
    return params["in_channels"].default, params["image_size"].default


# Each model at its own natural size, and every one also at 1x8x8 (digits), where all fit.
SIZES = sorted(
    {(name, *natural_size(name)) for name in list_models()}
    | {(name, 1, 8) for name in list_models()}
)


def test_registry_lists_the_book_models():
    assert {"resnet18_cifar", "simple_resnet", "tiny_cnn", "digits_teacher"} <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(("name", "in_channels", "image_size"), SIZES)
def test_every_model_runs_and_splits_features_and_head(name, in_channels, image_size):
    torch.manual_seed(0)
    num_classes = 7
    model = build_model(name, num_classes, in_channels=in_channels, image_size=image_size)
    assert model.kdbook_name == name
    assert model.training  # built in train mode
    x = torch.randn(2, in_channels, image_size, image_size)
    model.eval()
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        split = model.forward_head(features)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    # A CNN's feature map (N, C, H, W), or a ViT's tokens (N, 1 + h*w, D), for feature KD.
    assert features.dim() in (3, 4) and features.shape[0] == 2
    torch.testing.assert_close(split, out)


# resnet18_cifar (11M parameters) is left out: its blocks are torchvision's, and one step of
# it costs more than the rest of this file.
@pytest.mark.parametrize("name", [n for n in list_models() if n != "resnet18_cifar"])
def test_every_model_trains_one_step(name):
    torch.manual_seed(0)
    model = build_model(name, 3, in_channels=1, image_size=8)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        build_model("resnet1000", 10)
    message = str(info.value)
    assert "'resnet1000'" in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize("num_classes", [1, 0, 2.0])
def test_num_classes_is_checked(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("tiny_cnn", num_classes)


def test_tiny_cnn_about_100k_params_at_224_two_classes():
    # Source 4: one conv 3->4 + BN + ReLU + 2x2 max-pool + linear, ~100k parameters.
    model = build_model("tiny_cnn", 2, in_channels=3, image_size=224)
    expected = 3 * 4 * 9 + 2 * 4 + (4 * 112 * 112) * 2 + 2
    assert count_params(model) == expected == 100_470
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 2)


def test_tiny_cnn_on_digits_matches_docstring():
    # conv 1->4 (no bias: BN follows) + BN + linear 4*4*4 -> 10
    expected = 1 * 4 * 9 + 2 * 4 + 4 * 4 * 4 * 10 + 10
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    assert count_params(model) == expected == 694
    assert f"{expected} parameters on 8x8 digits" in " ".join(models.tiny_cnn.__doc__.split())


def test_simple_resnet_is_a_faithful_build_of_source_1():
    # conv3x3 3->32 + BN, stages (32->32, 32->32), (32->64 s2, 64->64), (64->128 s2, 128->128),
    # global average pool, fc 128->10: about 0.30M, not the 0.8M the source claims.
    model = build_model("simple_resnet", 10, in_channels=3, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    shape = [(c.in_channels, c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs]
    assert shape == [
        (3, 32, 1, 3),
        (32, 32, 1, 3),
        (32, 32, 1, 3),
        (32, 64, 2, 3),
        (64, 64, 1, 3),
        (64, 128, 2, 3),
        (128, 128, 1, 3),
    ]
    conv_weights = sum(i * o * k * k for i, o, _, k in shape)
    bn = sum(2 * o for _, o, _, _ in shape)
    assert count_params(model) == conv_weights + bn + 128 * 10 + 10 == 298_026
    assert round(count_params(model) / 1e6, 2) == 0.30
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 128, 8, 8)


def test_resnet18_cifar_size_and_stem():
    model = build_model("resnet18_cifar", 10)
    assert round(count_params(model) / 1e6, 2) == 11.17
    stem = model.features[0]
    assert isinstance(stem, nn.Conv2d)
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.in_channels == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # 32x32 stays 32x32 into the first block; the last stage is 4x4 (not 1x1).
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_count_params_trainable_only():
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    model.head.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - (4 * 16 * 10 + 10)


def test_flops_of_a_linear_is_two_macs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert flops(model, (1, 3, 2, 2)) == 2 * 12 * 5
    assert flops(model, (4, 3, 2, 2)) == 4 * 2 * 12 * 5  # scales with the batch


def test_flops_of_a_conv_is_two_macs():
    model = nn.Conv2d(2, 4, 3, padding=1)
    macs = 4 * 8 * 8 * 2 * 3 * 3  # out channels * out pixels * in channels * kernel
    assert flops(model, (1, 2, 8, 8)) == 2 * macs


def test_flops_restores_training_mode():
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    assert flops(model, (1, 1, 8, 8)) > 0
    assert model.training
    model.eval()
    flops(model, (1, 1, 8, 8))
    assert not model.training


@pytest.mark.parametrize(
    ("in_channels", "image_size", "grid", "patch"),
    [(1, 8, 2, 4), (1, 28, 4, 7), (3, 32, 8, 4)],
)
def test_vit_tiny_tokens_grid_and_channels(in_channels, image_size, grid, patch):
    model = build_model("vit_tiny", 10, in_channels=in_channels, image_size=image_size)
    proj = model.vit.conv_proj
    assert (proj.in_channels, proj.kernel_size, proj.stride) == (
        in_channels,
        (patch,) * 2,
        (patch,) * 2,
    )
    assert feature_shape(model, in_channels, image_size) == (1 + grid * grid, 64)
    assert len(model.vit.encoder.layers) == 2 and model.vit.hidden_dim == 64


def test_vit_tiny_head_reads_the_class_token():
    torch.manual_seed(0)
    model = build_model("vit_tiny", 3, in_channels=1, image_size=8).eval()
    tokens = model.forward_features(torch.randn(2, 1, 8, 8))
    changed = tokens.clone()
    changed[:, 1:] += 1.0  # the patch tokens do not reach the head
    torch.testing.assert_close(model.forward_head(changed), model.forward_head(tokens))
    with pytest.raises(ValueError, match="patch_size must be an integer >= 1 that divides"):
        build_model("vit_tiny", 3, in_channels=1, image_size=8, patch_size=3)


def test_feature_shape_of_a_cnn():
    model = build_model("simple_resnet", 10, in_channels=1, image_size=8)
    assert feature_shape(model, 1, 8) == (128, 2, 2)
    assert model.training  # restored


def test_build_model_sized_to_a_data_set(digits) -> None:
    torch.manual_seed(0)
    by_data = build_model("tiny_cnn", digits)
    torch.manual_seed(0)
    by_sizes = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    assert by_data.kdbook_name == "tiny_cnn"
    expected = by_sizes.state_dict()
    for k, a in by_data.state_dict().items():
        assert torch.equal(a, expected[k]), k  # same sizes, same draws, same weights
    assert by_data(digits.normalize(digits.test.images[:2])).shape == (2, digits.num_classes)
    with pytest.raises(ValueError, match="image_size must not be given with a data set"):
        build_model("tiny_cnn", digits, image_size=8)
