"""Mode covering and mode seeking: the 1-D fits, and the language-model sliders (dummy comm)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kdbook import lm_widgets  # noqa: E402
from kdbook.losses import generalized_jsd_loss  # noqa: E402
from kdbook.mode_seeking import (  # noqa: E402
    BIMODAL,
    Mixture1D,
    divergence,
    fit_gaussian,
    gaussian_log_density,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    "mixture",
    [BIMODAL, Mixture1D((0.2, 0.5, 0.3), (-3.0, 0.0, 4.0), (0.5, 1.0, 0.7))],
    ids=["two", "three"],
)
def test_forward_kl_matches_the_mixture_mean_and_variance(mixture):
    fit = fit_gaussian(mixture, 0.0)
    assert fit.mean == pytest.approx(mixture.mean, abs=1e-3)
    assert fit.std**2 == pytest.approx(mixture.variance, rel=1e-3)


def test_reverse_kl_seeks_the_heavier_mode():
    fit = fit_gaussian(BIMODAL, 1.0)
    heavy = int(np.argmax(BIMODAL.weights))
    assert fit.mean == pytest.approx(BIMODAL.means[heavy], abs=0.05)
    assert fit.std == pytest.approx(BIMODAL.stds[heavy], rel=0.05)
    # reverse KL of a Gaussian sitting on one well-separated mode is about -log(weight)
    assert fit.divergence == pytest.approx(-math.log(BIMODAL.weights[heavy]), rel=0.05)


def test_jsd_moves_from_covering_to_seeking_as_beta_grows():
    fits = {b: fit_gaussian(BIMODAL, b) for b in (0.0, 0.5, 0.9, 1.0)}
    assert fits[0.0].std > 2 * fits[1.0].std
    # near the reverse-KL end the JSD already sits on the heavier mode (at -2), and at
    # beta = 0.5 it still spreads over both (the switch is abrupt, not gradual)
    assert fits[0.9].mean < -1.5 and fits[0.9].std < fits[0.0].std / 2
    assert fits[0.5].std > 2 * fits[1.0].std


def test_grid_divergence_is_the_package_jsd_on_a_fine_grid():
    """The quadrature equals kdbook.losses.generalized_jsd_loss on the grid's normalised
    weights (one 'vocabulary' of grid cells), to the grid's precision."""
    x = BIMODAL.grid(4001)
    dx = float(x[1] - x[0])
    log_p, log_q = BIMODAL.log_density(x), gaussian_log_density(x, 0.5, 1.5)
    for beta in (0.0, 0.3, 1.0):
        grid_value = divergence(log_p, log_q, dx, beta)
        s = torch.tensor(log_q + math.log(dx))[None]
        t = torch.tensor(log_p + math.log(dx))[None]
        package = generalized_jsd_loss(s, t, None, beta).item()
        assert grid_value == pytest.approx(package, rel=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fit_gaussian(BIMODAL, 1.5), "beta must be"),
        (lambda: Mixture1D((0.5, 0.6), (0.0, 1.0), (1.0, 1.0)), "sum to 1"),
        (lambda: Mixture1D((1.0,), (0.0, 1.0), (1.0,)), "one entry per component"),
        (lambda: Mixture1D((1.0,), (0.0,), (0.0,)), "stds must be > 0"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_next_token_view_ends_and_push():
    g = torch.Generator().manual_seed(0)
    teacher, student = 3 * torch.randn(20, generator=g), torch.randn(20, generator=g)
    fwd = lm_widgets.next_token_view(teacher, student, 2.0, 0.0, top=5)
    rev = lm_widgets.next_token_view(teacher, student, 2.0, 1.0, top=5)
    assert fwd["divergence"] == pytest.approx(fwd["forward_kl"], rel=1e-6)
    assert rev["divergence"] == pytest.approx(rev["reverse_kl"], rel=1e-6)
    assert len(fwd["tokens"]) == 5
    # forward KL's push on the student's logits is (p_t - p_s) / T
    expected = (fwd["teacher"] - fwd["student"]) / 2.0
    torch.testing.assert_close(fwd["push"], expected)
    torch.testing.assert_close(fwd["mixture"], fwd["student"])
    with pytest.raises(ValueError, match="two \\[V\\] vectors"):
        lm_widgets.next_token_view(teacher, student[:5], 1.0, 0.5)


def test_sliders_redraw_with_the_new_values():
    box = lm_widgets.mode_explorer(betas=(0.0, 0.5, 1.0), beta=0.0)
    assert box.view["fit"].beta == 0.0
    box.controls["beta"].value = 1.0
    assert box.view["fit"].beta == 1.0 and len(box.redraw_seconds) == 2
    g = torch.Generator().manual_seed(1)
    labels = [chr(97 + i) for i in range(20)]
    teacher = 3 * torch.randn(20, generator=g)
    box = lm_widgets.next_token_explorer(teacher, labels, torch.randn(20, generator=g))
    box.controls["temperature"].value = 2.0
    box.controls["beta"].value = 1.0
    assert box.view["temperature"] == 2.0 and box.view["beta"] == 1.0
    print(f"redraws (s): {[round(s, 3) for s in box.redraw_seconds]}")
    assert plt.get_fignums() == []
