"""A new loss term is one class: ProbL2, registered here, trains, logs, is recorded and
resumes through fit with nothing else written; and the Distiller's loss is kd_loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import Interrupt, assert_same_weights, tiny

from kdbook.distill import TERMS, Distiller, Term, list_terms, register_term
from kdbook.losses import kd_loss, soft_kd_term
from kdbook.runtime import Runtime
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")

BUILT_INS = {"cross_entropy", "logit_kd", "feature_kd"}


@pytest.fixture(scope="module")
def prob_l2():
    """The ProbL2 term class, registered as "prob_l2" for this module only."""
    assert "prob_l2" not in TERMS

    @register_term("prob_l2")
    class ProbL2(Term):
        """weight * mean over samples of ||softmax(student) - softmax(teacher)||^2."""

        def __init__(self, weight: float = 1.0) -> None:
            super().__init__()
            self.weight = weight

        def extra_repr(self) -> str:  # the repr is the recorded setting: say the weight
            return f"weight={self.weight!r}"

        def forward(self, out, progress):
            p, q = out.logits.softmax(1), out.teacher_logits.softmax(1)
            l2 = (p - q).pow(2).sum(1).mean()
            return self.weight * l2, {"prob_l2": l2}

    yield ProbL2
    TERMS.pop("prob_l2", None)


def without_seconds(history) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]


# -- the registry ---------------------------------------------------------------------------


def test_list_terms_holds_the_built_ins_and_the_new_term(prob_l2):
    names = list_terms()
    assert BUILT_INS <= set(names) and "prob_l2" in names
    assert names == sorted(names)
    assert TERMS["prob_l2"] is prob_l2 and prob_l2.name == "prob_l2"


def test_a_duplicate_name_is_refused_and_the_first_class_kept(prob_l2):
    class Other(Term):
        pass

    for name in ("prob_l2", "logit_kd"):
        with pytest.raises(ValueError, match=f"a loss term named '{name}' is registered already"):
            register_term(name)(Other)
    assert TERMS["prob_l2"] is prob_l2 and Other.name == "term"  # nothing changed


def test_a_term_that_needs_a_teacher_is_refused_without_one(digits, prob_l2):
    model = tiny(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = "loss term 'prob_l2' needs a teacher, got teacher=None"
    with pytest.raises(ValueError, match=message):
        fit(model, digits, terms=[prob_l2(0.5)], num_epochs=1, progress=False)
    with pytest.raises(ValueError, match=message):
        Distiller(None, terms=[prob_l2(0.5)])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # refused before any work
    with pytest.raises(TypeError, match="terms must be kdbook.distill.Term objects"):
        Distiller(None, terms=["prob_l2"])


# -- the Distiller's loss is kd_loss -------------------------------------------------------


def test_the_distillers_loss_on_a_batch_is_kd_loss_by_hand(digits, teacher):
    model = tiny(digits).eval()  # eval: BatchNorm on running statistics, the same both ways
    distiller = Distiller(teacher, temperature=3.0, alpha=0.6)
    student = distiller.student(model, digits, Runtime(torch.device("cpu")), seed=0)
    x = digits.normalize(digits.train.images[:48])
    y, idx = digits.train.labels[:48], torch.arange(48)
    loss, logits, logs = distiller.loss(student, x, y, idx, 0.0)
    with torch.no_grad():
        s, t = model(x), teacher(x)
    torch.testing.assert_close(logits, s, rtol=0, atol=0)
    torch.testing.assert_close(loss, kd_loss(s, t, y, temperature=3.0, alpha=0.6))
    assert logs["kl"] == pytest.approx(soft_kd_term(s, t, 3.0).item() / 9.0, rel=1e-6)
    assert loss.requires_grad  # the student's loss, to backpropagate
    # without a teacher: cross-entropy on the labels, nothing logged
    alone = Distiller(None)
    module = alone.student(model, digits, Runtime(torch.device("cpu")), seed=0)
    loss, _, logs = alone.loss(module, x, y, idx, 0.0)
    torch.testing.assert_close(loss, F.cross_entropy(s, y))
    assert logs == {}


# -- ProbL2 in fit --------------------------------------------------------------------------


def test_fit_trains_logs_and_records_the_new_term(digits, teacher, prob_l2):
    kwargs = dict(teacher=teacher, num_epochs=2, progress=False)
    plain, with_term = tiny(digits), tiny(digits)
    h_plain = fit(plain, digits, **kwargs)
    term = prob_l2(0.5)
    history = fit(with_term, digits, terms=[term], **kwargs)
    # it trained with the term: another model than plain KD from the same start
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.parameters(), with_term.parameters(), strict=True)
    )
    # its log is in every record, a positive number that falls as the student learns
    values = [e["prob_l2"] for e in history.epochs]
    assert len(values) == 2 and all(math.isfinite(v) and 0 < v < 2 for v in values)
    assert values[1] < values[0]
    assert "prob_l2" not in h_plain.final and "kl" in history.final
    # recorded among the settings, by its repr (weight included)
    assert history.settings["prob_l2"] == repr(term) == "ProbL2(weight=0.5)"
    assert "prob_l2" not in h_plain.settings
    assert {k: v for k, v in history.settings.items() if k != "prob_l2"} == h_plain.settings


def test_weight_zero_leaves_the_student_as_plain_kd(digits, teacher, prob_l2):
    kwargs = dict(teacher=teacher, num_epochs=1, progress=False)
    a, b = tiny(digits), tiny(digits)
    h_a = fit(a, digits, **kwargs)
    h_b = fit(b, digits, terms=[prob_l2(0.0)], **kwargs)
    assert_same_weights(a, b)
    assert h_b.final["kl"] == h_a.final["kl"] and h_b.final["prob_l2"] > 0  # still logged


def test_a_run_with_the_term_resumes_bit_identically(digits, teacher, prob_l2, tmp_path, capsys):
    path = tmp_path / "prob_l2.pt"
    kwargs = dict(teacher=teacher, num_epochs=3, batch_size=128, seed=2, progress=False)
    student = tiny(digits, seed=1)
    steps_per_epoch = -(-len(digits.train) // 128)
    hook = student.register_forward_hook(Interrupt(steps_per_epoch + 4))  # mid epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(student, digits, terms=[prob_l2(0.5)], checkpoint=path, **kwargs)
    hook.remove()
    assert torch.load(path, weights_only=True)["run"]["epoch"] == 1
    capsys.readouterr()

    resumed = tiny(digits, seed=7)  # replaced by the checkpoint's weights
    history = fit(resumed, digits, terms=[prob_l2(0.5)], checkpoint=path, **kwargs)
    assert "resuming after epoch 1 of 3" in capsys.readouterr().out
    reference = tiny(digits, seed=1)
    expected = fit(reference, digits, terms=[prob_l2(0.5)], **kwargs)
    assert without_seconds(history) == without_seconds(expected)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]
    assert_same_weights(resumed, reference)

    # another weight is another run: the checkpoint is not resumed
    fit(tiny(digits), digits, terms=[prob_l2(0.1)], checkpoint=path, **kwargs)
    out = capsys.readouterr().out
    assert "not resuming" in out and "prob_l2='ProbL2(weight=0.5)'" in out
