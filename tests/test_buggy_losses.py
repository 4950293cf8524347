"""The sources' buggy KD losses against references written the long way, and the adapter."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook.doctor import check_kd_loss
from kdbook.losses import (
    BUGGY_KD_LOSSES,
    FeatureAdapter,
    hint_loss,
    kd_loss,
    kd_loss_alpha_on_ce,
    kd_loss_source3,
    kd_loss_source4,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def batch(n=5, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        2.0 * torch.randn(n, c, generator=g),
        3.0 * torch.randn(n, c, generator=g),
        torch.randint(0, c, (n,), generator=g),
    )


def log_probs(logits, temperature):
    z = logits.double() / temperature
    return z - z.exp().sum(1, keepdim=True).log()


def cross_entropy(logits, targets):
    return -log_probs(logits, 1.0).gather(1, targets[:, None]).mean()


def kl_sum(student, teacher, temperature):
    """sum over batch and classes of p_t * (log p_t - log p_s)."""
    log_s, log_t = log_probs(student, temperature), log_probs(teacher, temperature)
    return (log_t.exp() * (log_t - log_s)).sum()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_source4_is_mean_over_elements_without_t2(temperature):
    s, t, y = batch()
    alpha = 0.7
    soft = kl_sum(s, t, temperature) / s.numel()  # 'mean': batch x classes, no T^2
    expected = alpha * soft + (1 - alpha) * cross_entropy(s, y)
    with pytest.warns(UserWarning, match="batchmean"):  # PyTorch itself flags 'mean'
        got = kd_loss_source4(s, t, y, temperature, alpha)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
def test_source4_soft_gradient_is_one_over_classes_times_t2():
    s, t, y = batch()
    grads = []
    for fn in (kd_loss, kd_loss_source4):
        x = s.clone().requires_grad_(True)
        fn(x, t, y, 4.0, 1.0).backward()
        grads.append(x.grad.norm().item())
    assert grads[0] / grads[1] == pytest.approx(10 * 16, rel=1e-4)


def test_source3_is_nan_in_current_pytorch():
    s, t, y = batch()
    # the long way: target * (log(target) - input) with a negative target -> log is NaN
    target, inp = log_probs(t, 4.0), log_probs(s, 4.0)
    reference = (target * (target.log() - inp)).sum() / len(s)
    assert math.isnan(reference.item())
    x = s.clone().requires_grad_(True)
    loss = kd_loss_source3(x, t, y, 4.0, 1.0)
    assert math.isnan(loss.item())
    loss.backward()
    # the gradient is finite: that of -T^2 * sum(log p_t * log p_s) / N, the NaN-free part
    z = s.double().clone().requires_grad_(True)
    (-16.0 * (log_probs(t, 4.0) * log_probs(z, 4.0)).sum() / len(s)).backward()
    torch.testing.assert_close(x.grad.double(), z.grad, rtol=1e-5, atol=1e-7)


def descend(loss_fn, student, teacher, steps):
    """Plain SGD on the student's logits with the loss's soft term alone (alpha = 1)."""
    s = student.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([s], lr=1.0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(s, teacher, torch.zeros(len(s), dtype=torch.long), 4.0, 1.0).backward()
        optimizer.step()
    return s.detach()


def test_source3_drives_the_student_past_the_teacher():
    s, t, _ = batch()
    kl = lambda z: 16.0 * kl_sum(z, t, 4.0).item() / len(s)  # noqa: E731
    right, buggy = descend(kd_loss, s, t, 300), descend(kd_loss_source3, s, t, 300)
    assert kl(right) < 0.1 * kl(s)  # the right soft term pulls the student onto the teacher
    assert kl(buggy) > kl(s)  # the buggy one overshoots: no minimum at the teacher
    assert (buggy / 4.0).softmax(1).max(1).values.min() > 0.99  # over-confident student


def test_alpha_on_ce_is_kd_loss_with_one_minus_alpha():
    s, t, y = batch()
    for a in (0.0, 0.3, 1.0):
        soft = 16.0 * kl_sum(s, t, 4.0) / len(s)
        expected = a * cross_entropy(s, y) + (1 - a) * soft
        assert kd_loss_alpha_on_ce(s, t, y, 4.0, a).item() == pytest.approx(expected.item())


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("fn", list(BUGGY_KD_LOSSES.values()))
def test_check_kd_loss_flags_every_buggy_variant(fn):
    words = {
        kd_loss_source3: "log_target=True",
        kd_loss_source4: "reduction='mean'",
        kd_loss_alpha_on_ce: "alpha weights the cross-entropy",
    }[fn]
    diagnosis = check_kd_loss(fn)
    assert not diagnosis.ok and words in str(diagnosis), str(diagnosis)


def test_hint_loss_matches_long_way():
    torch.manual_seed(0)
    adapter = FeatureAdapter(4, 6).eval()
    fs, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    mapped = adapter.proj(fs)  # 1x1 conv + BN, then 2x2 average pooling to 4x4 by hand
    pooled = mapped.reshape(2, 6, 4, 2, 4, 2).mean((3, 5))
    expected = ((pooled - ft) ** 2).mean()
    torch.testing.assert_close(hint_loss(fs, ft, adapter), expected)


def test_hint_loss_rejects_flat_features():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        hint_loss(torch.randn(2, 4), torch.randn(2, 4, 1, 1), FeatureAdapter(4, 4))
