"""The canon after Hinton (notebooks 13-14): DKD, logit standardisation, views and mixup.

Each loss against an independent reference written the long way (float64, explicit sums),
its bad inputs refused with the parameter, the value and what is accepted; each Distiller
piece trained through fit; and check_kd_loss naming a wrong DKD.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import random_batch, tiny

from kdbook.data import UNLABELED
from kdbook.distill import DKD, Distiller, IndependentViews, LogitKD, Mixup, list_terms
from kdbook.doctor import check_kd_loss
from kdbook.losses import (
    DKD_WARMUP,
    dkd_loss,
    dkd_objective,
    dkd_terms,
    kd_loss,
    soft_kd_term,
    standardize_logits,
)
from kdbook.runtime import Runtime
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")


def softmax64(row, t):
    """Softmax of a list of numbers at T, the long way."""
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    return [v / sum(e) for v in e]


def kl64(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def reference_dkd(student, teacher, targets, t, beta):
    """Zhao et al.'s TCKD + beta * NCKD, sample by sample, in Python floats."""
    total = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), targets.tolist(), strict=True):
        ps, pt = softmax64(s_row, t), softmax64(t_row, t)
        tckd = kl64([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        rest = [k for k in range(len(s_row)) if k != y]
        qs = softmax64([s_row[k] for k in rest], t)
        qt = softmax64([t_row[k] for k in rest], t)
        total += t * t * (tckd + beta * kl64(qt, qs))
    return total / len(student)


def reference_standardized_kd(student, teacher, targets, t, alpha):
    """Sun et al.'s z-scored logits (population std), then Hinton's loss, the long way."""

    def z(row):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / len(row))
        return [(v - mean) / std for v in row]

    soft, hard = 0.0, 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), targets.tolist(), strict=True):
        soft += t * t * kl64(softmax64(z(t_row), t), softmax64(z(s_row), t))
        hard -= math.log(softmax64(s_row, 1.0)[y])
    n = len(student)
    return alpha * soft / n + (1 - alpha) * hard / n


# -- DKD -------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 10.0])
@pytest.mark.parametrize("beta", [0.0, 1.0, 8.0])
def test_dkd_loss_matches_the_long_way(temperature, beta):
    s, t, y = random_batch(seed=int(temperature * 10) + int(beta))
    got = dkd_loss(s, t, y, temperature, beta).item()
    assert got == pytest.approx(reference_dkd(s, t, y, temperature, beta), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_classic_kd_is_tckd_plus_one_minus_pt_times_nckd(temperature):
    s, t, y = random_batch(n=8, c=10, seed=3)
    tckd, nckd = dkd_terms(s, t, y, temperature)
    p_target = F.softmax(t / temperature, 1)[torch.arange(8), y]
    kd_per_sample = temperature**2 * F.kl_div(
        F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="none"
    ).sum(1)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd_per_sample)
    assert (tckd >= 0).all() and (nckd >= 0).all()


def test_dkd_is_zero_when_student_equals_teacher_and_finite_at_extremes():
    s, _, y = random_batch()
    assert dkd_loss(s, s.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    huge = torch.full((2, 4), -1e4)
    huge[:, 0] = 1e4
    value = dkd_loss(huge, -huge, torch.tensor([0, 1]))
    assert torch.isfinite(value)


def test_dkd_objective_is_ce_plus_the_warmed_up_term():
    s, t, y = random_batch()
    ce, dkd = F.cross_entropy(s, y), dkd_loss(s, t, y)
    for progress, weight in [(0.0, 0.0), (DKD_WARMUP / 2, 0.5), (DKD_WARMUP, 1.0), (1.0, 1.0)]:
        torch.testing.assert_close(dkd_objective(s, t, y, progress=progress), ce + weight * dkd)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, t, y: dkd_loss(s, t, y, beta=-1.0), "beta must be a number >= 0, got -1.0"),
        (lambda s, t, y: dkd_loss(s, t, y, temperature=0.0), "temperature must be > 0, got 0.0"),
        (lambda s, t, y: dkd_loss(s, t[:, :3], y), r"same shape \(N, C\), got \(6, 5\) and"),
        (lambda s, t, y: dkd_loss(s, t, y[:4]), r"targets must have shape \(6,\)"),
        (
            lambda s, t, y: dkd_loss(s, t, torch.full_like(y, UNLABELED)),
            r"class indices in \[0, 5\) for dkd_loss .* got -1",
        ),
        (lambda s, t, y: dkd_objective(s, t, y, warmup=1.0), r"warmup must be .* \[0, 1\)"),
    ],
)
def test_dkd_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call(*random_batch())


# -- logit standardisation -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_standardized_kd_matches_the_long_way(temperature, alpha):
    s, t, y = random_batch(seed=int(temperature * 7))
    got = kd_loss(s, t, y, temperature, alpha, standardize=True).item()
    expected = reference_standardized_kd(s, t, y, temperature, alpha)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_standardisation_ignores_each_samples_shift_and_scale():
    s, t, _ = random_batch()
    shift, scale = torch.randn(6, 1), torch.rand(6, 1) + 0.5
    torch.testing.assert_close(standardize_logits(s * scale + shift), standardize_logits(s))
    assert soft_kd_term(s, t * scale + shift, 2.0, standardize=True).item() == pytest.approx(
        soft_kd_term(s, t, 2.0, standardize=True).item(), rel=1e-5
    )
    z = standardize_logits(s)
    torch.testing.assert_close(z.mean(1), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(6), atol=1e-5, rtol=0)


def test_standardisation_refuses_a_single_class():
    with pytest.raises(ValueError, match=r"at least 2 classes .* got shape \(3, 1\)"):
        standardize_logits(torch.zeros(3, 1))


# -- the terms in the Distiller -------------------------------------------------------------


def test_dkd_and_logit_kd_replace_the_distillers_own_logit_term(digits, teacher):
    assert {"dkd", "logit_kd"} <= set(list_terms())
    model = tiny(digits).eval()
    x = digits.normalize(digits.train.images[:32])
    y, idx = digits.train.labels[:32], torch.arange(32)
    with torch.no_grad():
        s, t = model(x), teacher(x)
    cases = [
        (DKD(temperature=4.0, beta=8.0), dkd_objective(s, t, y, 4.0, 8.0, 0.5)),
        (LogitKD(2.0, 0.9, standardize=True), kd_loss(s, t, y, 2.0, 0.9, standardize=True)),
    ]
    for term, expected in cases:
        distiller = Distiller(teacher, terms=[term])
        assert distiller.terms == [term]  # no LogitKD of T 4, alpha 0.7 beside it
        student = distiller.student(model, digits, Runtime(torch.device("cpu")), seed=0)
        loss, _, logs = distiller.loss(student, x, y, idx, 0.5)
        torch.testing.assert_close(loss, expected)
        assert logs["kl"] == pytest.approx(
            soft_kd_term(s, t, term.temperature).item() / term.temperature**2, rel=1e-5
        )
    with pytest.raises(ValueError, match="one logit loss"):
        Distiller(teacher, terms=[DKD(), LogitKD(4.0, 0.7)])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DKD(beta=-1), "beta must be a number >= 0, got -1"),
        (lambda: DKD(temperature=-2.0), "temperature must be a number > 0, got -2.0"),
        (lambda: DKD(warmup=1.5), r"warmup must be a fraction of training in \[0, 1\), got 1.5"),
        (lambda: LogitKD(4.0, 1.5), r"alpha must be a number in \[0, 1\], got 1.5"),
        (lambda: LogitKD(4.0, 0.7, standardize="yes"), "standardize must be True or False"),
        (lambda: Mixup(0.0), "concentration must be a number > 0, got 0.0"),
    ],
)
def test_bad_term_settings_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_fit_with_dkd_trains_logs_and_records_it(digits, teacher):
    history = fit(tiny(digits), digits, teacher=teacher, terms=[DKD()], num_epochs=2,
                  progress=False)  # fmt: skip
    assert history.settings["dkd"] == "DKD(temperature=4.0, beta=8.0, warmup=0.08333333333333333)"
    assert history.settings["temperature"] is None and history.settings["alpha"] is None
    assert all(math.isfinite(e["dkd"]) and e["kl"] > 0 for e in history.epochs)
    with pytest.raises(ValueError, match="'dkd' needs every training label .* got 1"):
        fit(tiny(digits), digits.with_label_fraction(0.05), teacher=teacher, terms=[DKD()],
            num_epochs=1, progress=False)  # fmt: skip


def test_the_default_logit_term_records_what_it_did_before(digits, teacher):
    history = fit(tiny(digits), digits, teacher=teacher, num_epochs=1, progress=False)
    assert history.settings["temperature"] == 4.0 and history.settings["alpha"] == 0.7
    assert "standardize" not in history.settings and "view" not in history.settings


# -- what teacher and student see ----------------------------------------------------------


def test_independent_views_give_the_teacher_its_own_augmentation(digits, teacher):
    distiller = Distiller(teacher, view=IndependentViews())
    model = tiny(digits)
    distiller.student(model, digits, Runtime(torch.device("cpu")), seed=0)
    idx = torch.arange(64)
    x = digits.normalize(digits.train.images[idx])
    x_student, x_teacher = distiller.view(x, idx, torch.Generator().manual_seed(0))
    assert x_student is x and x_teacher.shape == x.shape and not torch.equal(x_teacher, x)
    # each teacher image is a shift of the same training image, by at most one pixel
    plain = x[:, :, 1:-1, 1:-1]
    shifted = [x_teacher[:, :, 1 + dy : 7 + dy, 1 + dx : 7 + dx] for dy in (-1, 0, 1)
               for dx in (-1, 0, 1)]  # fmt: skip
    assert all(any(torch.equal(v[i], plain[i]) for v in shifted) for i in range(64))


def test_mixup_shows_both_the_same_mixed_batch_and_needs_alpha_one(digits, teacher):
    with pytest.raises(ValueError, match="mixes the images, not the labels: .* got 0.7"):
        Distiller(teacher, view=Mixup())
    with pytest.raises(ValueError, match="needs a teacher model, got teacher=None"):
        Distiller(None, view=IndependentViews())
    with pytest.raises(TypeError, match="view must be a kdbook.distill.View"):
        Distiller(teacher, view="mixup")
    distiller = Distiller(teacher, alpha=1.0, temperature=1.0, view=Mixup(1.0))
    x = digits.normalize(digits.train.images[:16])
    a, b = distiller.view(x, torch.arange(16), torch.Generator().manual_seed(0))
    assert a is b and not torch.equal(a, x)
    history = fit(tiny(digits), digits, teacher=distiller, num_epochs=2, progress=False)
    assert history.settings["view"] == "Mixup(concentration=1.0)"
    again = fit(tiny(digits), digits, teacher=distiller, num_epochs=2, progress=False)
    assert [e["kl"] for e in history.epochs] == [e["kl"] for e in again.epochs]  # seeded


# -- the doctor knows the DKD convention ----------------------------------------------------


def dkd_long_way(s, t, y, temperature, beta, progress):
    return F.cross_entropy(s, y) + min(progress / DKD_WARMUP, 1.0) * dkd_loss(
        s, t, y, temperature, beta
    )


def _nckd_with_target(s, t, y, temperature, beta):
    tckd, _ = dkd_terms(s, t, y, temperature)
    full = soft_kd_term(s, t, temperature)  # the target kept in the softmax
    return tckd.mean() + beta * full


def target_left_in(s, t, y, temperature, beta, progress):
    w = min(progress / DKD_WARMUP, 1.0)
    return F.cross_entropy(s, y) + w * _nckd_with_target(s, t, y, temperature, beta)


def no_warmup(s, t, y, temperature, beta, progress):
    return dkd_long_way(s, t, y, temperature, beta, 1.0)


def warmup_on_everything(s, t, y, temperature, beta, progress):
    return min(progress / DKD_WARMUP, 1.0) * dkd_long_way(s, t, y, temperature, beta, 1.0)


def warmup_too_long(s, t, y, temperature, beta, progress):
    ce = F.cross_entropy(s, y)
    return ce + min(progress / 0.5, 1.0) * dkd_loss(s, t, y, temperature, beta)


def beta_swapped(s, t, y, temperature, beta, progress):
    tckd, nckd = dkd_terms(s, t, y, temperature)
    w = min(progress / DKD_WARMUP, 1.0)
    return F.cross_entropy(s, y) + w * (beta * tckd.mean() + nckd.mean())


@pytest.mark.parametrize("fn", [dkd_objective, dkd_long_way], ids=["package", "long_way"])
def test_a_right_dkd_passes(fn):
    diagnosis = check_kd_loss(fn, convention="dkd")
    assert diagnosis.ok, str(diagnosis)
    assert "dkd_objective" in str(diagnosis)


@pytest.mark.parametrize(
    "fn, words",
    [
        (target_left_in, ["target class is left in the non-target softmax"]),
        (no_warmup, ["no warm-up", "min(progress / warmup, 1)"]),
        (warmup_on_everything, ["scales the cross-entropy too"]),
        (warmup_too_long, ["does not follow min(progress / warmup, 1)", "about 0.5"]),
        (beta_swapped, ["beta weighs TCKD instead of NCKD"]),
        (lambda s, t, y, temperature, beta, progress: kd_loss(s, t, y), ["past the warm-up"]),
    ],
)
def test_each_dkd_bug_is_named(fn, words):
    diagnosis = check_kd_loss(fn, convention="dkd")
    assert not diagnosis.ok
    for word in words:
        assert word in str(diagnosis), str(diagnosis)


def test_an_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="convention must be 'hinton' or 'dkd', got 'DKD'"):
        check_kd_loss(kd_loss, convention="DKD")


# -- the omitted-class experiment's pieces --------------------------------------------------


def test_without_class_drops_it_from_training_only(digits):
    no3 = digits.without_class(3)
    assert (no3.train.labels != 3).all() and len(no3.train) == int((digits.train.labels != 3).sum())
    assert torch.equal(no3.test.labels, digits.test.labels) and (no3.val.labels == 3).any()
    with pytest.raises(ValueError, match=r"cls must be a class index in \[0, 10\), got 10"):
        digits.without_class(10)


def test_the_class_bias_is_chosen_for_accuracy_and_the_smallest_on_ties():
    from kdbook.evaluate import best_class_bias, with_class_bias

    logits = torch.tensor([[2.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    assert best_class_bias(logits, labels, 1, [0.0, 1.5, 5.0]) == 1.5
    assert best_class_bias(logits, torch.tensor([0, 0, 1]), 1, [-1.0, 0.0, 1.0]) == 0.0
    torch.testing.assert_close(with_class_bias(logits, 1, 2.0)[:, 1], torch.tensor([2.0, 3, 5]))
    with pytest.raises(ValueError, match=r"cls must be a class index in \[0, 2\), got 2"):
        with_class_bias(logits, 2, 1.0)


def test_scatter_panels_draws_one_labelled_panel_per_measure():
    import matplotlib

    matplotlib.use("Agg")
    from kdbook.plots import scatter_panels

    frame = pd.DataFrame(
        {"run": ["a", "a", "b", "alone"], "agreement (%)": [90, 91, 95, 80],
         "KL": [0.2, 0.1, 0.05, 0.4], "test accuracy (%)": [88, 89, 87, 85]}
    )  # fmt: skip
    x = {"agreement (%)": "agreement (%)", "KL": "KL (nats)"}
    fig = scatter_panels(
        frame, x=x, y="test accuracy (%)", hue="run", title="fidelity", muted=["alone"]
    )
    assert fig._suptitle.get_text() == "fidelity" and len(fig.axes) == 2
    assert [ax.get_xlabel() for ax in fig.axes] == ["agreement (%)", "KL (nats)"]
    assert all(ax.get_ylabel() == "test accuracy (%)" for ax in fig.axes)
    labels = fig.axes[-1].get_legend_handles_labels()[1]
    assert labels == ["a", "b", "alone"]
