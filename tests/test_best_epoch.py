"""BestEpoch: early stopping chosen on validation at a stated fraction of the schedule."""

from __future__ import annotations

import pytest
import torch

from kdbook.config import make_config
from kdbook.data import load_dataset
from kdbook.evaluate import accuracy, predict
from kdbook.models import build_model
from kdbook.recipes import early_stopped_in_run
from kdbook.train import BestEpoch, fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_the_model_fit_returns_is_the_best_validation_epoch_within_the_fraction(digits) -> None:
    torch.manual_seed(0)
    model = build_model("tiny_cnn", digits)
    hook = BestEpoch(0.5)
    history = fit(model, digits, num_epochs=4, lr=0.05, seed=0, hooks=[hook], progress=False)
    early = [e["val_acc"] for e in history.epochs[:2]]
    assert hook.best_epoch == 1 + early.index(max(early)) and hook.best_val_acc == max(early)
    assert history.settings["best_epoch_within"] == 0.5
    val = accuracy(predict(model, digits, "val", "cpu"), digits.val.labels)
    assert val == pytest.approx(hook.best_val_acc)  # the weights of that epoch, not the last


@pytest.mark.parametrize("within", [0, 1.5, "half"])
def test_a_fraction_outside_0_1_is_refused_naming_it(within) -> None:
    with pytest.raises(
        ValueError, match=rf"within must be a fraction of training in \(0, 1\], got {within!r}"
    ):
        BestEpoch(within)


def test_the_run_folders_early_stopped_model_is_trained_once(tmp_path, digits) -> None:
    cfg = make_config(run_dir=str(tmp_path), lr=0.05)
    net, chosen = early_stopped_in_run(
        cfg, digits, "tiny_cnn", "early.pt", within=0.5, num_epochs=4
    )
    assert chosen["epoch"] in (1, 2) and chosen["within"] == 0.5 and chosen["num_epochs"] == 4
    assert accuracy(predict(net, digits, "val", "cpu"), digits.val.labels) == pytest.approx(
        chosen["val_acc"]
    )
    written = (tmp_path / "early.pt").stat().st_mtime_ns
    again, same = early_stopped_in_run(
        cfg, digits, "tiny_cnn", "early.pt", within=0.5, num_epochs=4
    )
    assert same == chosen and (tmp_path / "early.pt").stat().st_mtime_ns == written
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    _, other = early_stopped_in_run(cfg, digits, "tiny_cnn", "early.pt", within=0.25, num_epochs=4)
    assert other["epoch"] == 1  # other settings: trained again
