"""Interrupted runs: fit checkpoints every epoch and a rerun ends exactly where an
uninterrupted run of the same seed ends (on the CPU, bit for bit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from helpers import Interrupt, assert_same_weights, tiny

from kdbook.checkpoint import load_checkpoint, save_checkpoint
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_EPOCHS = 5


def without_seconds(history) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]


def checkpoint_epoch(path) -> int:
    try:
        return torch.load(path, weights_only=True)["run"]["epoch"]
    except (FileNotFoundError, KeyError):
        return 0


# The training a user would run: tiny_cnn on digits. The forward hook only slows each
# training step (so that the test can kill the process mid-run); it changes no number.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from kdbook.data import load_dataset
    from kdbook.models import build_model
    from kdbook.train import fit

    torch.set_num_threads(1)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    model.register_forward_hook(lambda m, i, o: time.sleep(0.02) if m.training else None)
    fit(model, data, num_epochs={num_epochs}, seed=3, checkpoint=sys.argv[1], progress=False)
    """
).format(num_epochs=NUM_EPOCHS)


def test_sigkill_mid_training_then_rerun_equals_uninterrupted_run(digits, tmp_path, capsys):
    path = tmp_path / "student.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while checkpoint_epoch(path) < 2:
            assert proc.poll() is None, "the training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = checkpoint_epoch(path)
    assert 2 <= stopped_at < NUM_EPOCHS, "the kill must land mid-training"
    assert [p.name for p in tmp_path.iterdir()] == ["student.pt"]  # no half-written file

    # The rerun: the same call, in a fresh model, continues from the checkpoint.
    resumed = tiny(digits, seed=123)  # its initial weights do not matter: they are replaced
    history = fit(resumed, digits, num_epochs=NUM_EPOCHS, seed=3, checkpoint=path, progress=False)
    assert f"resuming after epoch {stopped_at} of {NUM_EPOCHS}" in capsys.readouterr().out
    assert [e["epoch"] for e in history.epochs] == list(range(1, NUM_EPOCHS + 1))

    reference = tiny(digits)
    expected = fit(reference, digits, num_epochs=NUM_EPOCHS, seed=3, progress=False)
    assert without_seconds(history) == without_seconds(expected)
    assert_same_weights(resumed, reference)
    loaded, meta = load_checkpoint(path, digits, expect_model="tiny_cnn")
    assert meta["metrics"] == history.final
    assert_same_weights(loaded, reference)
    blob = torch.load(path, weights_only=True)
    assert blob["run"]["finished"] and "optimizer" not in blob["run"]  # only the result stays


def test_ctrl_c_then_rerun_equals_uninterrupted_distillation(digits, tmp_path, capsys):
    """Distillation of a student with dropout, AdamW and scarce labels, interrupted in the
    middle of epoch 3: the rerun restores optimizer, schedule and random states."""
    teacher = tiny(digits, name="digits_teacher")
    fit(teacher, digits, num_epochs=1, progress=False)
    data = digits.with_label_fraction(0.2)
    kwargs = dict(teacher=teacher, num_epochs=4, optimizer="adamw", lr=3e-3, seed=1)
    kwargs |= dict(batch_size=128, progress=False)
    path = tmp_path / "kd.pt"

    student = tiny(data, seed=2, name="mnist_student")
    steps_per_epoch = -(-len(data.train) // 128)
    hook = student.register_forward_hook(Interrupt(2 * steps_per_epoch + 3))
    with pytest.raises(KeyboardInterrupt):
        fit(student, data, checkpoint=path, **kwargs)
    hook.remove()
    assert checkpoint_epoch(path) == 2

    resumed = tiny(data, seed=2, name="mnist_student")
    history = fit(resumed, data, checkpoint=path, **kwargs)
    assert "resuming after epoch 2 of 4" in capsys.readouterr().out
    reference = tiny(data, seed=2, name="mnist_student")
    expected = fit(reference, data, **kwargs)
    assert without_seconds(history) == without_seconds(expected)
    assert_same_weights(resumed, reference)


def test_finished_run_is_returned_without_training(digits, tmp_path, capsys):
    path = tmp_path / "s.pt"
    trained = tiny(digits)
    first = fit(trained, digits, num_epochs=2, checkpoint=path, progress=False)
    capsys.readouterr()
    again = tiny(digits, seed=9)
    second = fit(again, digits, num_epochs=2, checkpoint=path, progress=False)
    assert "already finished (2 epochs); not training" in capsys.readouterr().out
    assert second.epochs == first.epochs  # seconds included: nothing was re-run
    assert_same_weights(again, trained)
    assert not again.training


def test_other_settings_or_resume_false_start_afresh(digits, tmp_path, capsys):
    path = tmp_path / "s.pt"
    fit(tiny(digits), digits, num_epochs=1, checkpoint=path, progress=False)
    capsys.readouterr()
    history = fit(tiny(digits), digits, num_epochs=2, lr=0.1, checkpoint=path, progress=False)
    out = capsys.readouterr().out
    assert "not resuming" in out and "lr=0.05 (this run: 0.1)" in out
    assert "num_epochs=1 (this run: 2)" in out and len(history.epochs) == 2
    assert load_checkpoint(path)[1]["settings"]["lr"] == 0.1  # overwritten by the new run

    fit(tiny(digits), digits, num_epochs=2, lr=0.1, checkpoint=path, resume=False, progress=False)
    assert "finished" not in capsys.readouterr().out  # trained again, no message


def test_other_labels_or_plain_checkpoint_start_afresh(digits, tmp_path, capsys):
    path = tmp_path / "s.pt"
    fit(tiny(digits), digits, num_epochs=1, checkpoint=path, progress=False)
    capsys.readouterr()
    # With a teacher every sample trains (train_samples agree): only the labels differ.
    scarce = digits.with_label_fraction(0.5)
    teacher = tiny(digits)
    fit(tiny(digits), digits, teacher=teacher, num_epochs=1, checkpoint=path, progress=False)
    capsys.readouterr()
    fit(tiny(digits), scarce, teacher=teacher, num_epochs=1, checkpoint=path, progress=False)
    assert "training labels or teacher weights differ" in capsys.readouterr().out

    save_checkpoint(path, tiny(digits), digits)
    fit(tiny(digits), digits, num_epochs=1, checkpoint=path, progress=False)
    assert "holds no training run" in capsys.readouterr().out


def test_teacher_from_run_continues_an_interrupted_teacher(digits, tmp_path, capsys):
    from kdbook.config import make_config
    from kdbook.recipes import teacher_from_run

    cfg = make_config(teacher="tiny_cnn", num_epochs=2, run_dir=str(tmp_path))
    path = tmp_path / "teacher.pt"
    kwargs = dict(num_epochs=2, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
    model = tiny(digits, seed=cfg.seed)
    model.register_forward_hook(Interrupt(-(-len(digits.train) // cfg.batch_size) + 1))
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits, checkpoint=path, progress=False, **kwargs)
    assert checkpoint_epoch(path) == 1
    capsys.readouterr()

    teacher, meta = teacher_from_run(cfg, digits, num_epochs=2, progress=False)
    out = capsys.readouterr().out
    assert "holds an unfinished run of tiny_cnn; continuing it" in out
    assert "resuming after epoch 1 of 2" in out and "training tiny_cnn" not in out
    reference = tiny(digits, seed=cfg.seed)
    expected = fit(reference, digits, progress=False, **kwargs)
    assert meta["metrics"] == {**expected.final, "seconds": meta["metrics"]["seconds"]}
    assert_same_weights(teacher, reference)
