"""Metrics on hand-made logits, the t-interval against scipy, and compare on digits."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from scipy import stats

from kdbook.evaluate import (
    Comparison,
    accuracy,
    agreement,
    calibration_bins,
    compare,
    confusion_matrix,
    ece,
    first_layer_norm,
    latency_ms,
    mean_ci,
    per_class_accuracy,
    predict,
    size_kb,
    summarize,
)
from kdbook.models import build_model
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")


def one_hot_logits(predictions: list[int], num_classes: int = 3, scale: float = 5.0):
    return scale * torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float()


LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
PREDS = [0, 1, 1, 1, 2, 0, 2, 0]  # 6 of 8 right; class 0: 2/3, class 1: 2/2, class 2: 2/3


def test_accuracy_and_per_class():
    logits = one_hot_logits(PREDS)
    assert accuracy(logits, LABELS) == pytest.approx(75.0)
    per_class = per_class_accuracy(logits, LABELS, ["a", "b", "c"])
    assert list(per_class.index) == ["a", "b", "c"]
    assert per_class.tolist() == pytest.approx([200 / 3, 100.0, 200 / 3])


def test_confusion_matrix_counts():
    logits = one_hot_logits(PREDS)
    matrix = confusion_matrix(logits, LABELS, 3)
    assert matrix.shape == (3, 3) and matrix.dtype == torch.int64
    assert int(matrix.sum()) == len(LABELS)
    assert int(matrix.diag().sum()) == 6
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]  # rows: true, cols: predicted
    assert matrix.sum(1).tolist() == torch.bincount(LABELS, minlength=3).tolist()


def test_agreement():
    student = one_hot_logits([0, 1, 2, 2])
    teacher = one_hot_logits([0, 1, 1, 0])
    assert agreement(student, teacher) == pytest.approx(50.0)
    assert agreement(teacher, teacher) == pytest.approx(100.0)


def test_ece_zero_when_confidence_equals_accuracy():
    # Two classes, softmax([log 3, 0]) = (0.75, 0.25): confidence 0.75, and 3 of 4 right.
    logits = torch.tensor([[math.log(3.0), 0.0]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert ece(logits, labels) == pytest.approx(0.0, abs=1e-4)
    # Certain and always right is calibrated too.
    assert ece(one_hot_logits([0, 1, 2], scale=50.0), torch.tensor([0, 1, 2])) == pytest.approx(
        0.0, abs=1e-4
    )


def test_ece_positive_when_overconfident():
    # Confidence ~0.99 but only half right: ECE ~ 49 points.
    logits = one_hot_logits([0, 0, 0, 0], num_classes=2, scale=math.log(99.0))
    labels = torch.tensor([0, 1, 0, 1])
    assert ece(logits, labels) == pytest.approx(49.0, abs=0.01)


def test_calibration_bins_partition_the_samples():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g) * 3
    labels = torch.randint(0, 4, (50,), generator=g)
    bins = calibration_bins(logits, labels, num_bins=5)
    assert len(bins) == 5 and int(bins["count"].sum()) == 50
    filled = bins[bins["count"] > 0]
    assert ((filled["confidence"] > filled["low"]) & (filled["confidence"] <= filled["high"])).all()


@pytest.mark.parametrize("values", [[93.0, 94.0, 95.0], [1.0, 4.0], [0.5, 0.7, 0.2, 0.9, 0.4]])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_is_the_t_interval(values, confidence):
    mean, half = mean_ci(values, confidence)
    n = len(values)
    hand_mean = sum(values) / n
    sd = math.sqrt(sum((v - hand_mean) ** 2 for v in values) / (n - 1))
    low, high = stats.t.interval(confidence, n - 1, loc=hand_mean, scale=sd / math.sqrt(n))
    assert mean == pytest.approx(hand_mean)
    assert half == pytest.approx((high - low) / 2)
    assert mean - half == pytest.approx(low)


def test_mean_ci_one_value_and_none():
    mean, half = mean_ci([3.0])
    assert mean == 3.0 and math.isnan(half)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_latency_and_size(digits):
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    model.train()
    ms = latency_ms(model, (4, 1, 8, 8), warmup=1, repeats=3)
    assert isinstance(ms, float) and ms > 0
    assert model.training  # measured on a copy
    kb = size_kb(model)
    assert kb > 0
    # The state_dict holds at least the float32 parameters.
    assert kb * 1024 >= 4 * sum(p.numel() for p in model.parameters())


def test_predict_restores_mode_and_matches_forward(digits):
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    logits = predict(model, digits, "val")
    assert logits.shape == (len(digits.val), 10) and model.training
    model.eval()
    with torch.no_grad():
        expected = model(digits.normalize(digits.val.images))
    torch.testing.assert_close(logits, expected)


def test_first_layer_norm_reads_the_first_weight():
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    assert first_layer_norm(model) == pytest.approx(model.features[0][0].weight.norm().item())


def test_compare_on_digits(digits, monkeypatch):
    import kdbook.train

    torch.manual_seed(0)
    teacher = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    fit(teacher, digits, num_epochs=1, progress=False)
    starts = []  # (seed, distilled?, initial weights) of every fit compare makes

    def recording_fit(model, data, **kwargs):
        starts.append((kwargs["seed"], "teacher" in kwargs, copy.deepcopy(model.state_dict())))
        return fit(model, data, **kwargs)

    monkeypatch.setattr(kdbook.train, "fit", recording_fit)
    result = compare(
        "tiny_cnn", teacher, digits, seeds=[0, 1], num_epochs=1, setting="test", progress=False
    )
    # Per seed: one scratch and one KD run, starting from identical weights.
    assert [(seed, kd) for seed, kd, _ in starts] == [(0, False), (0, True), (1, False), (1, True)]
    for (_, _, scratch), (_, _, distilled) in (starts[0:2], starts[2:4]):
        assert all(torch.equal(scratch[k], distilled[k]) for k in scratch)
    assert not torch.equal(starts[0][2]["head.1.weight"], starts[2][2]["head.1.weight"])
    assert isinstance(result, Comparison) and result.setting == "test"
    per_seed = result.per_seed
    assert list(per_seed.index) == [0, 1] and per_seed.index.name == "seed"
    assert list(per_seed.columns) == [
        "init_norm",
        "student (scratch)",
        "student (KD)",
        "gain (KD - scratch)",
    ]
    # Both students of a seed start from the same weights; another seed, other weights.
    for seed in (0, 1):
        torch.manual_seed(seed)
        init = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
        assert per_seed.loc[seed, "init_norm"] == pytest.approx(first_layer_norm(init))
    assert per_seed.loc[0, "init_norm"] != per_seed.loc[1, "init_norm"]
    gain = per_seed["student (KD)"] - per_seed["student (scratch)"]
    assert per_seed["gain (KD - scratch)"].tolist() == pytest.approx(gain.tolist())
    assert per_seed[["student (scratch)", "student (KD)"]].stack().between(0, 100).all()

    summary = result.summary
    assert list(summary.index) == ["student (scratch)", "student (KD)", "gain (KD - scratch)"]
    assert list(summary.columns) == ["mean", "ci95", "n"]
    assert (summary["n"] == 2).all()
    for method in summary.index:
        mean, half = mean_ci(per_seed[method].tolist())
        assert summary.loc[method, "mean"] == pytest.approx(mean)
        assert summary.loc[method, "ci95"] == pytest.approx(half)
    row = result.row()
    assert row["num_seeds"] == 2 and row["setting"] == "test"
    assert row["gain_mean"] == pytest.approx(summary.loc["gain (KD - scratch)", "mean"])
    assert isinstance(result.verdict(), str)


def test_compare_needs_seeds(digits):
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        compare("tiny_cnn", None, digits, seeds=[])


def synthetic(gains: list[float]) -> Comparison:
    per_seed = pd.DataFrame(
        {
            "student (scratch)": [80.0] * len(gains),
            "student (KD)": [80.0 + g for g in gains],
            "gain (KD - scratch)": gains,
        },
        index=pd.Index(range(len(gains)), name="seed"),
    )
    summary = summarize(per_seed, list(per_seed.columns))
    return Comparison(per_seed, summary, "synthetic")


def test_verdict_wording():
    helps = synthetic([2.0, 2.2, 1.8, 2.1]).verdict()
    assert helps.startswith("KD helps: gain +2.0 ± ") and helps.endswith("excludes 0")
    hurts = synthetic([-3.0, -3.1, -2.9]).verdict()
    assert hurts.startswith("KD hurts: gain -3.0 ± ") and hurts.endswith("excludes 0")
    noise = synthetic([1.0, -1.0, 0.5, -0.2]).verdict()
    assert noise.startswith("inside seed noise: gain +0.1 ± ") and noise.endswith("includes 0")
    one_seed = synthetic([5.0]).verdict()
    assert one_seed == "one seed, no interval: gain +5.0 points (run more seeds to judge)"


def test_compare_methods_shares_the_start_and_gives_fresh_adapters(digits) -> None:
    from kdbook.evaluate import SCRATCH, compare_methods
    from kdbook.losses import HintLoss
    from kdbook.models import build_model

    teacher = build_model("tiny_cnn", 10, in_channels=1, image_size=8).eval()
    made = []

    def make_hint():
        made.append(HintLoss(4, 4))
        return made[-1]

    result = compare_methods(
        "tiny_cnn",
        digits,
        {
            "logit KD": {"teacher": teacher},
            "hint": {"teacher": teacher, "feature_loss": make_hint, "feature_weight": 1.0},
        },
        seeds=[0, 1],
        baseline="logit KD",
        num_epochs=1,
    )
    assert len(made) == 2 and made[0] is not made[1], "one fresh adapter per seed"
    assert list(result.summary.index) == [SCRATCH, "logit KD", "hint"]
    assert result.summary.loc[SCRATCH, "gain_vs_scratch"] == 0
    assert result.summary.loc["logit KD", "gain_vs_logit KD"] == 0
    per_seed = result.per_seed
    expected = (per_seed["hint"] - per_seed[SCRATCH]).mean()
    assert abs(result.summary.loc["hint", "gain_vs_scratch"] - expected) < 1e-9
    assert (result.summary["time_ratio_vs_scratch"] > 0).all()
    assert per_seed.loc[0, "init_norm"] != per_seed.loc[1, "init_norm"]


def test_seed_rows_flatten_the_per_seed_table() -> None:
    from kdbook.book import metrics_rows

    rows = synthetic([2.0, -1.0]).seed_rows()
    assert rows == [
        {
            "setting": "synthetic",
            "seed": 0,
            "scratch_test_accuracy": 80.0,
            "kd_test_accuracy": 82.0,
            "gain": 2.0,
        },
        {
            "setting": "synthetic",
            "seed": 1,
            "scratch_test_accuracy": 80.0,
            "kd_test_accuracy": 79.0,
            "gain": -1.0,
        },
    ]
    # a sweep table gets one row per seed from them
    flat = metrics_rows({"comparisons": [{"setting": "synthetic"}], "per_seed": rows, "x": 1})
    assert [r["seed"] for r in flat] == [0, 1] and all(r["x"] == 1 for r in flat)
