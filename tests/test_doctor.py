"""kdbook.doctor.check_kd_loss: the right loss passes, each known bug is named.

Every buggy variant is written out here the long way (sums over classes, explicit
means), independently of kdbook.losses, so the check is tested against a second
implementation and not against itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdbook.doctor import (
    Diagnosis,
    check_ece,
    check_eval_mode,
    check_kd_loss,
    check_mean_ci,
    check_no_grad,
    check_teacher_frozen,
    saved_bytes,
)
from kdbook.environment import FAIL, EnvCheck, environment_report, format_report
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


# ---------------------------------------------------------------- the teacher


def small_teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(4 * 6 * 6, 3),
    )  # fmt: skip


def test_frozen_teacher_passes():
    diagnosis = check_teacher_frozen(small_teacher().requires_grad_(False))
    assert diagnosis.ok and "all 6 parameter tensors" in str(diagnosis), str(diagnosis)


def test_unfrozen_teacher_counted():
    diagnosis = check_teacher_frozen(small_teacher())
    assert not diagnosis.ok
    weights = 1 * 4 * 9 + 4 + 4 + 4 + 4 * 36 * 3 + 3
    assert f"6 of 6 parameter tensors ({weights:,} weights)" in str(diagnosis), str(diagnosis)


def test_source4_attribute_mistake_named():
    teacher = small_teacher()
    for params in teacher.parameters():
        params.requires_grad_ = False  # source 4's line: an attribute, not the method
    assert all(p.requires_grad for p in teacher.parameters())  # nothing froze
    diagnosis = check_teacher_frozen(teacher)
    text = str(diagnosis)
    assert len(diagnosis.problems) == 2
    assert "attribute named requires_grad_" in text and "6 of 6" in text, text


def test_partly_frozen_names_the_rest():
    teacher = small_teacher()
    teacher[0].requires_grad_(False)
    assert "4 of 6 parameter tensors" in str(check_teacher_frozen(teacher))


def test_train_mode_teacher_names_batchnorm_and_dropout():
    diagnosis = check_eval_mode(small_teacher())
    text = str(diagnosis)
    assert not diagnosis.ok
    assert "1 BatchNorm layers are in train mode (1)" in text, text
    assert "1 Dropout layers are in train mode (4)" in text, text


def test_eval_mode_passes_and_harmless_train_mode_is_ok():
    assert check_eval_mode(small_teacher().eval()).ok
    harmless = check_eval_mode(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    assert harmless.ok and "none of them BatchNorm or Dropout" in str(harmless)


def test_no_grad_detector():
    teacher, x = small_teacher().eval(), torch.randn(2, 1, 8, 8)
    with_graph = check_no_grad(lambda: teacher(x).detach())  # source 3's pattern
    assert not with_graph.ok and "torch.no_grad()" in str(with_graph)
    assert "output requires grad" in str(check_no_grad(lambda: teacher(x)))

    def right():
        with torch.no_grad():
            return teacher(x)

    assert check_no_grad(right).ok


def test_saved_bytes_counts_activations_not_parameters():
    layer = nn.Linear(100, 10)
    x = torch.randn(8, 100)
    # Linear saves its input (8 x 100 floats) for the weight's gradient; the weight is a
    # parameter and is left out.
    assert saved_bytes(lambda: layer(x)) == 8 * 100 * 4
    with torch.no_grad():
        assert saved_bytes(lambda: layer(x)) == 0


# ---------------------------------------------------------------- the environment


def test_environment_report_here():
    rows = {r.name: r for r in environment_report()}
    for name in ("python", "torch", "papermill", "nbval", "ipywidgets", "jupyterlab"):
        assert rows[name].status == "ok", rows[name]
    assert rows["kernel python3"].status == "ok", rows["kernel python3"]
    assert rows["data digits"].found.startswith("1797 images")
    assert "device" in rows and rows["data cifar10"].status in ("ok", "info")


def test_environment_report_finds_imagefolder_trees(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / "data" / "xray" / split / "normal").mkdir(parents=True)
    (tmp_path / "data" / "other").mkdir()
    rows = {r.name: r for r in environment_report(str(tmp_path / "data"))}
    assert rows["data imagefolder"].found == "imagefolder:data/xray"
    assert rows["data cifar10"].status == "info" and "cifar-10" in rows["data cifar10"].action


def test_format_report_aligns_columns():
    text = format_report([EnvCheck("a", "ok", "1.0"), EnvCheck("longer", FAIL, "x", "fix it")])
    lines = text.splitlines()
    assert lines[0].startswith("check ") and lines[1].startswith("------")
    assert lines[3].split() == ["longer", "FAIL", "x", "fix", "it"]
    assert lines[2].index("ok") == lines[3].index("FAIL")


def test_batchnorm_running_means_move_in_train_mode_only(digits):
    from helpers import tiny

    from kdbook.doctor import batchnorm_running_means

    model = tiny(digits)
    x = digits.normalize(digits.train.images[:32])
    for train_mode, moved in ((False, False), (True, True)):
        model.train(train_mode)
        before = batchnorm_running_means(model)
        with torch.no_grad():
            model(x)
        assert (not torch.equal(before, batchnorm_running_means(model))) == moved
    assert before.numel() == sum(
        m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    with pytest.raises(ValueError, match="has no BatchNorm layer"):
        batchnorm_running_means(nn.Linear(2, 2))
