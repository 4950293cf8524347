"""fit's speed options: precision, gradient accumulation, channels_last, the teacher cache."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny
from torch import nn

from kdbook.data import Loader
from kdbook.distill import LogitCache, cache_teacher_logits
from kdbook.runtime import resolve_precision
from kdbook.train import TensorBoard, fit

pytestmark = pytest.mark.usefixtures("single_thread")


def max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_accumulated_gradients_equal_the_large_batch(digits) -> None:
    # vit_tiny has no BatchNorm and no dropout: a batch's gradient is the sum of its parts'.
    whole, parts = tiny(digits, name="vit_tiny"), tiny(digits, name="vit_tiny")
    common = dict(num_epochs=1, batch_size=96, lr=0.05, progress=False)
    fit(whole, digits, **common)
    fit(parts, digits, accumulation_steps=4, **common)
    assert max_diff(whole, parts) < 1e-5
    changed = max_diff(whole, tiny(digits, name="vit_tiny"))
    assert changed > 1e-3  # it did train: the agreement is not that of two untouched models


def test_accumulation_with_a_teacher_matches_too(digits, teacher) -> None:
    a, b = tiny(digits, name="vit_tiny"), tiny(digits, name="vit_tiny")
    common = dict(teacher=teacher, num_epochs=1, batch_size=64, progress=False)
    ha = fit(a, digits, **common)
    hb = fit(b, digits, accumulation_steps=3, **common)
    assert max_diff(a, b) < 1e-5
    assert hb.settings["accumulation_steps"] == 3
    assert ha.final["kl"] == pytest.approx(hb.final["kl"], rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accumulation_steps": 0}, "accumulation_steps must be an integer in"),
        ({"accumulation_steps": 65}, "accumulation_steps must be an integer in"),
        ({"accumulation_steps": 2.0}, "accumulation_steps must be an integer in"),
        ({"precision": "half"}, "precision must be one of"),
        ({"precision": "fp16"}, "precision='fp16' needs a CUDA device"),
    ],
)
def test_bad_speed_options_are_refused_before_training(digits, kwargs, message) -> None:
    model = tiny(digits)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        fit(model, digits, num_epochs=1, batch_size=64, progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_precision_auto_is_fp32_on_cpu_and_bf16_trains(digits) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    fp32, bf16 = tiny(digits), tiny(digits)
    h32 = fit(fp32, digits, num_epochs=3, progress=False)
    h16 = fit(bf16, digits, num_epochs=3, precision="bf16", progress=False)
    assert h32.settings["precision"] == "fp32" and h16.settings["precision"] == "bf16"
    assert h16.final["val_acc"] > 50  # it learns (chance is 10%)
    assert abs(h16.final["val_acc"] - h32.final["val_acc"]) < 15
    assert 0 < max_diff(fp32, bf16)  # bf16 arithmetic really ran: not bit-identical
    assert next(bf16.parameters()).dtype == torch.float32  # weights stay fp32


def test_channels_last_gives_the_same_model(digits) -> None:
    a, b = tiny(digits), tiny(digits)
    fit(a, digits, num_epochs=1, progress=False)
    fit(b, digits, num_epochs=1, channels_last=True, progress=False)
    assert max_diff(a, b) < 1e-4


def test_plain_cache_equals_the_teacher_without_augmentation(digits, teacher, capsys) -> None:
    cache = cache_teacher_logits(teacher, digits, progress=False)
    assert isinstance(cache, LogitCache) and cache.views is None
    assert cache.logits.shape == (1, len(digits.train), digits.num_classes)
    live, cached = tiny(digits), tiny(digits)
    h_live = fit(live, digits, teacher=teacher, augment=False, num_epochs=2, progress=False)
    h_cached = fit(cached, digits, teacher=cache, num_epochs=2, progress=False)
    assert capsys.readouterr().out.count("training without augmentation") == 1
    fit(tiny(digits), digits, teacher=cache, num_epochs=1, progress=False)
    assert "training without augmentation" not in capsys.readouterr().out  # said once
    assert max_diff(live, cached) < 1e-4
    assert h_cached.final["kl"] == pytest.approx(h_live.final["kl"], rel=1e-3)
    assert h_cached.settings["teacher"] == "cache:digits_teacher"
    assert h_cached.settings["augment"] is False


class Recorder(nn.Module):
    """A model that records its training-mode inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.inputs.append(x.detach().clone())
        return self.model(x)


def test_views_cache_replays_exactly_the_views_the_teacher_saw(digits, teacher) -> None:
    cache = cache_teacher_logits(teacher, digits, views=2, seed=3, progress=False)
    assert cache.views.shape == (2, len(digits.train), 5)
    # the cached logits are the teacher's on the stored views
    idx = torch.arange(0, len(digits.train), 97)
    for v in range(2):
        x = digits.normalize(digits.augment.apply(digits.train.images[idx], cache.views[v, idx]))
        with torch.no_grad():
            torch.testing.assert_close(teacher(x), cache.logits[v, idx], atol=1e-5, rtol=1e-5)
    # and fit shows the student view e mod 2 in epoch e
    student = Recorder(tiny(digits))
    loader_len = -(-len(digits.train) // 64)
    fit(student, digits, teacher=cache, num_epochs=3, batch_size=64, progress=False)
    seen = student.inputs
    assert len(seen) == 3 * loader_len
    views = [
        digits.normalize(digits.augment.apply(digits.train.images, cache.views[v])) for v in (0, 1)
    ]
    for epoch, view in ((0, views[0]), (1, views[1]), (2, views[0])):
        batch = seen[epoch * loader_len]
        # every image of the batch is one of the stored views of some sample
        matches = (batch[:, None] == view[None]).flatten(2).all(-1).any(1)
        assert matches.all()


def test_cache_file_is_reused_and_a_stale_one_recomputed(digits, teacher, tmp_path, capsys) -> None:
    path = tmp_path / "logits.pt"
    first = cache_teacher_logits(teacher, digits, views=1, path=path, progress=False)
    assert torch.load(path, weights_only=True)["fingerprint"] == first.fingerprint
    again = cache_teacher_logits(teacher, digits, views=1, path=path, progress=False)
    assert "loaded" in capsys.readouterr().out
    assert torch.equal(first.logits, again.logits)
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    third = cache_teacher_logits(other, digits, views=1, path=path, progress=False)
    assert "stale" in capsys.readouterr().out
    assert not torch.equal(third.logits, first.logits)


def test_cache_of_other_images_or_with_feature_loss_is_refused(digits, teacher) -> None:
    from dataclasses import replace

    from kdbook.data import Split
    from kdbook.losses import HintLoss

    cache = cache_teacher_logits(teacher, digits, progress=False)
    flipped = replace(digits, train=Split(digits.train.images.flip(-1), digits.train.labels))
    with pytest.raises(ValueError, match="other training images"):
        fit(tiny(digits), flipped, teacher=cache, num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="holds logits only"):
        fit(
            tiny(digits),
            digits,
            teacher=cache,
            feature_loss=HintLoss(4, 128),
            feature_weight=1.0,
            num_epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="views must be an integer >= 0"):
        cache_teacher_logits(teacher, digits, views=-1, progress=False)


def test_loader_shards_make_up_the_single_process_batch(digits) -> None:
    def batches(shard):
        loader = Loader(digits, digits.train, 50, shuffle=True, augment=True, seed=4, shard=shard)
        return list(loader)

    whole = batches((0, 1))
    parts = [batches((r, 3)) for r in range(3)]
    for i, (x, y, idx) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[i][2] for p in parts]), idx)
    with pytest.raises(ValueError, match="shard must be"):
        Loader(digits, digits.train, 50, shard=(2, 2))


def test_log_dir_gets_every_record_as_tensorboard_scalars(digits, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = fit(
        tiny(digits), digits, num_epochs=2, hooks=[TensorBoard(tmp_path / "tb")], progress=False
    )
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "val_acc", "lr", "seconds"} <= tags
    logged = [(e.step, e.value) for e in events.Scalars("val_acc")]
    expected = [(r["epoch"], r["val_acc"]) for r in history.epochs]
    assert logged == [(step, pytest.approx(value, rel=1e-6)) for step, value in expected]


def test_tensorboard_writer_is_closed_when_nothing_trains_or_training_stops(
    digits, tmp_path, capsys
) -> None:
    path = tmp_path / "s.pt"
    fit(tiny(digits), digits, num_epochs=1, checkpoint=path, progress=False)
    board = TensorBoard(tmp_path / "tb")
    fit(tiny(digits), digits, num_epochs=1, checkpoint=path, hooks=[board], progress=False)
    assert "already finished" in capsys.readouterr().out
    assert board.writer is None  # opened by start, closed although no epoch ran

    def interrupt(module, inputs, output):
        if module.training:
            raise KeyboardInterrupt

    model = tiny(digits)
    model.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits, num_epochs=1, hooks=[board], progress=False)
    assert board.writer is None
