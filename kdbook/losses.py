"""Distillation losses, each with its formula and its paper.

>>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
>>> round(kd_loss(s, t, y, temperature=4.0, alpha=1.0).item(), 6)  # student == teacher
0.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdbook.data import UNLABELED


def _check(temperature: float, alpha: float | None = None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def _check_shapes(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> None:
    """Raise ValueError naming the shapes unless the logits match and targets fit them."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape (N, C), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if targets is not None and targets.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {tuple(student_logits.shape[:-1])} (one class index per "
            f"row of student_logits {tuple(student_logits.shape)}), got {tuple(targets.shape)}"
        )


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)``: T = 1 is the plain softmax, larger T spreads the mass."""
    _check(temperature)
    return F.softmax(logits / temperature, dim=-1)


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each row's z-score: ``(z - mean(z)) / (std(z) + eps)`` over the classes (Sun et al. 2024).

    Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024, arXiv:2403.01427) applies this to the student's and the teacher's logits
    before the temperature, so that the student matches the teacher's ranking of the
    classes and not the scale of its logits. The standard deviation is the population one
    (ddof 0, as the paper's formula writes it); the authors' code divides by C - 1, which
    is the same as a temperature larger by ``sqrt(C / (C - 1))``.

    >>> standardize_logits(torch.tensor([[1.0, 2.0, 3.0]])).mul(1000).round().tolist()
    [[-1225.0, 0.0, 1225.0]]
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must have at least 2 classes in the last dimension, got shape "
            f"{tuple(logits.shape)}"
        )
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, unbiased=False)
    return (logits - mean) / (std + eps)


def soft_kd_term(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (``batchmean``).

    The ``T^2`` keeps the soft term's gradient on the same scale as the cross-entropy's
    as T changes: the gradient of the KL with respect to the logits shrinks like ``1/T^2``.
    ``standardize``: z-score both sides' logits first (:func:`standardize_logits`).
    """
    _check(temperature)
    _check_shapes(student_logits, teacher_logits)
    if standardize:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss (arXiv:1503.02531), alpha weighting the soft term.

    ``loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``

    with the KL averaged over the batch (``batchmean``). This is the convention of
    sources 1 and 2. Source 3 writes ``a * CE + (1 - a) * KD``: the same loss with
    ``alpha = 1 - a``. Targets equal to ``kdbook.data.UNLABELED`` (-1) have no label:
    they add only the soft term, and the cross-entropy averages over the labelled rest.

    Args:
        student_logits: ``(N, C)`` raw scores of the student.
        teacher_logits: ``(N, C)`` raw scores of the teacher (no gradient needed).
        targets: ``(N,)`` class indices, or UNLABELED.
        temperature: T > 0; 1 leaves the teacher's softmax as it is.
        alpha: weight of the soft term, in [0, 1].
        standardize: logit standardisation (Sun et al., CVPR 2024): the soft term on each
            sample's z-scored logits, ``softmax(Z(t)/T)`` against ``softmax(Z(s)/T)``
            (:func:`standardize_logits`); the cross-entropy stays on the raw logits.

    Returns:
        A scalar tensor.
    """
    _check(temperature, alpha)
    _check_shapes(student_logits, teacher_logits, targets)
    soft = soft_kd_term(student_logits, teacher_logits, temperature, standardize=standardize)
    labelled = targets != UNLABELED
    if labelled.any():
        hard = F.cross_entropy(student_logits[labelled], targets[labelled])
    else:
        hard = student_logits.new_zeros(())
    return alpha * soft + (1 - alpha) * hard


DKD_BETA = 8.0  # Zhao et al.'s weight of NCKD (TCKD's is 1) on CIFAR-100
DKD_WARMUP = 20 / 240  # their linear warm-up: the first 20 of 240 epochs, as progress


def _check_targets(targets: torch.Tensor, num_classes: int, name: str) -> None:
    bad = (targets < 0) | (targets >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"targets must be class indices in [0, {num_classes}) for {name} (it splits the "
            f"classes on each sample's label; unlabelled samples have none), got "
            f"{targets[bad][0].item()}"
        )


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample ``(TCKD, NCKD)`` of decoupled KD (Zhao et al., CVPR 2022), each times ``T^2``.

    With ``p = softmax(z/T)`` and ``y`` the label:

    - TCKD ``= T^2 * KL([p_y^t, 1 - p_y^t] || [p_y^s, 1 - p_y^s])``, the binary "target or
      not" distributions;
    - NCKD ``= T^2 * KL(q^t || q^s)`` with ``q = softmax`` over the C - 1 non-target logits
      only (the target class is removed before the softmax, not after).

    Classic KD is ``TCKD + (1 - p_y^t) * NCKD`` sample by sample: a confident teacher (p_y^t
    near 1) all but switches the non-target part off, which is what DKD undoes.

    Returns:
        Two ``(N,)`` tensors.
    """
    _check(temperature)
    _check_shapes(student_logits, teacher_logits, targets)
    _check_targets(targets, student_logits.shape[-1], "dkd_loss")
    t = temperature
    target = F.one_hot(targets, student_logits.shape[-1]).bool()

    def split(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log [p_y, 1 - p_y] (N, 2) and log q over the non-target classes (N, C - 1)."""
        log_p = F.log_softmax(logits / t, dim=-1)
        log_py = log_p[target]
        log_rest = torch.logsumexp(log_p.masked_fill(target, -math.inf), dim=-1)
        others = (logits / t)[~target].view(len(logits), -1)
        return torch.stack([log_py, log_rest], dim=-1), F.log_softmax(others, dim=-1)

    bin_s, q_s = split(student_logits)
    bin_t, q_t = split(teacher_logits)

    def kl(log_t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)

    return t**2 * kl(bin_t, bin_s), t**2 * kl(q_t, q_s)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    beta: float = DKD_BETA,
) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation",
    CVPR 2022, arXiv:2203.08679): ``TCKD + beta * NCKD``, batchmean, both with ``T^2``.

    ``loss = mean_n [ T^2 KL(b^t || b^s) + beta * T^2 KL(q^t || q^s) ]``

    where ``b = [p_y, 1 - p_y]`` is the binary target/non-target split of ``softmax(z/T)``
    and ``q`` the softmax over the non-target classes alone (:func:`dkd_terms`). The
    paper's defaults are a TCKD weight of 1, beta 8 and T 4. The cross-entropy on the
    labels and the linear warm-up of this loss over the first part of training are not in
    it: :class:`kdbook.distill.DKD` adds them (:func:`dkd_objective`), as the paper does.

    Args:
        student_logits, teacher_logits: ``(N, C)``, C >= 2.
        targets: ``(N,)`` class indices (every sample needs its label).
        temperature: T > 0.
        beta: weight of NCKD, >= 0 (beta = 1 - p_y^t per sample would give back classic KD).

    >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
    >>> dkd_loss(s, t, y).item()
    0.0
    """
    _check_beta(beta)
    tckd, nckd = dkd_terms(student_logits, teacher_logits, targets, temperature)
    return tckd.mean() + beta * nckd.mean()


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")


def dkd_warmup_weight(progress: float, warmup: float = DKD_WARMUP) -> float:
    """DKD's linear warm-up: ``min(progress / warmup, 1)`` (1 throughout when warmup is 0)."""
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction of training in [0, 1), got {warmup!r}")
    return 1.0 if warmup == 0 else min(max(progress, 0.0) / warmup, 1.0)


def dkd_objective(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    beta: float = DKD_BETA,
    progress: float = 1.0,
    *,
    warmup: float = DKD_WARMUP,
) -> torch.Tensor:
    """The loss DKD trains with: ``CE(s, y) + min(progress / warmup, 1) * dkd_loss(...)``.

    ``progress`` is the fraction of training done (0 to 1); the warm-up scales the DKD
    term only, never the cross-entropy. This is the convention
    ``kdbook.doctor.check_kd_loss(fn, convention="dkd")`` checks a user's DKD against.
    """
    weight = dkd_warmup_weight(progress, warmup)
    dkd = dkd_loss(student_logits, teacher_logits, targets, temperature, beta)
    return F.cross_entropy(student_logits, targets) + weight * dkd


# ----------------------------------------------------------------------------------------
# The sources' buggy losses, kept side by side with the right one (SOURCES.md, "Bugs in
# the sources"). They take kd_loss's arguments so that the same probes and the same
# training code run on them; 08_troubleshooting measures what each gets wrong and
# kdbook.doctor.check_kd_loss names the bug. Do not train with them.


def kd_loss_source3(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 3's bug 1: ``log_softmax(teacher / T)`` as ``F.kl_div``'s target, no ``log_target``.

    ``F.kl_div(input, target)`` reads ``target`` as probabilities and computes
    ``target * (log(target) - input)``. Log-probabilities are negative, so ``log(target)``
    is NaN: in current PyTorch (2.x) the printed loss is NaN. The gradient is not: the NaN
    part does not depend on the student, and the rest, ``T^2 * sum(-log p_t * log p_s) / N``,
    has no minimum. It keeps pushing the student's probability of every class but the
    teacher's top one towards 0, so a student following it grows more confident than the
    teacher's softened targets and its KL to the teacher, after a first dip, climbs without
    bound; only the NaN in the logged loss gives it away. (Old PyTorch releases skipped
    non-positive targets: the same line returned a soft term of 0 and the student learned
    from the cross-entropy alone.)
    The fix is
    ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True)`` or a probability
    target ``softmax(t/T)``, as :func:`soft_kd_term` does.

    Everything else is kd_loss's: alpha weights the soft term, ``batchmean``, ``T^2``
    (source 3 itself weighs the cross-entropy by its ``a``; that is bug 6, see
    :func:`kd_loss_alpha_on_ce`).
    """
    _check(temperature, alpha)
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),  # the bug: no log_target=True
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


def kd_loss_source4(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 4's bug 2: ``nn.KLDivLoss()`` with its default ``reduction='mean'`` and no ``T^2``.

    ``'mean'`` divides the summed KL by batch x classes instead of the batch size, so the
    soft term is ``1 / num_classes`` of the KL (PyTorch warns about it on each new call
    site), and without ``T^2`` it shrinks by another ``1 / T^2``: at T = 4 with 10 classes
    the soft term and its gradient are 1/160 of Hinton's, and the cross-entropy drowns
    them. (Source 4 ran T = 1, where only the ``1 / num_classes`` part bites; with its
    2 classes that is a factor 1/2.) Fix: ``reduction='batchmean'`` and ``* T**2``, as
    :func:`soft_kd_term` does.
    """
    _check(temperature, alpha)
    kl = torch.nn.KLDivLoss()(  # the bug: default reduction='mean', and no T^2 below
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
    )
    return alpha * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


def kd_loss_alpha_on_ce(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 3's convention (bug 6): ``alpha * CE + (1 - alpha) * T^2 * KL``.

    Not wrong in itself: it is :func:`kd_loss` with ``1 - alpha``. It becomes a bug when a
    recipe's alpha is fed to code of the other convention (source 4's code and prose
    disagree): alpha = 0.7 then puts 0.3 on the teacher instead of 0.7.
    """
    _check(temperature, alpha)
    return kd_loss(student_logits, teacher_logits, targets, temperature, 1 - alpha)


BUGGY_KD_LOSSES = {
    "source 3: log-probability target without log_target=True (bug 1)": kd_loss_source3,
    "source 4: KLDivLoss() reduction='mean', no T^2 (bug 2)": kd_loss_source4,
    "source 3's convention: alpha on the cross-entropy (bug 6)": kd_loss_alpha_on_ce,
}
"""The buggy variants by what is wrong with them (see each docstring)."""


class FeatureAdapter(torch.nn.Module):
    """Source 2's adapter: a 1x1 convolution and BatchNorm from student to teacher channels.

    Adaptive average pooling then brings the student's map to the teacher's spatial size,
    so that :func:`hint_loss` can compare them. The adapter has weights: it must be built
    once, before the optimizer, and its parameters given to the optimizer with the
    student's (source 2 builds it inside the training loop, bug 9: a fresh random adapter
    every step that never learns).
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = torch.nn.Sequential(
            torch.nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            torch.nn.BatchNorm2d(teacher_channels),
        )

    def forward(self, student_features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.proj(student_features), size)


def hint_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, adapter: FeatureAdapter
) -> torch.Tensor:
    """FitNets' hint loss (Romero et al., arXiv:1412.6550) with source 2's adapter.

    ``loss = mean((pool(adapter(f_s)) - f_t)^2)``: the student's ``(N, Cs, Hs, Ws)`` map,
    mapped to ``(N, Ct, Ht, Wt)``, against the teacher's (no gradient to the teacher).
    """
    if student_features.dim() != 4 or teacher_features.dim() != 4:
        raise ValueError(
            "student_features and teacher_features must be (N, C, H, W) maps, got shapes "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    mapped = adapter(student_features, tuple(teacher_features.shape[-2:]))
    return F.mse_loss(mapped, teacher_features.detach())


# ----------------------------------------------------------------------------------------
# Feature distillation: losses on the models' ``forward_features`` outputs, as modules, so
# that :func:`kdbook.train.fit` can take one as ``feature_loss`` and train its parameters
# (the adapter) with the student's. Each takes ``(student_features, teacher_features)``.


class HintLoss(torch.nn.Module):
    """FitNets' hint loss (Romero et al. 2015, arXiv:1412.6550) with a trained adapter.

    ``loss = mean((pool(BN(conv1x1(f_s))) - f_t)^2)``

    The student's ``(N, Cs, Hs, Ws)`` map goes through a :class:`FeatureAdapter` (1x1
    convolution and BatchNorm, ``Cs -> Ct`` channels), adaptive average pooling brings it to
    the teacher's ``(Ht, Wt)``, and the mean squared error (over batch, channels and
    positions) compares it with the teacher's map, which gets no gradient. The adapter is
    this module's parameter: build the loss once and give it to ``fit(feature_loss=...)``,
    which adds its parameters to the optimizer (source 2's bug 9 rebuilds it every step).

    >>> loss = HintLoss(4, 6)
    >>> loss(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)).shape
    torch.Size([])
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.adapter = FeatureAdapter(student_channels, teacher_channels)

    def forward(
        self, student_features: torch.Tensor, teacher_features: torch.Tensor
    ) -> torch.Tensor:
        return hint_loss(student_features, teacher_features, self.adapter)


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens ``(N, 1 + H*W, D)`` to a feature map ``(N, D, H, W)``: drop the class token.

    A 4-d map passes through unchanged, so the losses below accept either.

    >>> tokens_to_map(torch.zeros(2, 1 + 16, 64)).shape
    torch.Size([2, 64, 4, 4])
    """
    if tokens.dim() == 4:
        return tokens
    side = math.isqrt(tokens.shape[1] - 1) if tokens.dim() == 3 and tokens.shape[1] > 1 else 0
    if tokens.dim() != 3 or side * side != tokens.shape[1] - 1:
        raise ValueError(
            "features must be a (N, C, H, W) map or ViT tokens (N, 1 + H*W, D) with a "
            f"square grid, got shape {tuple(tokens.shape)}"
        )
    patches = tokens[:, 1:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko and Komodakis' spatial attention: ``mean_c |A_c|^p``, shape ``(N, H, W)``.

    ``features`` is a ``(N, C, H, W)`` map or ViT tokens (see :func:`tokens_to_map`).
    """
    return tokens_to_map(features).abs().pow(p).mean(dim=1)


def attention_transfer_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """Attention transfer (Zagoruyko and Komodakis 2017, arXiv:1612.03928).

    ``Q = vec(mean_c |A_c|^p)``, ``loss = mean_n || Q_s / ||Q_s|| - Q_t / ||Q_t|| ||^2``

    Each map is reduced to one attention map (:func:`attention_map`, p = 2 as in the
    paper), the larger map is first resized to the smaller's ``(H, W)`` (bilinear; a
    factor-2 reduction averages 2x2 blocks), each is flattened and L2-normalised, and the
    loss is the squared distance of the two, averaged over the batch (so it lies in [0, 4]).
    No parameters: the student and teacher may have any channel counts. The authors' code
    also averages over the ``H*W`` positions and weighs the term by beta = 1000; this is
    that term times ``H*W``, so a ``feature_weight`` of about ``1000 / (H*W)`` matches them.
    """
    q_s, q_t = attention_map(student_features, p), attention_map(teacher_features, p)
    size = (min(q_s.shape[1], q_t.shape[1]), min(q_s.shape[2], q_t.shape[2]))

    def flat(q: torch.Tensor) -> torch.Tensor:
        if q.shape[1:] != size:
            q = F.interpolate(q[:, None], size=size, mode="bilinear", align_corners=False)
        return F.normalize(q.reshape(len(q), -1), dim=1)

    return (flat(q_s) - flat(q_t.detach())).pow(2).sum(dim=1).mean()


class AttentionTransfer(torch.nn.Module):
    """:func:`attention_transfer_loss` as a module for ``fit(feature_loss=...)``."""

    def __init__(self, p: float = 2.0) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p!r}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(
        self, student_features: torch.Tensor, teacher_features: torch.Tensor
    ) -> torch.Tensor:
        return attention_transfer_loss(student_features, teacher_features, self.p)


class SEBlock(torch.nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    Channel attention: each channel is rescaled by a weight in (0, 1) computed from the
    average of all channels over the map (``reduction`` shrinks the hidden layer).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Conv2d(channels, hidden, 1),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(hidden, channels, 1),
            torch.nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class TokenAlignment(torch.nn.Module):
    """Source 5's ViT-to-CNN feature alignment: 1x1 conv + BN + SE block, then MSE.

    ``loss = mean((pool(SE(BN(conv1x1(f_s)))) + noise - map(z_t))^2)``

    The teacher's ViT tokens ``z_t`` ``(N, 1 + h*w, D)`` lose their class token and become a
    ``(N, D, h, w)`` map (:func:`tokens_to_map`). The student's ``(N, Cs, H, W)`` map is
    mapped to ``D`` channels by a 1x1 convolution and BatchNorm, reweighted per channel by
    an :class:`SEBlock`, and pooled to ``(h, w)``. ``noise_std`` adds Gaussian noise to
    the mapped features in training mode (source 5's "small noise on features").

    Direction: source 5 maps one side to the other with a trained module; here the student
    is mapped to the teacher, as in FitNets, so that the target stays fixed. A trained
    mapping of the teacher's tokens to the student's map would chase a moving target, and
    both sides could shrink together towards a zero loss that teaches nothing.
    """

    def __init__(
        self, student_channels: int, teacher_dim: int, *, reduction: int = 4, noise_std: float = 0.0
    ) -> None:
        super().__init__()
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.proj = torch.nn.Sequential(
            torch.nn.Conv2d(student_channels, teacher_dim, 1, bias=False),
            torch.nn.BatchNorm2d(teacher_dim),
            SEBlock(teacher_dim, reduction),
        )
        self.noise_std = noise_std

    def extra_repr(self) -> str:
        return f"noise_std={self.noise_std}"

    def forward(
        self, student_features: torch.Tensor, teacher_features: torch.Tensor
    ) -> torch.Tensor:
        target = tokens_to_map(teacher_features).detach()
        if student_features.dim() != 4:
            raise ValueError(
                "student_features must be a (N, C, H, W) map, got shape "
                f"{tuple(student_features.shape)}"
            )
        mapped = F.adaptive_avg_pool2d(self.proj(student_features), target.shape[-2:])
        if self.training and self.noise_std > 0:
            mapped = mapped + self.noise_std * torch.randn_like(mapped)
        return F.mse_loss(mapped, target)


def ensemble_logits(
    teacher_logits: list[torch.Tensor],
    temperature: float,
    weights: list[float] | None = None,
) -> torch.Tensor:
    """Several teachers as one: logits whose softmax at T is the weighted mean of theirs.

    ``p = sum_i w_i softmax(t_i / T)`` (weights normalised to sum 1, equal by default), and
    the result is ``T * log p``, so that ``softmax(result / T) = p`` and :func:`kd_loss`
    distils towards the averaged probabilities at T (not towards averaged logits, which
    would let one over-confident teacher dominate). Source 3's multi-teacher variant.
    """
    _check(temperature)
    if not teacher_logits:
        raise ValueError("teacher_logits must hold at least one tensor, got []")
    weights = [1.0] * len(teacher_logits) if weights is None else list(weights)
    if len(weights) != len(teacher_logits) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"weights must be {len(teacher_logits)} numbers >= 0 with a positive sum, "
            f"got {weights!r}"
        )
    # log p = logsumexp_i(log w_i + log_softmax(t_i / T)): no log(0) where a softmax underflows
    log_w = torch.log(torch.tensor(weights, dtype=teacher_logits[0].dtype) / sum(weights))
    log_p = torch.stack(
        [F.log_softmax(t / temperature, dim=-1) for t in teacher_logits]
    ) + log_w.to(teacher_logits[0].device).view(-1, *[1] * teacher_logits[0].dim())
    return temperature * torch.logsumexp(log_p, dim=0)
