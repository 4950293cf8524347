"""Text for the language-model chapters: an offline corpus as character tokens, and its windows.

``load_text()`` joins the topics of the standard library's ``pydoc_data.topics`` (the help
texts ``help("if")`` prints, about 465,000 characters on Python 3.11) in the order of their
names, cuts it by position into train, validation and test (80 / 10 / 10 % by default: the
end of the text is never seen in training) and encodes each part as a LongTensor of
character ids.

Why characters and not bytes: the corpus has about 100 distinct characters, a few of them
outside ASCII (``'``, ``—``, ``°``), which bytes would cut into two or three tokens each. With
one token a character, the loss per token in bits *is* bits per character, and the
vocabulary (about 100 ids, not 256) keeps the student's embedding and output layer small.
The vocabulary is the training text's characters in sorted order after id 0, the unknown
character (``\\ufffd``), which stands for any character the training text lacks.

Introduced in notebook 15_language_model_kd.

>>> data = load_text()
>>> data.decode(data.encode("def f(x):")), data.vocab_size == len(data.classes)
('def f(x):', True)
>>> x, y = next(windows(data.train, 8, 2, torch.Generator().manual_seed(0)))
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
(torch.Size([2, 8]), True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

UNKNOWN = "\ufffd"  # id 0: a character the training text lacks
PYDOC_TOPICS = "pydoc_topics"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test, by position


@dataclass(frozen=True)
class TextData:
    """A corpus cut into three parts by position, as character ids (LongTensors).

    ``classes`` is the vocabulary (id -> character, id 0 the unknown character), so a
    checkpoint of a model trained on it records the vocabulary as an image model records its
    class names; ``num_classes`` (= ``vocab_size``) is the size of a model's output layer.
    """

    name: str
    classes: tuple[str, ...]
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    digest: str  # sha256 of the whole text: pydoc's topics differ between Python versions

    @property
    def vocab_size(self) -> int:
        return len(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids of ``text`` (a character outside the vocabulary becomes id 0)."""
        return _encode(text, self.classes)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of character ids (id 0 prints as ``\\ufffd``)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.classes[i] for i in ids)

    def split(self, name: str) -> torch.Tensor:
        """The tokens of ``'train'``, ``'val'`` or ``'test'``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


def _encode(text: str, classes: tuple[str, ...]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)


def pydoc_topics_text() -> str:
    """The standard library's help topics joined in the order of their names."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def text_data(
    text: str,
    name: str = "text",
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    min_chars: int = 2,
) -> TextData:
    """Cut ``text`` by position into train / validation / test and encode it by character.

    Args:
        text: the corpus.
        name: what checkpoints and messages call it.
        fractions: the shares of train, validation and test (positive, summing to 1).
        min_chars: the fewest characters each part must have (a window of context ``L``
            needs ``L + 1``).

    Raises:
        ValueError: an empty text, a text whose parts would be shorter than ``min_chars``,
            or fractions that are not three positive shares summing to 1.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r:.40}")
    if not (
        len(fractions) == 3
        and all(isinstance(f, int | float) and f > 0 for f in fractions)
        and abs(sum(fractions) - 1) < 1e-9
    ):
        raise ValueError(f"fractions must be three numbers > 0 summing to 1, got {fractions!r}")
    n = len(text)
    cut1 = int(n * fractions[0])
    cut2 = cut1 + int(n * fractions[1])
    parts = (text[:cut1], text[cut1:cut2], text[cut2:])
    shortest = min(len(p) for p in parts)
    if shortest < min_chars:
        raise ValueError(
            f"text {name!r} is too short: {n} characters cut {fractions} give a part of "
            f"{shortest}, each part needs at least {min_chars} (context + 1)"
        )
    classes = (UNKNOWN, *sorted(set(parts[0]) - {UNKNOWN}))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    train, val, test = (_encode(p, classes) for p in parts)
    return TextData(name, classes, train, val, test, digest)


def load_text(name: str = PYDOC_TOPICS, min_chars: int = 2) -> TextData:
    """A named corpus as :class:`TextData`: ``'pydoc_topics'`` (offline, in every Python)."""
    if name != PYDOC_TOPICS:
        raise ValueError(f"text corpus must be {PYDOC_TOPICS!r}, got {name!r}")
    return text_data(pydoc_topics_text(), PYDOC_TOPICS, min_chars=min_chars)


def check_context(tokens: torch.Tensor, context: int, what: str = "split") -> None:
    """Raise ValueError unless ``tokens`` (a 1-D LongTensor) holds a window of ``context``
    tokens and its next-token targets (``context + 1`` tokens)."""
    if not (isinstance(context, int) and not isinstance(context, bool) and context >= 1):
        raise ValueError(f"context must be an integer >= 1, got {context!r}")
    if tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError(f"{what} must be a 1-D LongTensor of token ids, got {tokens.dtype} "
                         f"of shape {tuple(tokens.shape)}")  # fmt: skip
    if len(tokens) < context + 1:
        raise ValueError(
            f"{what} is too short for context {context}: {len(tokens)} tokens, a window "
            f"and its targets need {context + 1}"
        )


def windows(
    tokens: torch.Tensor, context: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random batches ``(x, y)`` of shape ``[batch_size, context]``: ``y`` is ``x``
    shifted by one token (the next-token targets). Starts are drawn uniformly from
    ``generator`` (seed it: the same seed gives the same batches)."""
    check_context(tokens, context)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    offsets = torch.arange(context + 1)
    while True:
        starts = torch.randint(len(tokens) - context, (batch_size,), generator=generator)
        chunk = tokens[starts[:, None] + offsets]
        yield chunk[:, :-1], chunk[:, 1:]


def window_tensor(
    tokens: torch.Tensor, context: int, max_windows: int | None = None
) -> torch.Tensor:
    """The split cut into consecutive non-overlapping windows of ``context + 1`` tokens
    (a window and its next-token targets), as ``[P, context + 1]``; window ``i`` starts at
    token ``i * context``, so every token is a target once (the tail that does not fill a
    window is dropped). ``max_windows``: only that many, evenly spaced over the split."""
    check_context(tokens, context)
    if max_windows is not None and not (isinstance(max_windows, int) and max_windows >= 1):
        raise ValueError(f"max_windows must be an integer >= 1 or None, got {max_windows!r}")
    count = (len(tokens) - 1) // context
    starts = torch.arange(count) * context
    if max_windows is not None and max_windows < count:
        starts = starts[torch.linspace(0, count - 1, max_windows).round().long()]
    return tokens[starts[:, None] + torch.arange(context + 1)]


def tiled_windows(
    tokens: torch.Tensor, context: int, max_windows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`window_tensor` as inputs and targets ``(x, y)``, each ``[P, context]``:
    evaluation reads every token of the split once."""
    chunk = window_tensor(tokens, context, max_windows)
    return chunk[:, :-1], chunk[:, 1:]
