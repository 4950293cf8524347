"""fit on digits: it learns, distils, leaves the teacher alone, repeats itself, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny

from kdbook.checkpoint import History, load_checkpoint, save_checkpoint
from kdbook.config import make_config
from kdbook.data import UNLABELED, Loader
from kdbook.evaluate import predict
from kdbook.models import build_model
from kdbook.recipes import teacher_from_run
from kdbook.train import ClipGradNorm, TimeEstimate, fit

pytestmark = pytest.mark.usefixtures("single_thread")

COLUMNS = {"lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}


def test_fit_reduces_loss_and_records_history(digits):
    model = tiny(digits)
    history = fit(model, digits, num_epochs=2, progress=False)
    assert isinstance(history, History)
    frame = history.to_frame()
    assert list(frame.index) == [1, 2] and frame.index.name == "epoch"
    assert set(frame.columns) == COLUMNS
    assert frame["train_loss"].iloc[1] < frame["train_loss"].iloc[0]
    assert history.final == history.epochs[-1] and history.final["epoch"] == 2
    assert history.final["val_acc"] > 20  # chance is 10%
    assert history.final["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
    assert (frame["seconds"] > 0).all()
    assert history.settings["model"] == "tiny_cnn" and history.settings["teacher"] is None
    assert history.settings["train_samples"] == len(digits.train)
    assert not model.training  # returned in eval mode


def test_distillation_records_kl_and_leaves_teacher_alone(digits, teacher):
    teacher.train()  # fit must put it in eval mode itself
    teacher.zero_grad(set_to_none=True)  # clear what its own training left
    before = copy.deepcopy(teacher.state_dict())
    student = tiny(digits)
    history = fit(student, digits, teacher=teacher, num_epochs=2, temperature=3.0, progress=False)
    assert set(history.to_frame().columns) == COLUMNS | {"kl"}
    assert all(epoch["kl"] >= 0 for epoch in history.epochs)
    assert not teacher.training
    # Parameters and BatchNorm buffers (running stats) are untouched.
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    assert history.settings["teacher"] == "digits_teacher"
    assert (history.settings["temperature"], history.settings["alpha"]) == (3.0, 0.7)


def test_same_seed_gives_identical_history_and_weights(digits, teacher):
    def run():
        model = tiny(digits, seed=1)
        history = fit(model, digits, teacher=teacher, num_epochs=2, seed=5, progress=False)
        return model, [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]

    (model_a, epochs_a), (model_b, epochs_b) = run(), run()
    assert epochs_a == epochs_b
    for (key, a), b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


def test_another_seed_gives_another_run(digits):
    a, b = tiny(digits), tiny(digits)
    fit(a, digits, num_epochs=1, seed=0, progress=False)
    fit(b, digits, num_epochs=1, seed=1, progress=False)
    assert not torch.equal(a.head[1].weight, b.head[1].weight)


def record_training(model, monkeypatch):
    """Per training step: the labels of the batch (from the shuffled training Loader) and the
    model's predictions on it (its training-mode forward pass, before the optimizer step)."""
    labels, predictions, inputs = [], [], []
    real_iter = Loader.__iter__

    def spy(self):
        for batch in real_iter(self):
            if self.shuffle:  # the training loader; evaluation loaders do not shuffle
                labels.append(batch[1].clone())
            yield batch

    monkeypatch.setattr(Loader, "__iter__", spy)

    def hook(module, args, output):
        if module.training:
            inputs.append(args[0].detach().clone())
            predictions.append(output.detach().argmax(1))

    model.register_forward_hook(hook)
    return labels, predictions, inputs


def accuracy_on_labelled(labels, predictions) -> tuple[float, int, int]:
    """100 * right / labelled over the labelled samples of the steps, with both counts."""
    assert labels and len(labels) == len(predictions)
    y, p = torch.cat(labels), torch.cat(predictions)
    labelled = y != UNLABELED
    right = int((p[labelled] == y[labelled]).sum())
    return 100.0 * right / int(labelled.sum()), int(labelled.sum()), len(y)


def test_scarce_labels_without_teacher_train_on_labelled_only(digits, monkeypatch):
    scarce = digits.with_label_fraction(0.1)
    model = tiny(digits)
    labels, predictions, _ = record_training(model, monkeypatch)
    history = fit(model, scarce, num_epochs=1, batch_size=64, progress=False)
    assert history.settings["train_samples"] == int((scarce.train.labels >= 0).sum())
    # train_acc is the accuracy of the predictions made on what the model trained on
    expected, labelled, seen = accuracy_on_labelled(labels, predictions)
    assert labelled == seen == 64 * -(-len(digits.train) // 64)  # labelled samples only
    assert history.final["train_acc"] == expected
    assert 0 < history.final["train_acc"] < 100


def test_train_acc_counts_the_labelled_samples_only(digits, teacher, monkeypatch):
    """With a teacher every sample trains; train_acc is over the labelled ones only."""
    scarce = digits.with_label_fraction(0.2)
    model = tiny(digits)
    labels, predictions, _ = record_training(model, monkeypatch)
    history = fit(model, scarce, teacher=teacher, num_epochs=1, batch_size=64, progress=False)
    expected, labelled, seen = accuracy_on_labelled(labels, predictions)
    assert 0 < labelled < seen == len(digits.train)  # unlabelled samples were trained on
    assert history.final["train_acc"] == expected
    assert 0 < history.final["train_acc"] < 100


def test_adamw_and_no_augmentation(digits, monkeypatch):
    calls = {"adamw": [], "sgd": 0}
    real_adamw, real_sgd = torch.optim.AdamW.step, torch.optim.SGD.step

    def adamw_step(self, *args, **kwargs):
        calls["adamw"].append((self.defaults["lr"], self.defaults["weight_decay"]))
        return real_adamw(self, *args, **kwargs)

    def sgd_step(self, *args, **kwargs):
        calls["sgd"] += 1
        return real_sgd(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", adamw_step)
    monkeypatch.setattr(torch.optim.SGD, "step", sgd_step)
    model = tiny(digits)
    _, _, inputs = record_training(model, monkeypatch)
    history = fit(
        model,
        digits,
        num_epochs=1,
        optimizer="adamw",
        lr=1e-3,
        augment=False,
        progress=False,
    )
    assert history.settings["optimizer"] == "adamw"
    # AdamW took every step, with fit's learning rate and weight decay; SGD none
    steps = -(-len(digits.train) // 64)
    assert calls["adamw"] == [(1e-3, 5e-4)] * steps and calls["sgd"] == 0
    # no augmentation: every training image is one of the plain (normalised) images
    assert len(inputs) == steps
    plain = digits.normalize(digits.train.images).flatten(1)
    for x in inputs:
        assert (x.flatten(1)[:, None] == plain[None]).all(-1).any(1).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_epochs": 0}, "num_epochs must be an integer >= 1, got 0"),
        ({"temperature": -1.0}, "temperature must be a number > 0, got -1.0"),
        ({"alpha": 2.0}, r"alpha must be a number in \[0, 1\], got 2.0"),
        ({"optimizer": "lbfgs"}, r"optimizer must be one of \['sgd', 'adamw'\], got 'lbfgs'"),
        ({"device": "gpu"}, "device must be"),
    ],
)
def test_fit_refuses_bad_arguments(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(tiny(digits), digits, progress=False, **kwargs)


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip(digits, tmp_path):
    model = tiny(digits)
    path = tmp_path / "student.pt"
    history = fit(model, digits, num_epochs=1, checkpoint=path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pt"]  # no temp file left
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["model"] == "tiny_cnn"
    assert blob["meta"]["classes"] == digits.classes
    assert blob["meta"]["metrics"] == history.final
    loaded, meta = load_checkpoint(path, digits)
    assert meta["dataset"] == "digits" and meta["settings"] == history.settings
    assert not loaded.training
    torch.testing.assert_close(predict(loaded, digits), predict(model, digits), rtol=0, atol=0)


def test_save_checkpoint_without_history(digits, tmp_path):
    path = save_checkpoint(tmp_path / "init.pt", tiny(digits), digits)
    _, meta = load_checkpoint(path)
    assert "metrics" not in meta and meta["num_classes"] == 10


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_load_checkpoint_refuses_bad_files(digits, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    good = save_checkpoint(tmp_path / "good.pt", tiny(digits), digits)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (text, tensor, truncated):
        with pytest.raises(ValueError, match="checkpoint .* not a") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)


def test_load_checkpoint_refuses_another_dataset(digits, tmp_path):
    from dataclasses import replace

    path = save_checkpoint(tmp_path / "t.pt", tiny(digits), digits)
    other = replace(digits, name="cifar10")
    with pytest.raises(ValueError, match="dataset='digits'") as info:
        load_checkpoint(path, other)
    assert str(path) in str(info.value)
    renamed = replace(digits, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(ValueError, match="classes="):
        load_checkpoint(path, renamed)


def test_teacher_from_run_trains_once_then_loads(digits, tmp_path, capsys):
    # tiny_cnn as the teacher keeps this quick; the mechanism is the same for any model.
    cfg = make_config(teacher="tiny_cnn", num_epochs=1, run_dir=str(tmp_path / "run"))
    first, meta = teacher_from_run(cfg, digits, num_epochs=1, progress=False)
    assert "training tiny_cnn" in capsys.readouterr().out
    assert (tmp_path / "run" / "teacher.pt").is_file()
    assert meta["model"] == cfg.teacher and meta["settings"]["num_epochs"] == 1
    second, meta2 = teacher_from_run(cfg, digits, num_epochs=1, progress=False)
    out = capsys.readouterr().out
    assert "loaded" in out and "training" not in out
    assert meta2 == meta
    assert not second.training
    torch.testing.assert_close(predict(second, digits), predict(first, digits), rtol=0, atol=0)


def test_time_estimate_says_after_the_first_epoch_how_long_the_whole_takes(digits, capsys):
    fit(tiny(digits), digits, num_epochs=3, progress=False, hooks=[TimeEstimate()])
    (line,) = capsys.readouterr().out.splitlines()
    first = float(line.split()[2])
    assert line.startswith("first epoch ") and line.endswith(" s for 3 epochs")
    assert line == f"first epoch {first:.1f} s: about {line.split()[5]} s for 3 epochs"
    fit(tiny(digits), digits, num_epochs=2, progress=False, hooks=[TimeEstimate(runs=4)])
    assert capsys.readouterr().out.rstrip().endswith(" s for 4 runs")
    fit(tiny(digits), digits, num_epochs=1, progress=False, hooks=[TimeEstimate()])
    assert capsys.readouterr().out == ""  # one epoch: nothing left to estimate


def test_teacher_from_run_on_a_cpu_trains_the_cpu_size_02_would(digits, tmp_path, capsys):
    from kdbook.config import CPU_SIZES

    cfg = make_config("imagefolder", dataset="imagefolder:x", device="cpu", teacher="tiny_cnn",
                      run_dir=str(tmp_path / "run"))  # fmt: skip
    _, meta = teacher_from_run(cfg, digits, progress=False)
    assert meta["settings"]["num_epochs"] == CPU_SIZES["imagefolder"]["num_epochs"]
    assert "first epoch" in capsys.readouterr().out  # its expected time


def test_teacher_from_run_retrains_another_architecture(digits, tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(run / "teacher.pt", tiny(digits), digits)  # a tiny_cnn, not the teacher
    cfg = make_config(teacher="mnist_student", num_epochs=1, run_dir=str(run))
    _, meta = teacher_from_run(cfg, digits, num_epochs=1, progress=False)
    out = capsys.readouterr().out
    assert "not reusing" in out and "it holds tiny_cnn" in out and "training mnist_student" in out
    assert meta["model"] == "mnist_student"
    assert load_checkpoint(run / "teacher.pt")[1]["model"] == "mnist_student"  # replaced


def test_max_grad_norm_clips_each_step(digits, monkeypatch) -> None:
    """With max_grad_norm, the gradient the optimizer sees never exceeds it."""
    import torch

    from kdbook.train import fit

    seen = []
    real_step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    fit(model, digits, num_epochs=1, lr=0.05, hooks=[ClipGradNorm(0.01)], progress=False)
    assert seen and max(seen) <= 0.01 + 1e-6


def test_max_grad_norm_must_be_positive(digits) -> None:
    import pytest

    from kdbook.train import fit

    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"max_grad_norm must be a number > 0 or None, got -1"):
        fit(model, digits, num_epochs=1, hooks=[ClipGradNorm(-1)], progress=False)
