"""kdbook.doctor.check_kd_loss: the right loss passes, each known bug is named.

Every buggy variant is written out here the long way (sums over classes, explicit
means), independently of kdbook.losses, so the check is tested against a second
implementation and not against itself.
"""

from __future__ import annotations

import pytest
import torch

from kdbook.doctor import Diagnosis, check_ece, check_kd_loss, check_mean_ci
from kdbook.losses import kd_loss


def log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits / temperature
    return z - z.exp().sum(1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -log_probs(logits, 1.0).gather(1, targets[:, None]).mean()


def kl_per_sample(student, teacher, temperature):
    """KL(teacher || student) per sample, summed over classes."""
    log_p_s, log_p_t = log_probs(student, temperature), log_probs(teacher, temperature)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)


def correct(s, t, y, temperature, alpha):
    soft = temperature**2 * kl_per_sample(s, t, temperature).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def missing_t2(s, t, y, temperature, alpha):
    soft = kl_per_sample(s, t, temperature).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def reduction_mean(s, t, y, temperature, alpha):
    # KLDivLoss()'s default 'mean' averages over every element: batch * classes.
    soft = temperature**2 * kl_per_sample(s, t, temperature).sum() / s.numel()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def source4(s, t, y, temperature, alpha):
    # Source 4: reduction 'mean' and no T^2.
    soft = kl_per_sample(s, t, temperature).sum() / s.numel()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def reduction_sum(s, t, y, temperature, alpha):
    soft = temperature**2 * kl_per_sample(s, t, temperature).sum()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def log_target_missing(s, t, y, temperature, alpha):
    # Source 3: log-probabilities given as the target, read as probabilities:
    # sum target * (log(target) - input), with log of a negative number.
    target, inp = log_probs(t, temperature), log_probs(s, temperature)
    soft = temperature**2 * (target * (target.log() - inp)).sum(1).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def swapped_alpha(s, t, y, temperature, alpha):
    soft = temperature**2 * kl_per_sample(s, t, temperature).mean()
    return (1 - alpha) * soft + alpha * cross_entropy(s, y)


def reversed_kl(s, t, y, temperature, alpha):
    soft = temperature**2 * kl_per_sample(t, s, temperature).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def student_probs(s, t, y, temperature, alpha):
    # kl_div(softmax(s/T), softmax(t/T)): input read as log-probabilities.
    p_s, p_t = log_probs(s, temperature).exp(), log_probs(t, temperature).exp()
    soft = temperature**2 * (p_t * (p_t.log() - p_s)).sum(1).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s, y)


def softened_ce(s, t, y, temperature, alpha):
    soft = temperature**2 * kl_per_sample(s, t, temperature).mean()
    return alpha * soft + (1 - alpha) * cross_entropy(s / temperature, y)


def detached(s, t, y, temperature, alpha):
    return correct(s.detach(), t, y, temperature, alpha)


def returns_float(s, t, y, temperature, alpha):
    return correct(s, t, y, temperature, alpha).item()


def per_sample(s, t, y, temperature, alpha):
    return temperature**2 * kl_per_sample(s, t, temperature)


def raises(s, t, y, temperature, alpha):
    raise RuntimeError("not written yet")


@pytest.mark.parametrize("fn", [kd_loss, correct], ids=["kd_loss", "long_way"])
def test_correct_loss_passes(fn):
    diagnosis = check_kd_loss(fn)
    assert diagnosis.ok, str(diagnosis)
    assert diagnosis.problems == []
    assert str(diagnosis) == "✓ matches kd_loss"


@pytest.mark.parametrize(
    "fn, words",
    [
        (missing_t2, ["T^2"]),
        (reduction_mean, ["reduction='mean'"]),
        (source4, ["T^2", "reduction='mean'"]),
        (reduction_sum, ["reduction='sum'", "duplicating the batch"]),
        (log_target_missing, ["log_target=True", "source 3", "student == teacher"]),
        (swapped_alpha, ["alpha weights the cross-entropy"]),
        (reversed_kl, ["reversed"]),
        (student_probs, ["log_softmax(student/T)", "student == teacher"]),
        (softened_ce, ["alpha=0 (cross-entropy only)"]),
        (detached, ["no gradient"]),
        (returns_float, ["not a tensor"]),
        (per_sample, ["not a scalar"]),
        (raises, ["RuntimeError", "not written yet"]),
    ],
)
def test_each_bug_is_named(fn, words):
    diagnosis = check_kd_loss(fn)
    assert not diagnosis.ok
    text = str(diagnosis)
    assert text.startswith("✗ ")
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("fn, count", [(swapped_alpha, 1), (log_target_missing, 2)])
def test_no_spurious_problems(fn, count):
    diagnosis = check_kd_loss(fn)
    assert len(diagnosis.problems) == count, str(diagnosis)


def test_missing_t2_found_at_other_temperature():
    assert "1/T^2 = 1/4" in str(check_kd_loss(missing_t2, temperature=2.0))


def test_temperature_one_rejected():
    with pytest.raises(ValueError, match="temperature must be > 0 and != 1, got 1"):
        check_kd_loss(kd_loss, temperature=1)


def test_html_repr():
    assert "✓" in Diagnosis(True)._repr_html_()
    html = Diagnosis(False, ["a < b"])._repr_html_()
    assert "a &lt; b" in html and "✗" in html


# ---------------------------------------------------------------- check_mean_ci

GAINS = [1.0, 3.0, 2.5, 4.0, 0.5]


def t_interval_long_way(values):
    import math

    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t.ppf(0.975, n - 1) * sd / math.sqrt(n), sd


def test_mean_ci_right_answer_passes():
    mean, ci, _ = t_interval_long_way(GAINS)
    assert check_mean_ci(GAINS, mean, ci).ok


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda m, ci, sd: (m, 1.96 * sd / 5**0.5), "Student's t"),
        (lambda m, ci, sd: (m, ci * 5**0.5), "sqrt(n)"),
        (lambda m, ci, sd: (m, ci * (4 / 5) ** 0.5), "ddof=1"),
        (lambda m, ci, sd: (m, sd), "standard deviation, not"),
        (lambda m, ci, sd: (m, sd / 5**0.5), "standard error"),
        (lambda m, ci, sd: (m + 1, ci), "the mean is"),
        (lambda m, ci, sd: (None, None), "not answered yet"),
    ],
)
def test_mean_ci_mistakes_named(wrong, words):
    diagnosis = check_mean_ci(GAINS, *wrong(*t_interval_long_way(GAINS)))
    assert not diagnosis.ok and words in str(diagnosis), str(diagnosis)


# ---------------------------------------------------------------- check_ece


def ece_long_way(logits, labels, num_bins=10, percent=True, weighted=True):
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    total, gaps = 0.0, []
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = abs((pred[inside] == labels[inside]).float().mean() - conf[inside].mean())
            total += gap.item() * inside.sum().item() / len(labels)
            gaps.append(gap.item())
    value = total if weighted else sum(gaps) / len(gaps)
    return 100 * value if percent else value


def test_ece_right_answer_passes():
    assert check_ece(ece_long_way).ok


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda lg, lb, n: ece_long_way(lg, lb, n, percent=False), "percent"),
        (lambda lg, lb, n: ece_long_way(lg, lb, n, weighted=False), "share of the samples"),
        (lambda lg, lb, n: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_ece_mistakes_named(fn, words):
    diagnosis = check_ece(fn)
    assert not diagnosis.ok and words in str(diagnosis), str(diagnosis)
