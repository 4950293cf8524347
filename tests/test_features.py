"""Feature distillation: each loss against a reference written the long way, its adapter
trained inside fit (and source 2's adapter rebuilt every step, which is not)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny

from kdbook.checkpoint import load_checkpoint
from kdbook.losses import (
    AttentionTransfer,
    FeatureAdapter,
    HintLoss,
    SEBlock,
    TokenAlignment,
    attention_transfer_loss,
    tokens_to_map,
)
from kdbook.models import feature_shape
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")


def randomize_bn(module: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial affine weights and running statistics."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


# -- the losses against loops -----------------------------------------------------------


def test_hint_loss_equals_a_loop_over_pixels():
    torch.manual_seed(0)
    loss = HintLoss(3, 5).eval()
    randomize_bn(loss)
    fs, ft = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    conv, bn = loss.adapter.proj[0].weight[:, :, 0, 0], loss.adapter.proj[1]
    total = 0.0
    for n in range(2):
        for i in range(2):
            for j in range(2):
                # 2x2 average of the student's block, mapped: conv and BN are per pixel and
                # affine, so mapping then averaging equals averaging then mapping.
                block = fs[n, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(1, 2))
                mapped = conv @ block
                mapped = (mapped - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
                mapped = mapped * bn.weight + bn.bias
                total += ((mapped - ft[n, :, i, j]) ** 2).sum()
    torch.testing.assert_close(loss(fs, ft), total / ft.numel())


def reference_attention(f: torch.Tensor) -> torch.Tensor:
    """Per sample: sum over channels of a^2 / C, flattened, divided by its Euclidean norm."""
    n, c, h, w = f.shape
    maps = []
    for k in range(n):
        q = [sum(f[k, ch, i, j] ** 2 for ch in range(c)) / c for i in range(h) for j in range(w)]
        q = torch.stack(q)
        maps.append(q / math.sqrt(sum(v.item() ** 2 for v in q)))
    return torch.stack(maps)


def test_attention_transfer_equals_the_long_way_same_size():
    torch.manual_seed(1)
    fs, ft = torch.randn(3, 4, 3, 3), torch.randn(3, 7, 3, 3)  # channels may differ
    qs, qt = reference_attention(fs), reference_attention(ft)
    expected = sum(((qs[k] - qt[k]) ** 2).sum() for k in range(3)) / 3
    torch.testing.assert_close(attention_transfer_loss(fs, ft), expected)
    torch.testing.assert_close(AttentionTransfer()(fs, ft), expected)
    assert attention_transfer_loss(fs, fs).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_resizes_the_larger_map_by_2x2_averages():
    torch.manual_seed(2)
    fs, ft = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)
    a = (fs**2).mean(dim=1)  # (N, 4, 4) student attention before normalising
    pooled = torch.stack(
        [
            torch.stack(
                [a[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(1, 2)) for j in (0, 1)]
            )
            for i in (0, 1)
        ]
    ).permute(2, 0, 1)  # (N, 2, 2)
    qs = pooled.reshape(2, -1)
    qs = qs / qs.norm(dim=1, keepdim=True)
    qt = reference_attention(ft)
    expected = ((qs - qt) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(attention_transfer_loss(fs, ft), expected)
    torch.testing.assert_close(attention_transfer_loss(ft, fs), expected)  # symmetric in size


def test_tokens_to_map_drops_the_class_token():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 + 2x2, D = 3
    fmap = tokens_to_map(tokens)
    assert fmap.shape == (2, 3, 2, 2)
    for n in range(2):
        for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            assert torch.equal(fmap[n, :, i, j], tokens[n, 1 + k])
    with pytest.raises(ValueError, match="square grid"):
        tokens_to_map(torch.zeros(2, 6, 3))


def test_se_block_is_channel_attention():
    torch.manual_seed(3)
    se = SEBlock(8, reduction=4)
    x = torch.randn(2, 8, 3, 3)
    w1, b1 = se.gate[1].weight[:, :, 0, 0], se.gate[1].bias
    w2, b2 = se.gate[3].weight[:, :, 0, 0], se.gate[3].bias
    squeeze = x.mean(dim=(2, 3))  # (N, C)
    excite = torch.sigmoid(torch.relu(squeeze @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * excite[:, :, None, None])


def test_token_alignment_maps_the_student_to_the_teachers_tokens():
    torch.manual_seed(4)
    align = TokenAlignment(6, 8).eval()
    randomize_bn(align)
    fs, tokens = torch.randn(2, 6, 4, 4), torch.randn(2, 1 + 4, 8)
    conv, bn, se = align.proj
    mapped = F.conv2d(fs, conv.weight)
    mapped = (mapped - bn.running_mean[:, None, None]) / torch.sqrt(
        bn.running_var[:, None, None] + bn.eps
    ) * bn.weight[:, None, None] + bn.bias[:, None, None]
    mapped = se(mapped)
    pooled = F.avg_pool2d(mapped, 2)  # 4x4 -> the teacher's 2x2 grid
    target = tokens[:, 1:].reshape(2, 2, 2, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(align(fs, tokens), ((pooled - target) ** 2).mean())
    align.train()
    align.noise_std = 0.5
    assert align(fs, tokens) != align(fs, tokens)  # noise only in training mode
    align.eval()
    assert align(fs, tokens) == align(fs, tokens)


# -- the adapter trains inside fit ----------------------------------------------------------


def hint_for(student, teacher):
    torch.manual_seed(0)
    return HintLoss(feature_shape(student, 1, 8)[0], feature_shape(teacher, 1, 8)[0])


def test_fit_trains_the_adapter_and_records_the_feature_loss(digits, teacher):
    student = tiny(digits)
    loss = hint_for(student, teacher)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    history = fit(
        student,
        digits,
        teacher=teacher,
        feature_loss=loss,
        feature_weight=1.0,
        num_epochs=2,
        progress=False,
    )
    changed = [k for k, v in loss.state_dict().items() if not torch.equal(v, before[k])]
    assert "adapter.proj.0.weight" in changed and "adapter.proj.1.running_mean" in changed
    assert loss.adapter.proj[0].weight.grad is not None
    assert history.epochs[1]["feature_loss"] < history.epochs[0]["feature_loss"]
    assert [e["feature_weight"] for e in history.epochs] == [1.0, 1.0]
    assert history.settings["feature_loss"] == repr(loss)


def test_an_adapter_rebuilt_every_step_never_learns(digits, teacher):
    """Source 2's bug 9: the adapter is made inside the loop, outside the optimizer."""
    student = tiny(digits)
    opt = torch.optim.SGD(student.parameters(), lr=0.05)
    x = digits.normalize(digits.train.images[:64])
    with torch.no_grad():
        target = teacher.forward_features(x)
    for _ in range(3):
        adapter = FeatureAdapter(4, 128)
        initial = adapter.proj[0].weight.detach().clone()
        fs = student.forward_features(x)
        loss = F.mse_loss(adapter(fs, target.shape[-2:]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert adapter.proj[0].weight.grad is not None  # it gets a gradient...
        assert torch.equal(adapter.proj[0].weight, initial)  # ...that no optimizer applies


def test_feature_weight_zero_leaves_the_student_as_logit_kd(digits, teacher):
    a, b = tiny(digits), tiny(digits)
    kwargs = dict(teacher=teacher, num_epochs=1, progress=False)
    fit(a, digits, **kwargs)
    fit(b, digits, feature_loss=AttentionTransfer(), feature_weight=0.0, **kwargs)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_feature_loss_resumes_with_its_adapter(digits, teacher, tmp_path, capsys):
    path = tmp_path / "hint.pt"
    kwargs = dict(teacher=teacher, feature_weight=0.5, num_epochs=2, progress=False)
    first_student = tiny(digits)
    first_loss = hint_for(first_student, teacher)
    fit(first_student, digits, feature_loss=first_loss, checkpoint=path, **kwargs)
    assert load_checkpoint(path, digits)[0] is not None  # the model alone still loads
    again_loss = hint_for(tiny(digits), teacher)
    fit(tiny(digits, seed=3), digits, feature_loss=again_loss, checkpoint=path, **kwargs)
    assert "already finished" in capsys.readouterr().out
    for (k, v), w in zip(
        first_loss.state_dict().items(), again_loss.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k


def test_feature_arguments_are_checked(digits, teacher):
    student = tiny(digits)
    with pytest.raises(ValueError, match="needs exactly one teacher, got 0"):
        fit(student, digits, feature_loss=AttentionTransfer(), progress=False)
    with pytest.raises(ValueError, match="needs a feature_loss"):
        fit(student, digits, teacher=teacher, feature_weight=1.0, progress=False)
    with pytest.raises(ValueError, match=r"cannot compare the student's features \(4, 4, 4\)"):
        fit(student, digits, teacher=teacher, feature_loss=HintLoss(8, 128), progress=False)
    with pytest.raises(ValueError, match="feature_weight must be a number >= 0"):
        fit(student, digits, teacher=teacher, feature_loss=AttentionTransfer(), feature_weight=-1)


def test_vit_teacher_to_cnn_student_with_dynamic_weights(digits):
    """Source 5's set-up in miniature: ViT tokens -> CNN map, feature weight 0.7 -> 0.3."""
    from kdbook.schedules import dynamic_weights

    vit = tiny(digits, name="vit_tiny")
    student = tiny(digits)
    tokens, dim = feature_shape(vit, 1, 8)
    assert (tokens, dim) == (1 + 2 * 2, 64)
    torch.manual_seed(0)
    align = TokenAlignment(feature_shape(student, 1, 8)[0], dim, noise_std=0.01)
    before = align.proj[2].gate[1].weight.detach().clone()  # inside the SE block
    history = fit(
        student,
        digits,
        teacher=vit,
        feature_loss=align,
        num_epochs=2,
        progress=False,
        **dynamic_weights(),
    )
    assert not torch.equal(align.proj[2].gate[1].weight, before)
    weights = [e["feature_weight"] for e in history.epochs]
    alphas = [e["alpha"] for e in history.epochs]
    assert 0.7 > weights[0] > 0.5 > weights[1] > 0.3 and 0.3 < alphas[0] < 0.5 < alphas[1] < 0.7
    # Attention transfer takes the ViT's tokens as they are (class token dropped).
    fs = student.forward_features(digits.normalize(digits.train.images[:4]))
    ft = vit.forward_features(digits.normalize(digits.train.images[:4]))
    assert attention_transfer_loss(fs, ft).item() >= 0
