"""Feature and attention distillation: hints (FitNets), attention transfer, token alignment,
and the :class:`FeatureKD` term that trains them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbook.data import Dataset
from kdbook.losses.base import Outputs, Schedulable, Term, register_term, setting
from kdbook.schedules import value_at


def _pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling of a ``(N, C, H, W)`` map to ``size``; the map itself when it
    has that size already (the same numbers: a CPU's pooling kernel costs more than the
    adapter's convolution there, e.g. 9 ms for a batch of 64 maps of 128 x 4 x 4)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


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
        return _pool_to(self.proj(student_features), size)


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
        mapped = _pool_to(self.proj(student_features), tuple(target.shape[-2:]))
        if self.training and self.noise_std > 0:
            mapped = mapped + self.noise_std * torch.randn_like(mapped)
        return F.mse_loss(mapped, target)


@register_term("feature_kd")
class FeatureKD(Term):
    """``weight * loss(student_features, teacher_features)``, e.g. :class:`HintLoss`."""

    needs_features = True

    def __init__(self, loss: nn.Module, weight: Schedulable = 1.0) -> None:
        super().__init__()
        self.loss, self.weight = loss, weight

    def settings(self) -> dict[str, Any]:
        return {"feature_loss": setting(self.loss), "feature_weight": setting(self.weight)}

    def scheduled(self) -> dict[str, Schedulable]:
        return {"feature_weight": self.weight}

    def forward(self, out: Outputs, progress: float):
        value = self.loss(out.features, out.teacher_features)
        return value_at(self.weight, progress) * value.float(), {"feature_loss": value}

    @torch.no_grad()
    def check(self, model: nn.Module, teachers: list[nn.Module], data: Dataset, device) -> None:
        """One eval-mode pass on two images: the student's and teacher's features fit."""
        for role, net in (("model", model), ("teacher", teachers[0])):
            if not callable(getattr(net, "forward_features", None)):
                raise ValueError(
                    f"feature_loss needs {role}.forward_features and forward_head "
                    "(kdbook.models' split); this one has none"
                )
        self.loss.to(device)
        x = data.normalize(data.train.images[:2].to(device))
        modes = [m.training for m in (model, self.loss)]
        model.eval()
        self.loss.eval()
        try:
            fs, ft = model.forward_features(x), teachers[0].forward_features(x)
            try:
                self.loss(fs, ft)
            except (RuntimeError, ValueError) as e:
                raise ValueError(
                    f"feature_loss {type(self.loss).__name__} cannot compare the student's "
                    f"features {tuple(fs.shape[1:])} with the teacher's {tuple(ft.shape[1:])}: "
                    f"{e}"
                ) from None
        finally:
            model.train(modes[0])
            self.loss.train(modes[1])
