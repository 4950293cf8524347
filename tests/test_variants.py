"""Variants on top of fit: several teachers, born-again generations, mutual learning."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny

from kdbook.evaluate import accuracy, predict
from kdbook.losses import ensemble_logits, kd_loss
from kdbook.recipes import born_again, mutual_learning, restart_peak, warm_restarts
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def teachers(digits):
    a, b = tiny(digits, seed=0), tiny(digits, seed=1)
    fit(a, digits, num_epochs=1, seed=0, progress=False)
    fit(b, digits, num_epochs=1, seed=1, progress=False)
    return a, b


def test_ensemble_logits_average_the_probabilities_at_t():
    torch.manual_seed(0)
    t1, t2 = torch.randn(4, 5) * 3, torch.randn(4, 5) * 3
    temperature = 2.0
    for weights, (w1, w2) in ((None, (0.5, 0.5)), ([3.0, 1.0], (0.75, 0.25))):
        mixed = ensemble_logits([t1, t2], temperature, weights)
        expected = w1 * torch.softmax(t1 / 2, -1) + w2 * torch.softmax(t2 / 2, -1)
        torch.testing.assert_close(torch.softmax(mixed / temperature, -1), expected)
    huge = torch.tensor([[200.0, -200.0, 0.0]])  # a softmax that underflows to exact zeros
    assert torch.isfinite(ensemble_logits([huge, huge], 1.0)).all()
    with pytest.raises(ValueError, match="weights must be 2 numbers >= 0"):
        ensemble_logits([t1, t2], 1.0, [1.0, -1.0])


def test_two_identical_teachers_are_one_teacher(digits, teachers):
    teacher = teachers[0]
    torch.manual_seed(0)
    s, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    t = teacher(digits.normalize(digits.train.images[:6]))
    torch.testing.assert_close(
        kd_loss(s, ensemble_logits([t, t], 4.0), y), kd_loss(s, t, y), rtol=1e-6, atol=1e-6
    )
    one, two = tiny(digits, seed=2), tiny(digits, seed=2)
    kwargs = dict(num_epochs=1, progress=False)
    single = fit(one, digits, teacher=teacher, **kwargs)
    double = fit(two, digits, teacher=[teacher, teacher], teacher_weights=[1, 3], **kwargs)
    assert double.settings["teacher"] == ["tiny_cnn", "tiny_cnn"]
    assert double.settings["teacher_weights"] == [1.0, 3.0]
    assert double.final["kl"] == pytest.approx(single.final["kl"], rel=1e-4)
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_two_teachers_differ_from_either(digits, teachers):
    both = fit(tiny(digits), digits, teacher=list(teachers), num_epochs=1, progress=False)
    first = fit(tiny(digits), digits, teacher=teachers[0], num_epochs=1, progress=False)
    assert both.final["kl"] != first.final["kl"]
    with pytest.raises(ValueError, match="teacher_weights must be 2 numbers"):
        fit(tiny(digits), digits, teacher=list(teachers), teacher_weights=[1], progress=False)
    with pytest.raises(TypeError, match="a list of them, or None"):
        fit(tiny(digits), digits, teacher=[teachers[0], "t"], progress=False)


def test_born_again_returns_each_generation_from_the_same_init(digits, tmp_path):
    runs = born_again(
        "tiny_cnn", digits, generations=3, num_epochs=1, checkpoint_dir=tmp_path, progress=False
    )
    assert len(runs) == 3
    histories = [h for _, h in runs]
    assert [h.settings["teacher"] for h in histories] == [None, "tiny_cnn", "tiny_cnn"]
    assert "kl" not in histories[0].final and "kl" in histories[1].final
    assert all(len(h.epochs) == 1 for h in histories)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen1.pt", "gen2.pt", "gen3.pt"]
    models = [m for m, _ in runs]
    assert not any(m.training for m in models)
    assert not torch.equal(models[1].head[1].weight, models[2].head[1].weight)


def test_mutual_learning_improves_both_students(digits):
    a, b = tiny(digits, seed=0), tiny(digits, seed=1, name="digits_teacher")
    before = [accuracy(predict(m, digits, "val"), digits.val.labels) for m in (a, b)]
    history_a, history_b = mutual_learning(a, b, digits, num_epochs=2, progress=False)
    assert (
        [e["epoch"] for e in history_a.epochs] == [1, 2] == [e["epoch"] for e in history_b.epochs]
    )
    assert history_a.settings["teacher"] == "digits_teacher"
    assert history_b.settings["teacher"] == "tiny_cnn" and history_b.settings["num_epochs"] == 2
    after = [accuracy(predict(m, digits, "val"), digits.val.labels) for m in (a, b)]
    assert after[0] > before[0] + 20 and after[1] > before[1] + 20
    assert history_a.final["val_acc"] == pytest.approx(after[0])


def test_vit_teacher_is_trained_once_then_loaded_from_the_run_folder(digits, tmp_path, capsys):
    from kdbook.config import make_config
    from kdbook.recipes import vit_teacher_from_run

    cfg = make_config(num_epochs=1, run_dir=str(tmp_path))
    vit, history = vit_teacher_from_run(cfg, digits, lr=1e-3, weight_decay=0.05, progress=False)
    assert (tmp_path / "vit_teacher.pt").is_file()
    assert history.settings["optimizer"] == "adamw" and history.settings["lr"] == 1e-3
    assert history.settings["model"] == "vit_tiny" and len(history.epochs) == 1
    capsys.readouterr()
    again, history_again = vit_teacher_from_run(
        cfg, digits, lr=1e-3, weight_decay=0.05, progress=False
    )
    assert "already finished" in capsys.readouterr().out
    assert history_again.epochs == history.epochs
    for a, b in zip(vit.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # another learning rate is another run: trained afresh, not the stored one
    _, other = vit_teacher_from_run(cfg, digits, lr=2e-3, weight_decay=0.05, progress=False)
    assert "not resuming" in capsys.readouterr().out and other.settings["lr"] == 2e-3


def test_born_again_over_seeds_side_by_side_equals_one_seed_at_a_time(digits):
    together = born_again(
        "tiny_cnn", digits, generations=2, seed=[0, 1], num_epochs=1, progress=False
    )
    assert sorted(together) == [0, 1]
    for s in (0, 1):
        alone = born_again("tiny_cnn", digits, generations=2, seed=s, num_epochs=1, progress=False)
        for (m_stack, h_stack), (m_alone, h_alone) in zip(together[s], alone, strict=True):
            for p, q in zip(m_stack.parameters(), m_alone.parameters(), strict=True):
                torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)
            assert h_stack.final["val_acc"] == pytest.approx(h_alone.final["val_acc"], abs=0.5)
    with pytest.raises(ValueError, match="without checkpoint_dir"):
        born_again("tiny_cnn", digits, seed=[0, 1], checkpoint_dir="x", progress=False)


def test_mutual_learning_of_several_pairs_side_by_side_equals_each_pair_alone(digits):
    def pair(s):
        return tiny(digits, seed=s), tiny(digits, seed=s + 10)

    pairs = [pair(0), pair(1)]
    histories = mutual_learning(
        [a for a, _ in pairs], [b for _, b in pairs], digits, seed=[0, 1], num_epochs=2,
        progress=False,
    )  # fmt: skip
    for s, (a, b), (h_a, h_b) in zip((0, 1), pairs, histories, strict=True):
        a_alone, b_alone = pair(s)
        alone_a, alone_b = mutual_learning(
            a_alone, b_alone, digits, seed=s, num_epochs=2, progress=False
        )
        for p, q in zip(
            [*a.parameters(), *b.parameters()],
            [*a_alone.parameters(), *b_alone.parameters()],
            strict=True,
        ):
            torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)
        assert [e["epoch"] for e in h_a.epochs] == [1, 2] and h_b.settings["seed"] == s
    with pytest.raises(ValueError, match="must pair up"):
        mutual_learning([pairs[0][0]], [pairs[0][1], pairs[1][1]], digits, seed=[0], progress=False)


def test_warm_restarts_are_mutual_learnings_turns_without_a_peer(digits):
    models = [tiny(digits, seed=0), tiny(digits, seed=1)]
    histories = warm_restarts(models, digits, num_epochs=2, lr=0.05, seed=[0, 1], progress=False)
    for s, model, history in zip((0, 1), models, histories, strict=True):
        by_hand = tiny(digits, seed=s)
        for epoch in (1, 2):  # one fresh one-epoch fit per epoch, at that epoch's peak
            fit(by_hand, digits, num_epochs=1, lr=restart_peak(0.05, epoch, 2), seed=s + epoch,
                progress=False)  # fmt: skip
        for p, q in zip(model.parameters(), by_hand.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)
        assert [e["epoch"] for e in history.epochs] == [1, 2]
        assert history.settings["lr"] == 0.05 and history.settings["seed"] == s
        assert "kl" not in history.final  # no teacher, no soft term
    with pytest.raises(ValueError, match="must pair up, got 2 and 1"):
        warm_restarts(models, digits, seed=[0], progress=False)
    with pytest.raises(ValueError, match="without a teacher"):
        warm_restarts(models[:1], digits, seed=[0], teacher=models[1], progress=False)
    with pytest.raises(ValueError, match="num_epochs"):
        warm_restarts(models[:1], digits, seed=[0], num_epochs=0, progress=False)
