"""The synthetic language: a proper distribution, exact sums against Monte Carlo within their
standard error, KL(p || p) = 0, deterministic from the seed, bad input named."""

from __future__ import annotations

import pytest
import torch

from kdbook.models import build_model
from kdbook.synthetic_language import (
    all_sequences,
    exact_cross_entropy,
    exact_kl,
    make_language,
    monte_carlo_cross_entropy,
    monte_carlo_kl,
    next_token_logits,
    sample_sequences,
    sequence_log_probs,
)

pytestmark = pytest.mark.usefixtures("single_thread")
V, L = 4, 5


@pytest.fixture(scope="module")
def lang():
    return make_language(seed=1, vocab_size=V, length=L)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("char_tiny", V + 1, context=L).eval()


def test_the_language_is_a_distribution_and_its_conditionals_agree(lang):
    seqs = all_sequences(V, L)
    assert seqs.shape == (V**L, L) and len(set(map(tuple, seqs.tolist()))) == V**L
    log_p = lang.log_prob(seqs)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # the chained next-token conditionals give the forward algorithm's sequence probabilities
    torch.testing.assert_close(sequence_log_probs(lang, seqs, V), log_p)
    # a model's chained conditionals sum to 1 over all sequences too (BOS dropped)
    torch.manual_seed(0)
    model = build_model("char_tiny", V + 1, context=L)
    with torch.no_grad():
        total = sequence_log_probs(model, seqs, V).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


def test_the_same_seed_gives_the_same_language_and_samples():
    a, b, c = make_language(seed=3), make_language(seed=3), make_language(seed=4)
    assert torch.equal(a.emission, b.emission) and not torch.equal(a.emission, c.emission)
    draw = [a.sample(50, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(*draw)


def test_sample_frequencies_match_the_exact_probabilities(lang):
    n = 20_000
    seqs = lang.sample(n, torch.Generator().manual_seed(0))
    first = torch.bincount(seqs[:, 0], minlength=V).double() / n
    exact = next_token_logits(lang, seqs[:1], V)[0, 0].softmax(-1)
    se = (exact * (1 - exact) / n).sqrt()
    assert bool(((first - exact).abs() < 4 * se + 1e-9).all()), (first, exact)


def test_kl_of_a_model_with_itself_is_zero(lang, model):
    assert exact_kl(lang, lang, V, L) == 0.0
    assert exact_kl(model, model, V, L) == pytest.approx(0.0, abs=1e-12)
    assert exact_kl(lang, model, V, L) > 0 and exact_kl(model, lang, V, L) > 0


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_exact_kl_agrees_with_monte_carlo_within_its_error(lang, model, direction):
    p, q = (lang, model) if direction == "forward" else (model, lang)
    exact = exact_kl(p, q, V, L)
    estimate = monte_carlo_kl(p, q, V, L, 4000, torch.Generator().manual_seed(1))
    print(f"KL {direction}: exact {exact:.4f}, Monte Carlo {estimate}")
    assert abs(estimate.mean - exact) < 4 * estimate.stderr


def test_cross_entropy_exact_and_estimated(lang, model):
    entropy = exact_cross_entropy(lang, lang, V, L)
    assert exact_cross_entropy(lang, model, V, L) == pytest.approx(
        entropy + exact_kl(lang, model, V, L)
    )
    estimate = monte_carlo_cross_entropy(model, lang, V, L, 4000, torch.Generator().manual_seed(2))
    exact = exact_cross_entropy(model, lang, V, L)
    assert abs(estimate.mean - exact) < 4 * estimate.stderr


def test_model_samples_follow_its_exact_distribution(model):
    n = 4000
    seqs = sample_sequences(model, n, V, L, torch.Generator().manual_seed(5))
    assert seqs.shape == (n, L) and int(seqs.max()) < V  # BOS is never drawn
    first = torch.bincount(seqs[:, 0], minlength=V).double() / n
    with torch.no_grad():
        exact = next_token_logits(model, seqs[:1], V)[0, 0].double().softmax(-1)
    assert bool(((first - exact).abs() < 4 * (exact * (1 - exact) / n).sqrt()).all())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_language(vocab_size=1), "vocab_size must be an integer >= 2, got 1"),
        (lambda: make_language(length=0), "length must be an integer >= 1, got 0"),
        (lambda: make_language(concentration=0), "concentration must be a number > 0, got 0"),
        (lambda: make_language(vocab_size=10, length=8), r"at most 200000.*10\*\*8"),
        (lambda: make_language().log_prob(torch.zeros(2, 3, dtype=torch.long)), r"\[N, 6\]"),
        (lambda: make_language().log_prob(torch.full((1, 6), 4)), r"token ids in \[0, 4\)"),
        (lambda: make_language().sample(0, torch.Generator()), "n must be an integer >= 1"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
