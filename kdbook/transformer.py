"""A small causal transformer over character ids, and sampling text from it.

:class:`CharTransformer` is GPT's shape at toy size: token and position embeddings, pre-norm
blocks of causal self-attention and an MLP, a final LayerNorm and a linear head to the
vocabulary. ``model(tokens[B, L]) -> logits[B, L, V]``; position ``t``'s logits see tokens
``0..t`` only. As the image models, it splits its forward pass into ``forward_features``
(the last hidden states ``[B, L, D]``) and ``forward_head``. The attention is written with
plain matrix products and a mask (not ``scaled_dot_product_attention``) so that
``torch.func.vmap`` runs several of them stacked (:mod:`kdbook.stack`'s way of training
seeds side by side).

The registry (:func:`kdbook.models.build_model`) builds the book's sizes by name:
``build_model("char_small", data, context=64)``.

Introduced in notebook 15_language_model_kd.

>>> model = CharTransformer(vocab_size=10, context=8, width=16, layers=1, heads=2)
>>> model(torch.zeros(3, 5, dtype=torch.long)).shape
torch.Size([3, 5, 10])
>>> sample(model, torch.tensor([1, 2]), 4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([1, 6])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Cache = tuple[torch.Tensor, torch.Tensor]  # one block's keys and values [B, heads, n, D / heads]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` attends to positions ``<= t``."""

    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        mask = torch.ones(context, context, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)  # rebuilt, never saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cached(x, None)[0]

    def forward_cached(self, x: torch.Tensor, past: Cache | None) -> tuple[torch.Tensor, Cache]:
        """``x`` [B, n, D] continuing the positions whose keys and values ``past`` holds:
        the output and the keys and values of every position so far (for sampling)."""
        b, n, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        # [B, n, D] -> [B, heads, n, D / heads]
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        total = k.shape[2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~self.mask[total - n : total, :total], float("-inf"))
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, width)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, context: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, context)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def forward_cached(self, x: torch.Tensor, past: Cache | None) -> tuple[torch.Tensor, Cache]:
        attended, present = self.attn.forward_cached(self.ln1(x), past)
        x = x + attended
        return x + self.mlp(self.ln2(x)), present


class CharTransformer(nn.Module):
    """A causal transformer language model over ``vocab_size`` token ids.

    Args:
        vocab_size: the number of token ids (the output layer's size).
        context: the longest sequence it reads (its position embeddings); a longer input
            raises ValueError.
        width: the hidden size ``D``; ``heads`` must divide it.
        layers: the number of blocks.
        heads: attention heads per block.
    """

    def __init__(self, vocab_size: int, context: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        for name, value, least in (
            ("vocab_size", vocab_size, 2),
            ("context", context, 1),
            ("width", width, 1),
            ("layers", layers, 1),
            ("heads", heads, 1),
        ):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if width % heads:
            raise ValueError(f"heads must divide width={width}, got heads={heads}")
        self.vocab_size, self.context = vocab_size, context
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads, context) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        self.apply(_init)

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last hidden states ``[B, L, D]`` (after the final LayerNorm)."""
        length = tokens.shape[-1]
        if length > self.context:
            raise ValueError(
                f"input of {length} tokens is longer than the model's context {self.context}: "
                f"give at most {self.context} (crop the prompt to its last {self.context})"
            )
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        return self.ln_f(self.blocks(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward_cached(
        self, tokens: torch.Tensor, past: list[Cache] | None = None
    ) -> tuple[torch.Tensor, list[Cache]]:
        """Logits of ``tokens`` [B, n] that continue the sequence whose keys and values
        ``past`` holds (one per block; None: a new sequence), and the keys and values so far:
        :func:`sample` reads each new token once instead of re-reading the whole context."""
        start = 0 if past is None else past[0][0].shape[2]
        if start + tokens.shape[-1] > self.context:
            raise ValueError(
                f"input of {start + tokens.shape[-1]} tokens is longer than the model's "
                f"context {self.context}"
            )
        positions = torch.arange(start, start + tokens.shape[-1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block.forward_cached(x, None if past is None else past[i])
            presents.append(present)
        return self.head(self.ln_f(x)), presents

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(tokens))


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt: torch.Tensor,
    n: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``prompt`` followed by ``n`` tokens drawn one at a time from ``model``'s next-token
    distribution at ``temperature`` (0: the most likely token each time).

    Args:
        model: a causal language model, ``model(tokens[B, L]) -> logits[B, L, V]``, with a
            ``context`` attribute (the model reads the last ``context`` tokens).
        prompt: ``[L]`` or ``[B, L]`` token ids, ``L >= 1``.
        n: how many tokens to add (>= 0).
        temperature: >= 0.
        generator: the random source of the draws (on the model's device); seed it for the
            same text every time.

    Returns:
        ``[B, L + n]`` token ids (``B`` = 1 for a 1-D prompt), on the model's device. The
        model is left in the mode it was in.
    """
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if not (isinstance(temperature, int | float) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if prompt.dim() not in (1, 2) or prompt.shape[-1] < 1:
        raise ValueError(f"prompt must be [L] or [B, L] token ids with L >= 1, got shape "
                         f"{tuple(prompt.shape)}")  # fmt: skip
    context = model.context
    device = next(model.parameters()).device
    tokens = (prompt[None] if prompt.dim() == 1 else prompt).to(device)
    was_training = model.training
    model.eval()
    cached = hasattr(model, "forward_cached")
    past = None
    try:
        for _ in range(n):
            if cached and past is not None and tokens.shape[1] <= context:
                logits, past = model.forward_cached(tokens[:, -1:], past)  # the new token only
            elif cached and tokens.shape[1] < context:
                logits, past = model.forward_cached(tokens)
            else:  # past the context: read the last ``context`` tokens again each time
                logits = model(tokens[:, -context:])
            logits = logits[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)
    finally:
        model.train(was_training)
    return tokens
