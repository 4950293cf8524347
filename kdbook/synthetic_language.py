"""A small synthetic language whose distribution is known exactly, and exact and Monte Carlo
divergences between causal models over all of its sequences.

The language is a random hidden Markov model: ``hidden`` states, ``vocab_size`` tokens,
sequences of a fixed ``length``, every probability drawn from a seed (Dirichlet draws with a
small concentration, so that a few continuations dominate each state and the distribution has
several modes). With 4 tokens and length 6 there are 4^6 = 4,096 sequences: every divergence
between two models is a sum over all of them, not an estimate.

Models read a beginning-of-sequence token first: the model vocabulary is ``vocab_size + 1``
(id ``vocab_size`` is BOS), ``model(tokens[B, L]) -> logits[B, L, vocab_size + 1]`` with
``tokens[:, 0] = BOS``, and only the real tokens' logits are ever read (:func:`next_token_logits`
renormalises over them), so every causal model, the language itself included, is a proper
distribution over the ``vocab_size ** length`` sequences.

Introduced in notebook 16_on_policy_distillation.

>>> lang = make_language(seed=0)
>>> seqs = all_sequences(lang.vocab_size, lang.length)
>>> round(lang.log_prob(seqs).exp().sum().item(), 6)
1.0
>>> exact_kl(lang, lang, lang.vocab_size, lang.length)
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdbook.train.on_policy import SequenceTask

MAX_SEQUENCES = 200_000  # the most sequences exact sums enumerate
NO_MASS = -1e4  # the BOS logit of the language itself: exp underflows to exactly 0


def _check_int(name: str, value: object, least: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


class HiddenMarkovLanguage(nn.Module):
    """A hidden Markov model over sequences of ``length`` tokens, usable as a causal model.

    ``initial[h]``, ``transition[h, h']`` and ``emission[h, v]`` are probabilities (float64).
    ``forward(tokens)`` returns the exact next-token log-probabilities, BOS first, like a
    trained model's logits; :meth:`log_prob` the exact log-probability of whole sequences;
    :meth:`sample` draws sequences.
    """

    def __init__(
        self,
        initial: torch.Tensor,
        transition: torch.Tensor,
        emission: torch.Tensor,
        length: int,
    ) -> None:
        super().__init__()
        _check_int("length", length, 1)
        self.register_buffer("initial", initial.double())
        self.register_buffer("transition", transition.double())
        self.register_buffer("emission", emission.double())
        self.length = length
        self.vocab_size = emission.shape[1]
        self.bos = self.vocab_size
        self.context = length

    @property
    def hidden(self) -> int:
        return self.initial.shape[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_{l+1} | x_1..x_l)`` as logits ``[B, L, vocab_size + 1]``.

        ``tokens[:, 0]`` is BOS, ``tokens[:, 1:]`` the sequence so far. The BOS column is
        ``NO_MASS`` (a probability of exactly 0 after a softmax). float64: cast with
        ``.float()`` before mixing with a float32 model's logits.
        """
        b, length = tokens.shape
        belief = self.initial.expand(b, -1)  # p(h_1 | nothing seen)
        out = []
        for pos in range(length):
            if pos > 0:  # condition on the token just seen, then step the hidden state
                seen = self.emission[:, tokens[:, pos]].T * belief
                belief = seen / seen.sum(-1, keepdim=True)
                belief = belief @ self.transition
            out.append((belief @ self.emission).log())
        logits = torch.stack(out, dim=1)
        bos = torch.full((b, length, 1), NO_MASS, dtype=logits.dtype, device=logits.device)
        return torch.cat([logits, bos], dim=-1)

    def log_prob(self, sequences: torch.Tensor) -> torch.Tensor:
        """The exact log-probability ``[N]`` (float64) of each sequence ``[N, length]``."""
        check_sequences(sequences, self.vocab_size, self.length)
        sequences = sequences.to(self.initial.device)
        alpha = self.initial * self.emission[:, sequences[:, 0]].T  # forward algorithm
        log_scale = torch.zeros(len(sequences), dtype=torch.float64, device=sequences.device)
        for pos in range(1, self.length):
            alpha = (alpha @ self.transition) * self.emission[:, sequences[:, pos]].T
            total = alpha.sum(-1, keepdim=True)
            log_scale += total.squeeze(-1).log()
            alpha = alpha / total
        return (log_scale + alpha.sum(-1).log()).cpu()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` sequences ``[n, length]`` drawn from the language (ancestral sampling)."""
        _check_int("n", n, 1)
        initial, transition, emission = (
            b.cpu() for b in (self.initial, self.transition, self.emission)
        )
        h = torch.multinomial(initial.expand(n, -1), 1, generator=generator).squeeze(1)
        tokens = []
        for pos in range(self.length):
            if pos > 0:
                h = torch.multinomial(transition[h], 1, generator=generator).squeeze(1)
            tokens.append(torch.multinomial(emission[h], 1, generator=generator).squeeze(1))
        return torch.stack(tokens, dim=1)  # on the CPU, as the generator


def make_language(
    seed: int = 0,
    vocab_size: int = 4,
    length: int = 6,
    hidden: int = 3,
    concentration: float = 0.3,
) -> HiddenMarkovLanguage:
    """A random hidden Markov language, the same for the same arguments.

    Args:
        seed: draws every probability.
        vocab_size: real tokens (models add BOS: ``vocab_size + 1`` ids).
        length: tokens per sequence; ``vocab_size ** length`` sequences in all (at most
            ``MAX_SEQUENCES``, so that exact sums stay cheap).
        hidden: hidden states.
        concentration: of the Dirichlet draws, > 0; small values make peaked rows (few
            likely continuations: a distribution with distinct modes).
    """
    _check_int("seed", seed, 0)
    _check_int("vocab_size", vocab_size, 2)
    _check_int("length", length, 1)
    _check_int("hidden", hidden, 1)
    if not (isinstance(concentration, int | float) and concentration > 0):
        raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
    if vocab_size**length > MAX_SEQUENCES:
        raise ValueError(
            f"vocab_size ** length must be at most {MAX_SEQUENCES} (every sequence is summed "
            f"over), got {vocab_size}**{length} = {vocab_size**length}"
        )
    rng = np.random.default_rng(seed)

    def dirichlet(rows: int, cols: int) -> torch.Tensor:
        return torch.from_numpy(rng.dirichlet([concentration] * cols, size=rows))

    initial = dirichlet(1, hidden)[0]
    transition = dirichlet(hidden, hidden)
    emission = dirichlet(hidden, vocab_size)
    # keep every sequence possible (exact KLs stay finite): a floor of 1e-3 on each entry
    floor = 1e-3
    initial = (initial + floor) / (1 + floor * hidden)
    transition = (transition + floor) / (1 + floor * hidden)
    emission = (emission + floor) / (1 + floor * vocab_size)
    return HiddenMarkovLanguage(initial, transition, emission, length)


def check_sequences(sequences: torch.Tensor, vocab_size: int, length: int) -> None:
    """Raise ValueError unless ``sequences`` is ``[N, length]`` token ids below vocab_size."""
    if sequences.dim() != 2 or sequences.shape[1] != length or sequences.dtype != torch.long:
        raise ValueError(
            f"sequences must be a LongTensor [N, {length}], got {sequences.dtype} of shape "
            f"{tuple(sequences.shape)}"
        )
    if len(sequences) and not (0 <= int(sequences.min()) and int(sequences.max()) < vocab_size):
        raise ValueError(f"sequences must hold token ids in [0, {vocab_size}) (BOS excluded)")


def all_sequences(vocab_size: int, length: int) -> torch.Tensor:
    """Every sequence ``[vocab_size ** length, length]``, in lexicographic order."""
    _check_int("vocab_size", vocab_size, 2)
    _check_int("length", length, 1)
    if vocab_size**length > MAX_SEQUENCES:
        raise ValueError(
            f"vocab_size ** length must be at most {MAX_SEQUENCES}, got {vocab_size**length}"
        )
    grids = torch.meshgrid(*[torch.arange(vocab_size)] * length, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def with_bos(sequences: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A model's input for ``sequences``: BOS (id ``vocab_size``), then all but the last token."""
    bos = torch.full((len(sequences), 1), vocab_size, dtype=torch.long, device=sequences.device)
    return torch.cat([bos, sequences[:, :-1]], dim=1)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or, for the language, its buffers) are."""
    return next(iter([*model.parameters(), *model.buffers()])).device


def next_token_logits(model: nn.Module, sequences: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[N, L, vocab_size]``: position l's logits over the real tokens for token l of each
    sequence (BOS's logit dropped, so a softmax renormalises over the real tokens), on the
    model's device (the sequences are moved there)."""
    sequences = sequences.to(model_device(model))
    return model(with_bos(sequences, vocab_size))[..., :vocab_size]


def sequence_log_probs(
    model: nn.Module, sequences: torch.Tensor, vocab_size: int, batch_size: int = 4096
) -> torch.Tensor:
    """``log p_model(x)`` ``[N]`` (float64) of each sequence, summed over its tokens."""
    out = []
    for chunk in sequences.split(batch_size):
        logits = next_token_logits(model, chunk, vocab_size).double().cpu()
        log_p = F.log_softmax(logits, dim=-1).gather(-1, chunk.cpu()[..., None]).squeeze(-1)
        out.append(log_p.sum(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def sample_sequences(
    model: nn.Module,
    n: int,
    vocab_size: int,
    length: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``n`` sequences ``[n, length]`` drawn token by token from ``model`` over the real tokens,
    at ``temperature`` (> 0). The model is left in the mode it was in."""
    _check_int("n", n, 1)
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(model, HiddenMarkovLanguage) and temperature == 1:
        return model.sample(n, generator).to(model_device(model))
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        tokens = torch.full((n, 1), vocab_size, dtype=torch.long, device=device)
        for _ in range(length):
            logits = model(tokens)[:, -1, :vocab_size].double().cpu() / temperature
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)  # CPU draws
            tokens = torch.cat([tokens, nxt.to(device)], dim=1)
    finally:
        model.train(was_training)
    return tokens[:, 1:]


def language_task(vocab_size: int, length: int) -> SequenceTask:
    """The synthetic language's :class:`kdbook.train.SequenceTask` for
    :func:`kdbook.train.fit_on_policy`: BOS-shifted logits over the real tokens, and sampling."""
    return SequenceTask(
        logits=lambda model, seqs: next_token_logits(model, seqs, vocab_size),
        sample=lambda model, n, g, t: sample_sequences(model, n, vocab_size, length, g, t),
    )


@torch.no_grad()
def exact_kl(p: nn.Module, q: nn.Module, vocab_size: int, length: int) -> float:
    """``KL(p || q) = sum_x p(x) (log p(x) - log q(x))`` over every sequence (nats).

    ``p`` and ``q``: causal models (:func:`next_token_logits`'s convention) or the language.
    """
    seqs = all_sequences(vocab_size, length)
    log_p = sequence_log_probs(p, seqs, vocab_size)
    log_q = sequence_log_probs(q, seqs, vocab_size)
    return max(float((log_p.exp() * (log_p - log_q)).sum()), 0.0)


@torch.no_grad()
def exact_cross_entropy(p: nn.Module, q: nn.Module, vocab_size: int, length: int) -> float:
    """``-sum_x p(x) log q(x)``: ``q``'s mean negative log-likelihood of ``p``'s sequences.

    ``exact_cross_entropy(p, p)`` is p's entropy; with p a student and q its teacher, it says
    how likely the teacher finds what the student writes (exposure bias).
    """
    seqs = all_sequences(vocab_size, length)
    log_p = sequence_log_probs(p, seqs, vocab_size)
    log_q = sequence_log_probs(q, seqs, vocab_size)
    return float(-(log_p.exp() * log_q).sum())


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean and its standard error (``std / sqrt(n)``)."""

    mean: float
    stderr: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f} (n = {self.n})"


def _estimate(values: torch.Tensor) -> Estimate:
    n = len(values)
    std = float(values.std()) if n > 1 else math.inf
    return Estimate(float(values.mean()), std / math.sqrt(n), n)


@torch.no_grad()
def monte_carlo_kl(
    p: nn.Module, q: nn.Module, vocab_size: int, length: int, n: int, generator: torch.Generator
) -> Estimate:
    """``KL(p || q)`` estimated from ``n`` samples of ``p``: the mean of ``log p(x) - log q(x)``."""
    seqs = sample_sequences(p, n, vocab_size, length, generator)
    diff = sequence_log_probs(p, seqs, vocab_size) - sequence_log_probs(q, seqs, vocab_size)
    return _estimate(diff)


@torch.no_grad()
def monte_carlo_cross_entropy(
    p: nn.Module, q: nn.Module, vocab_size: int, length: int, n: int, generator: torch.Generator
) -> Estimate:
    """``-E_{x ~ p} log q(x)`` from ``n`` samples of ``p`` (see :func:`exact_cross_entropy`)."""
    seqs = sample_sequences(p, n, vocab_size, length, generator)
    return _estimate(-sequence_log_probs(q, seqs, vocab_size))
