"""fit_on_policy: TRL's knobs (lmbda, beta, seq_kd, temperature), one step against a step
written by hand, the student alone, a diverged run named, bad input named."""

from __future__ import annotations

import pytest
import torch

from kdbook.losses import generalized_jsd_loss
from kdbook.synthetic_language import exact_kl, language_task, make_language
from kdbook.train import SequenceTask, fit_on_policy
from kdbook.transformer import CharTransformer

pytestmark = pytest.mark.usefixtures("single_thread")
V, L = 4, 5


def tiny(seed: int, width: int = 8) -> CharTransformer:
    torch.manual_seed(seed)
    return CharTransformer(V + 1, L, width, 1, 1)


@pytest.fixture(scope="module")
def lang():
    return make_language(seed=2, vocab_size=V, length=L)


@pytest.fixture(scope="module")
def data(lang):
    return lang.sample(256, torch.Generator().manual_seed(0))


class Recording:
    """The language task, recording which model each sample call asked."""

    def __init__(self) -> None:
        self.inner = language_task(V, L)
        self.asked: list[int] = []
        self.task = SequenceTask(self.inner.logits, self.sample)

    def sample(self, model, n, g, t):
        self.asked.append(id(model))
        return self.inner.sample(model, n, g, t)


@pytest.mark.parametrize("lmbda, expected", [(0.0, 0.0), (1.0, 1.0)])
def test_lmbda_is_the_fraction_of_on_policy_batches(lang, data, lmbda, expected):
    rec, student = Recording(), tiny(0)
    history = fit_on_policy(student, rec.task, data, teacher=lang, lmbda=lmbda, steps=6,
                            batch_size=8, eval_every=3, progress=False)  # fmt: skip
    assert [r["on_policy"] for r in history.epochs] == [expected, expected]
    assert rec.asked == [id(student)] * int(6 * expected)


def test_half_the_batches_on_policy_and_seq_kd_asks_the_teacher(lang, data):
    rec, student = Recording(), tiny(0)
    history = fit_on_policy(student, rec.task, data, teacher=lang, lmbda=0.5, seq_kd=True,
                            steps=40, batch_size=4, eval_every=40, progress=False)  # fmt: skip
    on = history.final["on_policy"]
    assert 0.25 < on < 0.75
    assert rec.asked.count(id(lang)) == 40  # every batch starts from the teacher's samples
    assert rec.asked.count(id(student)) == round(on * 40)


@pytest.mark.parametrize("lmbda, beta", [(1.0, 0.3), (0.0, 0.0)])
def test_one_step_is_the_hand_written_gkd_step(lang, data, lmbda, beta):
    task = language_task(V, L)
    student = tiny(1)
    by_hand = tiny(1)
    fit_on_policy(student, task, data, teacher=lang, lmbda=lmbda, beta=beta, steps=1,
                  batch_size=16, lr=1e-2, seed=3, progress=False)  # fmt: skip
    # the same step written out: draw the data batch, toss the coin, maybe sample, JSD, AdamW
    g = torch.Generator().manual_seed(3)
    batch = data[torch.randint(len(data), (16,), generator=g)]
    if float(torch.rand((), generator=g)) < lmbda:
        batch = task.sample(by_hand, 16, g, 1.0)
    by_hand.train()
    opt = torch.optim.AdamW(by_hand.parameters(), lr=1e-2, weight_decay=0.0)
    with torch.no_grad():
        teacher_logits = task.logits(lang, batch).float()
    loss = generalized_jsd_loss(task.logits(by_hand, batch), teacher_logits, None, beta)
    loss.backward()
    opt.step()
    for a, b in zip(student.parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_the_student_alone_learns_the_language_and_distillation_moves_towards_it(lang, data):
    task = language_task(V, L)
    student = tiny(0, width=16)
    before = exact_kl(lang, student, V, L)
    history = fit_on_policy(student, task, data, steps=60, batch_size=32, eval_every=30,
                            evaluate=lambda m: {"kl": exact_kl(lang, m, V, L)},
                            progress=False)  # fmt: skip
    assert history.final["kl"] < 0.5 * before
    assert list(history.to_frame().index) == [1, 2]
    assert history.settings["teacher"] is False and "diverged" not in history.settings
    distilled = tiny(0, width=16)
    fit_on_policy(distilled, task, data, teacher=lang, lmbda=1.0, beta=1.0, steps=60,
                  batch_size=32, progress=False)  # fmt: skip
    assert exact_kl(distilled, lang, V, L) < 0.5 * exact_kl(tiny(0, width=16), lang, V, L)


def test_a_non_finite_loss_stops_and_is_named(lang, data):
    inner = language_task(V, L)
    broken = SequenceTask(lambda m, s: inner.logits(m, s) * float("nan"), inner.sample)
    history = fit_on_policy(tiny(0), broken, data, teacher=lang, lmbda=0.0, steps=10,
                            batch_size=4, progress=False)  # fmt: skip
    assert history.settings["diverged"] == "non-finite loss at step 1"
    assert len(history.epochs) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lmbda": -0.1}, r"lmbda must be a number in \[0, 1\].*got -0.1"),
        ({"lmbda": 1.5}, r"lmbda must be a number in \[0, 1\].*got 1.5"),
        ({"beta": 2}, r"beta must be a number in \[0, 1\]"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"seq_kd": 1}, "seq_kd must be True or False"),
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"teacher": None, "lmbda": 0.5}, "without a teacher lmbda must be 0"),
    ],
)
def test_bad_input_is_named(lang, data, kwargs, match):
    kwargs = {"teacher": lang} | kwargs
    with pytest.raises(ValueError, match=match):
        fit_on_policy(tiny(0), language_task(V, L), data, progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"data must be a LongTensor \[N, L\]"):
        fit_on_policy(tiny(0), language_task(V, L), data[0], teacher=lang, progress=False)
