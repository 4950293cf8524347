"""Metrics on hand-made logits; latency and size; predict on digits."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook.evaluate import (
    accuracy,
    agreement,
    calibration_bins,
    confusion_matrix,
    ece,
    latency_ms,
    median_ms,
    model_costs,
    per_class_accuracy,
    predict,
    size_kb,
)
from kdbook.models import build_model

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


def test_median_ms_times_after_warmup_with_sync_around_each_call():
    calls = []
    ms = median_ms(
        lambda: calls.append("call"), warmup=2, repeats=3, sync=lambda: calls.append("s")
    )
    assert calls == ["s", "call", "s"] * 5  # 2 untimed + 3 timed, each between two syncs
    assert isinstance(ms, float) and ms >= 0
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        median_ms(lambda: None, repeats=0)


def test_model_costs_match_the_single_measurements(digits):
    from kdbook.models import count_params, flops

    model = build_model("tiny_cnn", digits)
    costs = model_costs(model, (1, 8, 8), batch_sizes=(1, 16))
    assert list(costs) == [
        "params",
        "FLOPs",
        "latency batch 1 (ms)",
        "latency batch 16 (ms)",
        "size (KB)",
    ]
    assert costs["params"] == count_params(model) == 694
    assert costs["FLOPs"] == flops(model, (1, 1, 8, 8))
    assert costs["size (KB)"] == size_kb(model)
    assert costs["latency batch 1 (ms)"] > 0 and costs["latency batch 16 (ms)"] > 0
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\)"):
        model_costs(model, (1, 8, 0))
