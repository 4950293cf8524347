"""Per-token forward KL, reverse KL and generalised JSD against references written the long way
in float64, and against TRL GKDTrainer's formula written out here; masked positions ignored."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook.data import UNLABELED
from kdbook.losses import (
    TERMS,
    Outputs,
    TokenJSD,
    TokenKD,
    TokenReverseKL,
    generalized_jsd_loss,
    reverse_kl_loss,
    token_kd_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def batch(b=3, length=5, v=7, seed=0, scale=3.0):
    """Student and teacher logits ``[b, length, v]`` and a padding mask with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(b, length, v, generator=g)
    t = scale * torch.randn(b, length, v, generator=g)
    lengths = torch.tensor([length, max(1, length - 2), max(1, length // 2)])[:b]
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return s, t, mask


def softmax64(z, temperature):
    """``softmax(z / T)`` in float64, by its definition."""
    z = z.double() / temperature
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def kept(mask, b, length):
    return [(i, j) for i in range(b) for j in range(length) if mask is None or bool(mask[i, j])]


def reference_kl(s, t, mask, temperature, reverse=False):
    """``T^2 * mean over kept (i, j) of sum_v p (log p - log q)``, loops over positions."""
    ps, pt = softmax64(s, temperature), softmax64(t, temperature)
    terms = []
    for i, j in kept(mask, s.shape[0], s.shape[1]):
        p, q = (ps[i, j], pt[i, j]) if reverse else (pt[i, j], ps[i, j])
        terms.append(sum(float(p[v] * math.log(p[v] / q[v])) for v in range(s.shape[-1])))
    return temperature**2 * sum(terms) / len(terms)


def trl_generalized_jsd(s, t, mask, beta, temperature):
    """TRL GKDTrainer.generalized_jsd_loss's formula, written out with probabilities in float64.

    At temperature T: ``p_s = softmax(s/T)``, ``p_t = softmax(t/T)`` (no T^2 anywhere);
    beta = 0: ``KL(p_t || p_s)``; beta = 1: ``KL(p_s || p_t)``; otherwise with the mixture
    ``m = beta p_t + (1 - beta) p_s``: ``beta KL(p_t || m) + (1 - beta) KL(p_s || m)``.
    Reduction ``batchmean`` with labels: the sum over the completion tokens divided by their
    number.
    """
    ps, pt = softmax64(s, temperature), softmax64(t, temperature)

    def kl(p, q):
        return float((p * (p / q).log()).sum())

    total, positions = 0.0, kept(mask, s.shape[0], s.shape[1])
    for i, j in positions:
        p_s, p_t = ps[i, j], pt[i, j]
        if beta == 0:
            total += kl(p_t, p_s)
        elif beta == 1:
            total += kl(p_s, p_t)
        else:
            m = beta * p_t + (1 - beta) * p_s
            total += beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
    return total / len(positions)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("use_mask", [True, False])
def test_forward_and_reverse_kl_match_the_reference(temperature, use_mask):
    s, t, mask = batch(seed=int(temperature * 4))
    mask = mask if use_mask else None
    got = token_kd_loss(s, t, mask, temperature).item()
    assert got == pytest.approx(reference_kl(s, t, mask, temperature), rel=1e-5, abs=1e-6)
    got = reverse_kl_loss(s, t, mask, temperature).item()
    expected = reference_kl(s, t, mask, temperature, reverse=True)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_matches_trl_formula(beta, temperature):
    s, t, mask = batch(seed=3)
    got = generalized_jsd_loss(s, t, mask, beta, temperature).item()
    expected = trl_generalized_jsd(s, t, mask, beta, temperature)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_jsd_ends_are_the_two_kls_without_t_squared(temperature):
    s, t, mask = batch(seed=5)
    fwd = generalized_jsd_loss(s, t, mask, 0.0, temperature) * temperature**2
    rev = generalized_jsd_loss(s, t, mask, 1.0, temperature) * temperature**2
    torch.testing.assert_close(fwd, token_kd_loss(s, t, mask, temperature))
    torch.testing.assert_close(rev, reverse_kl_loss(s, t, mask, temperature))


def test_jsd_gradient_over_beta_tends_to_forward_kl():
    """Near beta = 0 the mixture formula's gradient, divided by beta, is forward KL's."""
    s, t, mask = batch(seed=7, scale=1.0)
    s64, t64 = s.double().requires_grad_(), t.double()
    (g_fwd,) = torch.autograd.grad(token_kd_loss(s64, t64, mask), s64)
    beta = 1e-6
    (g_jsd,) = torch.autograd.grad(generalized_jsd_loss(s64, t64, mask, beta), s64)
    torch.testing.assert_close(g_jsd / beta, g_fwd, rtol=1e-4, atol=1e-6)


def test_jsd_is_stable_for_extreme_logits():
    """Probabilities that underflow in float32 do not turn the mixture's log into -inf."""
    s, t, mask = batch(seed=2, scale=200.0)
    got = generalized_jsd_loss(s, t, mask, 0.5)
    assert torch.isfinite(got)
    expected = generalized_jsd_loss(s.double(), t.double(), mask, 0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t, m: token_kd_loss(s, t, m, 2.0),
        lambda s, t, m: reverse_kl_loss(s, t, m, 2.0),
        lambda s, t, m: generalized_jsd_loss(s, t, m, 0.3, 2.0),
    ],
    ids=["forward", "reverse", "jsd"],
)
def test_masked_positions_are_ignored(loss):
    """NaN at every padded position changes neither the loss nor the kept positions' gradient,
    and the padded positions get exactly zero gradient."""
    s, t, mask = batch(seed=11)
    clean = s.clone().requires_grad_()
    expected = loss(clean, t, mask)
    expected.backward()
    poisoned_s, poisoned_t = s.clone(), t.clone()
    poisoned_s[~mask], poisoned_t[~mask] = float("nan"), float("nan")
    poisoned_s.requires_grad_()
    got = loss(poisoned_s, poisoned_t, mask)
    got.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(poisoned_s.grad, clean.grad)
    assert bool((poisoned_s.grad[~mask] == 0).all())
    # the same loss on the kept positions only, as one flat batch
    torch.testing.assert_close(loss(s[mask], t[mask], None), expected)


def test_no_mask_is_an_all_true_mask_and_an_empty_mask_is_zero():
    s, t, mask = batch(seed=1)
    full = torch.ones_like(mask)
    torch.testing.assert_close(token_kd_loss(s, t, None), token_kd_loss(s, t, full))
    torch.testing.assert_close(token_kd_loss(s, t, None), token_kd_loss(s, t, full.int()))
    s = s.requires_grad_()
    empty = token_kd_loss(s, t, torch.zeros_like(mask))
    assert empty.item() == 0.0
    empty.backward()
    assert bool((s.grad == 0).all())


def test_same_distributions_give_zero():
    s, _, mask = batch(seed=4)
    for beta in (0.0, 0.5, 1.0):
        assert generalized_jsd_loss(s, s.clone(), mask, beta).item() == pytest.approx(0, abs=1e-6)
    assert reverse_kl_loss(s, s.clone(), mask, 3.0).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, t, m: generalized_jsd_loss(s, t, m, beta=-0.1), r"beta must be .* got -0.1"),
        (lambda s, t, m: generalized_jsd_loss(s, t, m, beta=1.5), r"beta must be .* got 1.5"),
        (lambda s, t, m: generalized_jsd_loss(s, t, m, beta=True), r"beta must be .* got True"),
        (lambda s, t, m: token_kd_loss(s, t[..., :-1], m), r"vocabularies differ.*7.*6"),
        (lambda s, t, m: reverse_kl_loss(s, t[:, :-1], m), r"one shape"),
        (lambda s, t, m: token_kd_loss(s, t, m[:, :-1]), r"mask must have shape \(3, 5\)"),
        (lambda s, t, m: token_kd_loss(s, t, m.int() * 2), r"mask must hold booleans"),
        (lambda s, t, m: token_kd_loss(s, t, m, 0.0), r"temperature must be > 0, got 0.0"),
        (lambda s, t, m: reverse_kl_loss(s, t, m, -1.0), r"temperature must be > 0, got -1.0"),
        (lambda s, t, m: token_kd_loss(s[0, 0], t[0, 0], None), r"must be \[B, L, V\]"),
    ],
)
def test_bad_input_is_named(call, match):
    s, t, mask = batch()
    with pytest.raises(ValueError, match=match):
        call(s, t, mask)


def test_terms_read_the_padding_from_the_targets():
    s, t, mask = batch(seed=9)
    targets = torch.randint(0, s.shape[-1], mask.shape, generator=torch.Generator().manual_seed(0))
    targets[~mask] = UNLABELED
    out = Outputs(logits=s, targets=targets, temperature=1.0, teacher_logits=t)
    loss, logs = TokenKD(2.0)(out, 0.0)
    torch.testing.assert_close(loss, token_kd_loss(s, t, mask, 2.0))
    assert logs["token_kd"] == pytest.approx(loss.item())
    loss, _ = TokenReverseKL(1.5)(out, 0.0)
    torch.testing.assert_close(loss, reverse_kl_loss(s, t, mask, 1.5))
    loss, _ = TokenJSD(0.2, 1.0, alpha=0.5)(out, 0.0)
    ce = torch.nn.functional.cross_entropy(s[mask], targets[mask])
    torch.testing.assert_close(loss, 0.5 * generalized_jsd_loss(s, t, mask, 0.2) + 0.5 * ce)
    assert {"token_kd", "token_reverse_kl", "token_jsd"} <= set(TERMS)
    with pytest.raises(ValueError, match="beta must be"):
        TokenJSD(beta=2.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        TokenKD(alpha=1.5)
