"""Source 5's split views and head freezing: Augment's replayable views and cutout, the
teacher's strong view inside fit (teacher_augment), and the head frozen for a first fraction
of training (freeze_head), each checked on what the models really receive."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny
from torch import nn

from kdbook.data import Augment
from kdbook.distill import cache_teacher_logits
from kdbook.train import FreezeHead, fit

pytestmark = pytest.mark.usefixtures("single_thread")

BATCH = 128  # digits: 1295 training images, so 11 steps per epoch


# -- Augment: parameters drawn once, views replayed -------------------------------------


def test_the_same_params_give_the_same_views_and_call_is_sample_then_apply(digits):
    x = digits.train.images[:64]
    aug = Augment(pad=2, flip=True, cutout=3)
    params = aug.sample(len(x), torch.Generator().manual_seed(5))
    assert params.shape == (64, 5) and params.dtype == torch.long
    assert params[:, :2].min() >= 0 and params[:, :2].max() <= 4  # shifts 0..2*pad
    assert set(params[:, 2].tolist()) == {0, 1}  # 64 coin flips: both sides come up
    first, again = aug.apply(x, params), aug.apply(x.clone(), params.clone())
    assert torch.equal(first, again)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert not torch.equal(first, x)
    called = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(called, first)
    other = aug(x, torch.Generator().manual_seed(6))
    assert not torch.equal(other, first)  # another seed, other views


def test_params_mean_what_the_docstring_says(digits):
    x = digits.train.images[:2]
    aug = Augment(pad=2, flip=True)
    # dy = dx = pad is the unshifted image, no flip
    assert torch.equal(aug.apply(x, torch.tensor([[2, 2, 0, 0, 0]] * 2)), x)
    assert torch.equal(aug.apply(x, torch.tensor([[2, 2, 1, 0, 0]] * 2)), x.flip(-1))
    # dy = pad + 1: row i of the view is row i + 1 of the image, the last row padded with 0
    down = aug.apply(x, torch.tensor([[3, 2, 0, 0, 0]] * 2))
    assert torch.equal(down[..., :-1, :], x[..., 1:, :])
    assert (down[..., -1, :] == 0).all()
    # sampling draws no shift or flip that the augmentation does not have
    assert (Augment(cutout=3).sample(50, torch.Generator().manual_seed(0))[:, :3] == 0).all()
    assert (Augment().sample(50)[:, :] == 0).all()


def cutout_view(size: int, cy: int, cx: int, channels: int = 1, side: int = 8) -> torch.Tensor:
    image = torch.full((1, channels, side, side), 255, dtype=torch.uint8)
    return Augment(cutout=size).apply(image, torch.tensor([[0, 0, 0, cy, cx]]))


@pytest.mark.parametrize("size", [2, 3, 4])
def test_cutout_inside_the_image_zeroes_exactly_a_square(size):
    view = cutout_view(size, 4, 4, channels=3)
    zeros = view[0] == 0
    assert zeros.sum().item() == 3 * size * size  # every channel, the same square
    assert torch.equal(zeros[0], zeros[1]) and torch.equal(zeros[0], zeros[2])
    rows, cols = zeros[0].nonzero().unbind(1)
    top, left = 4 - size // 2, 4 - size // 2  # a square centred on (cy, cx)
    assert rows.min() == top and rows.max() == top + size - 1
    assert cols.min() == left and cols.max() == left + size - 1
    assert (view[0][~zeros] == 255).all()  # nothing else touched


@pytest.mark.parametrize(
    ("cy", "cx", "expected"),
    [
        (0, 0, 4),  # top-left corner: rows 0..1, cols 0..1 of a 4x4 square centred there
        (7, 7, 9),  # bottom-right: rows 5..7, cols 5..7
        (0, 4, 8),  # top edge: rows 0..1, cols 2..5
        (4, 8 + 4, 16),  # the centre is taken modulo the size: (4, 4), inside
        (1 << 29, 3, 8),  # a sampled (large) centre: row (1 << 29) % 8 = 0, clipped again
    ],
)
def test_cutout_is_clipped_at_the_borders(cy, cx, expected):
    assert (cutout_view(4, cy, cx) == 0).sum().item() == expected


def test_sampled_cutouts_never_exceed_the_square(digits):
    aug = Augment(cutout=4)
    image = torch.full((500, 1, 8, 8), 255, dtype=torch.uint8)
    zeros = (aug(image, torch.Generator().manual_seed(1)) == 0).flatten(1).sum(1)
    assert zeros.max().item() == 16 and zeros.min().item() >= 4  # clipped at most to a corner
    assert 4 < zeros.float().mean().item() < 16


# -- teacher_augment: the teacher sees a stronger view of the student's view ------------


def record_inputs(student: nn.Module, teacher: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Log (role, input) of every teacher call and every training-mode student call, in order."""
    events: list[tuple[str, torch.Tensor]] = []
    student.register_forward_pre_hook(
        lambda m, args: events.append(("student", args[0].clone())) if m.training else None
    )
    teacher.register_forward_pre_hook(lambda m, args: events.append(("teacher", args[0].clone())))
    return events


def training_views(events) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(student input, teacher input) of each step: the teacher runs just before the student."""
    pairs = []
    for i, (role, x) in enumerate(events):
        if role == "student":
            assert i > 0 and events[i - 1][0] == "teacher", "every step asks the teacher first"
            pairs.append((x, events[i - 1][1]))
    return pairs


def views_of_a_run(digits, teacher_augment, seed: int = 0):
    student, teacher = tiny(digits, 0), tiny(digits, 1)
    events = record_inputs(student, teacher)
    history = fit(
        student,
        digits,
        teacher=teacher,
        teacher_augment=teacher_augment,
        num_epochs=1,
        batch_size=BATCH,
        seed=seed,
        progress=False,
    )
    pairs = training_views(events)
    assert len(pairs) == math.ceil(len(digits.train) / BATCH)
    return pairs, history


def test_without_teacher_augment_the_teacher_sees_the_students_view(digits):
    pairs, history = views_of_a_run(digits, None)
    assert all(torch.equal(s, t) for s, t in pairs)
    assert history.settings["teacher_augment"] is None


def test_the_teacher_sees_the_students_view_with_a_cutout(digits):
    strong = Augment(cutout=4)
    pairs, history = views_of_a_run(digits, strong)
    assert history.settings["teacher_augment"] == repr(strong)
    differing = 0
    for s, t in pairs:
        assert s.shape == t.shape
        changed = t != s
        # the teacher's view is the student's, except for pixels set to 0 ...
        assert (t[changed] == 0).all()
        # ... inside one 4x4 square per image (digits normalise with mean 0, std 1)
        for mask in changed[:, 0]:
            if mask.any():
                rows, cols = mask.nonzero().unbind(1)
                assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
        differing += int(changed.flatten(1).any(1).sum())
    assert differing > 0.5 * len(digits.train)  # most cutouts hit some ink


def test_the_strong_views_padding_and_cutout_are_black_whatever_the_normalisation(digits):
    from dataclasses import replace

    shifted = replace(digits, mean=(0.5,), std=(0.25,))  # black is -2 in normalised units
    pairs, _ = views_of_a_run(shifted, Augment(cutout=4))
    black = shifted.normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8)).item()
    assert black == pytest.approx(-2.0)
    holes = 0
    for s, t in pairs:
        changed = t != s
        assert torch.allclose(t[changed], torch.full_like(t[changed], black))
        holes += int(changed.sum())
    assert holes > 0


def test_strong_views_differ_from_the_light_ones_and_replay_per_seed(digits):
    strong = Augment(pad=2, flip=False, cutout=4)  # the notebook's strong view
    plain, _ = views_of_a_run(digits, None)
    split, _ = views_of_a_run(digits, strong)
    again, _ = views_of_a_run(digits, strong)
    other, _ = views_of_a_run(digits, strong, seed=1)
    for (s0, _), (s, t), (s2, t2) in zip(plain, split, again, strict=True):
        assert torch.equal(s, s0)  # the student's light view is untouched by the option
        assert not torch.equal(t, s)  # the teacher's is another view
        assert torch.equal(s2, s) and torch.equal(t2, t)  # the same seed replays both
    assert not torch.equal(other[0][1], split[0][1])


def test_teacher_augment_without_a_teacher_or_of_another_type_is_refused(digits):
    model = tiny(digits)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="teacher_augment"):
        fit(model, digits, teacher_augment=Augment(cutout=4), num_epochs=1, progress=False)
    for wrong in ("strong", {"pad": 2}, Augment):
        with pytest.raises(TypeError, match="teacher_augment"):
            fit(model, digits, teacher=tiny(digits, 1), teacher_augment=wrong, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_logit_cache_cannot_show_the_teacher_another_view(digits):
    cache = cache_teacher_logits(tiny(digits, 1), digits, progress=False)
    with pytest.raises(ValueError, match="teacher_augment"):
        fit(tiny(digits), digits, teacher=cache, teacher_augment=Augment(cutout=4), progress=False)


# -- freeze_head: the classifier waits for the first fraction of training ---------------


def parameters_per_step(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """A copy of the parameters at every training-mode forward pass (one per step)."""
    seen: list[dict[str, torch.Tensor]] = []
    model.register_forward_pre_hook(
        lambda m, args: (
            seen.append({k: p.detach().clone() for k, p in m.named_parameters()})
            if m.training
            else None
        )
    )
    return seen


def moved(before: dict, after: dict, head: bool) -> bool:
    keys = [k for k in before if k.startswith("head.") == head]
    assert keys
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize(("freeze_head", "num_epochs"), [(0.5, 2), (0.0, 1), (0.9, 1)])
def test_the_head_gets_no_update_in_the_frozen_fraction_only(digits, freeze_head, num_epochs):
    model = tiny(digits)
    seen = parameters_per_step(model)
    history = fit(
        model,
        digits,
        teacher=tiny(digits, 1),
        hooks=[FreezeHead(freeze_head)],
        num_epochs=num_epochs,
        batch_size=BATCH,
        progress=False,
    )
    final = {k: p.detach() for k, p in model.named_parameters()}
    steps = num_epochs * math.ceil(len(digits.train) / BATCH)
    assert len(seen) == steps and history.settings["freeze_head"] == freeze_head
    after = [*seen[1:], final]  # the parameters after step k
    frozen = [k for k in range(steps) if not moved(seen[k], after[k], head=True)]
    # step k is frozen exactly when its progress k / steps is below freeze_head
    assert frozen == [k for k in range(steps) if k / steps < freeze_head]
    # the rest of the model learns at every step, frozen head or not
    assert all(moved(seen[k], after[k], head=False) for k in range(steps))
    if freeze_head == 0.5:  # with 2 epochs: the head leaves epoch 1 as it was built
        assert all(torch.equal(seen[0][k], seen[steps // 2][k]) for k in seen[0] if "head." in k)


def test_freeze_head_works_on_the_vit_head(digits):
    vit = tiny(digits, name="vit_tiny")
    assert isinstance(vit.head, nn.Module)  # ViTClassifier.head: its classifier
    heads: list[list[torch.Tensor]] = []
    vit.register_forward_pre_hook(
        lambda m, args: (
            heads.append([p.detach().clone() for p in m.head.parameters()]) if m.training else None
        )
    )
    # 6 steps of 256: steps 0..4 have progress k / 6 < 0.8 (frozen), step 5 updates the head
    fit(vit, digits, num_epochs=1, batch_size=256, hooks=[FreezeHead(0.8)], progress=False)
    assert len(heads) == 6
    assert all(torch.equal(a, b) for a, b in zip(heads[0], heads[-1], strict=True))
    final = [p.detach() for p in vit.head.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(heads[-1], final, strict=True))


@pytest.mark.parametrize("bad", [-0.1, 1, 1.0, 2, "a", None, float("nan")])
def test_bad_freeze_head_values_are_refused_before_training(digits, bad):
    model = tiny(digits)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="freeze_head"):
        fit(model, digits, hooks=[FreezeHead(bad)], num_epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_freeze_head_needs_a_model_with_a_head(digits):
    headless = nn.Sequential(nn.Flatten(), nn.Linear(64, digits.num_classes))
    with pytest.raises(ValueError, match="freeze_head needs model.head"):
        fit(headless, digits, hooks=[FreezeHead(0.5)], num_epochs=1, progress=False)
    # 0: nothing to freeze
    fit(headless, digits, hooks=[FreezeHead(0.0)], num_epochs=1, progress=False)
