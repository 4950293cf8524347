"""Mode covering against mode seeking, in one dimension: a Gaussian mixture (the teacher) fitted
by a single Gaussian (the student) under forward KL, reverse KL and GKD's generalised JSD.

The divergences are integrals on a fine grid (log-densities throughout, the mixture's log
with logsumexp), minimised over the Gaussian's mean and log standard deviation by Nelder-Mead
from several starts (reverse KL has one local minimum per mode). beta follows TRL's
convention (:func:`kdbook.losses.generalized_jsd_loss`): 0 is forward KL ``KL(p || q)``, 1 is
reverse KL ``KL(q || p)``, with p the mixture and q the Gaussian.

Forward KL is minimised by matching moments: the fitted Gaussian has the mixture's mean and
variance and spreads over every mode (mode covering). Reverse KL punishes mass where the
mixture has none, so the Gaussian settles on one mode (mode seeking).

Introduced in notebook 16_on_policy_distillation.

>>> fit = fit_gaussian(BIMODAL, beta=0.0)
>>> round(fit.mean - BIMODAL.mean, 3), round(fit.std**2 - BIMODAL.variance, 2)
(0.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import minimize
from scipy.special import logsumexp

from kdbook.losses.tokens import check_jsd_beta


@dataclass(frozen=True)
class Mixture1D:
    """A mixture of 1-D Gaussians: ``sum_k w_k N(x; mu_k, sigma_k^2)``."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.weights)
        if not (n >= 1 and len(self.means) == n and len(self.stds) == n):
            raise ValueError(
                f"weights, means and stds must have one entry per component, got "
                f"{len(self.weights)}, {len(self.means)} and {len(self.stds)}"
            )
        if any(w <= 0 for w in self.weights) or abs(sum(self.weights) - 1) > 1e-9:
            raise ValueError(f"weights must be > 0 and sum to 1, got {self.weights!r}")
        if any(s <= 0 for s in self.stds):
            raise ValueError(f"stds must be > 0, got {self.stds!r}")

    @property
    def mean(self) -> float:
        return float(np.dot(self.weights, self.means))

    @property
    def variance(self) -> float:
        """``sum_k w_k (sigma_k^2 + mu_k^2) - mean^2``."""
        second = sum(
            w * (s**2 + m**2) for w, m, s in zip(self.weights, self.means, self.stds, strict=True)
        )
        return second - self.mean**2

    def log_density(self, x: np.ndarray) -> np.ndarray:
        parts = [math.log(w) + gaussian_log_density(x, m, s)
                 for w, m, s in zip(self.weights, self.means, self.stds, strict=True)]  # fmt: skip
        return logsumexp(np.stack(parts), axis=0)

    def grid(self, points: int = 4001) -> np.ndarray:
        """Points covering every component to 8 standard deviations."""
        lo = min(m - 8 * s for m, s in zip(self.means, self.stds, strict=True))
        hi = max(m + 8 * s for m, s in zip(self.means, self.stds, strict=True))
        return np.linspace(lo, hi, points)


BIMODAL = Mixture1D(weights=(0.6, 0.4), means=(-2.0, 2.0), stds=(0.6, 0.8))


def gaussian_log_density(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def divergence(log_p: np.ndarray, log_q: np.ndarray, dx: float, beta: float) -> float:
    """GKD's ``JSD_beta`` between densities on a grid (p the teacher, q the student).

    beta 0: ``KL(p || q)``; 1: ``KL(q || p)``; otherwise, with ``m = beta p + (1 - beta) q``,
    ``beta KL(p || m) + (1 - beta) KL(q || m)`` (TRL's convention).
    """
    check_jsd_beta(beta)

    def kl(log_a: np.ndarray, log_b: np.ndarray) -> float:
        return float(np.sum(np.exp(log_a) * (log_a - log_b)) * dx)

    if beta == 0:
        return kl(log_p, log_q)
    if beta == 1:
        return kl(log_q, log_p)
    log_m = np.logaddexp(math.log(beta) + log_p, math.log1p(-beta) + log_q)
    return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


@dataclass(frozen=True)
class GaussianFit:
    """The Gaussian that minimises the divergence at ``beta``, and the divergence it reaches."""

    beta: float
    mean: float
    std: float
    divergence: float


def fit_gaussian(mixture: Mixture1D, beta: float, points: int = 4001) -> GaussianFit:
    """The single Gaussian closest to ``mixture`` under ``JSD_beta`` (0 forward, 1 reverse KL).

    Nelder-Mead over ``(mean, log std)`` from the moment-matched Gaussian and from each
    component; the best of the runs is returned (the global minimum for reverse KL).
    """
    check_jsd_beta(beta)
    x = mixture.grid(points)
    dx = float(x[1] - x[0])
    log_p = mixture.log_density(x)

    def objective(theta: np.ndarray) -> float:
        return divergence(log_p, gaussian_log_density(x, theta[0], math.exp(theta[1])), dx, beta)

    starts = [(mixture.mean, 0.5 * math.log(mixture.variance))]
    starts += [(m, math.log(s)) for m, s in zip(mixture.means, mixture.stds, strict=True)]
    best = min(
        (minimize(objective, np.array(s), method="Nelder-Mead",
                  options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 2000}) for s in starts),
        key=lambda r: r.fun,
    )  # fmt: skip
    return GaussianFit(float(beta), float(best.x[0]), math.exp(best.x[1]), float(best.fun))


def mode_view(mixture: Mixture1D, beta: float) -> dict:
    """What the beta slider draws: the grid, the mixture's density and the fitted Gaussian's,
    with the fits of forward and reverse KL for reference."""
    x = mixture.grid(801)
    fits = {"forward KL": fit_gaussian(mixture, 0.0), "reverse KL": fit_gaussian(mixture, 1.0)}
    fit = fit_gaussian(mixture, beta)
    return {
        "beta": float(beta),
        "x": x,
        "teacher": np.exp(mixture.log_density(x)),
        "fit": fit,
        "student": np.exp(gaussian_log_density(x, fit.mean, fit.std)),
        "references": {
            name: np.exp(gaussian_log_density(x, f.mean, f.std)) for name, f in fits.items()
        },
        "reference_fits": fits,
    }


def describe_mode_view(view: dict) -> str:
    fit = view["fit"]
    return (
        f"beta = {view['beta']:g}: the Gaussian has mean {fit.mean:.3f} and standard deviation "
        f"{fit.std:.3f}; JSD_beta = {fit.divergence:.4f} nats"
    )


def draw_mode_view(view: dict) -> Figure:
    """The mixture, the fit at beta, and the forward- and reverse-KL fits dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.fill_between(
        view["x"], view["teacher"], alpha=0.3, color="grey", label="teacher p (mixture)"
    )
    for (name, density), style in zip(view["references"].items(), (":", "--"), strict=True):
        ax.plot(view["x"], density, style, color="black", lw=1, label=f"{name} fit")
    fit = view["fit"]
    label = f"JSD(beta={view['beta']:g}) fit: mean {fit.mean:.2f}, std {fit.std:.2f}"
    ax.plot(view["x"], view["student"], color="tab:red", lw=2, label=label)
    ax.set(xlabel="x", ylabel="density",
           title="One Gaussian fitted to a two-mode teacher under JSD(beta)")  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
