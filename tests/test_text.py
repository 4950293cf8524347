"""The offline corpus as character tokens: the split, the vocabulary, the windows, bad input."""

from __future__ import annotations

import pytest
import torch

from kdbook.text import (
    PYDOC_TOPICS,
    UNKNOWN,
    check_context,
    load_text,
    pydoc_topics_text,
    text_data,
    tiled_windows,
    window_tensor,
    windows,
)


@pytest.fixture(scope="module")
def corpus():
    return load_text()


def test_pydoc_topics_split_by_position_80_10_10(corpus):
    text = pydoc_topics_text()
    n = len(text)
    assert len(corpus.train) == int(0.8 * n)
    assert len(corpus.val) == int(0.1 * n)
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == n
    # by position: the parts are the text's beginning, middle and end, in order
    assert corpus.decode(corpus.train[:50]) == text[:50]
    assert corpus.decode(corpus.test[-50:]) == text[-50:]
    assert corpus.decode(corpus.val[:20]) == text[len(corpus.train) : len(corpus.train) + 20]
    assert n > 100_000 and corpus.name == PYDOC_TOPICS


def test_the_split_and_vocabulary_are_the_same_every_time(corpus):
    again = load_text()
    for name in ("train", "val", "test"):
        assert torch.equal(corpus.split(name), again.split(name))
        assert corpus.split(name).dtype == torch.long
    assert corpus.classes == again.classes and corpus.digest == again.digest


def test_vocabulary_is_the_training_texts_characters_sorted_after_the_unknown(corpus):
    assert corpus.classes[0] == UNKNOWN
    assert list(corpus.classes[1:]) == sorted(set(corpus.decode(corpus.train)))
    assert corpus.vocab_size == corpus.num_classes == len(corpus.classes)


def test_a_character_the_training_text_lacks_becomes_the_unknown_id():
    data = text_data("abcabcabca" + "xyzxy" + "abcab", "t", fractions=(0.5, 0.25, 0.25))
    assert "x" not in data.classes
    assert data.encode("ax")[1].item() == 0
    assert data.decode(data.encode("ax")) == "a" + UNKNOWN


def test_windows_are_inputs_and_next_token_targets_and_seeded(corpus):
    a = windows(corpus.train, 16, 4, torch.Generator().manual_seed(3))
    b = windows(corpus.train, 16, 4, torch.Generator().manual_seed(3))
    (x, y), (x2, y2) = next(a), next(b)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_tiled_windows_read_every_token_once():
    tokens = torch.arange(1, 42)
    w = window_tensor(tokens, 10)
    assert w.shape == (4, 11)
    assert torch.equal(w[:, 0], torch.tensor([1, 11, 21, 31]))
    x, y = tiled_windows(tokens, 10)
    assert torch.equal(y.flatten(), torch.arange(2, 42))
    assert window_tensor(tokens, 10, max_windows=2).shape == (2, 11)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: text_data(""), "text must be a non-empty string"),
        (lambda: text_data("abc", min_chars=2), "too short"),
        (lambda: text_data("abcdefghij" * 10, fractions=(0.5, 0.5, 0.0)), "fractions must be"),
        (lambda: load_text("shakespeare"), "text corpus must be 'pydoc_topics'"),
        (lambda: check_context(torch.arange(10), 10), "too short for context 10"),
        (lambda: check_context(torch.arange(10), 0), "context must be an integer >= 1"),
        (lambda: check_context(torch.zeros(3, 3).long(), 1), "1-D LongTensor"),
        (lambda: next(windows(torch.arange(100), 8, 0, torch.Generator())), "batch_size"),
        (lambda: window_tensor(torch.arange(100), 8, max_windows=0), "max_windows"),
    ],
)
def test_bad_input_is_named_in_one_line(call, message):
    with pytest.raises(ValueError, match=message):
        call()
