"""kdbook bench: the three paths run end to end (smoke mode) and measure what they claim.

No wall-clock assertion: the machine running the tests may be busy.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torchvision import transforms

import kdbook.bench.run as bench  # where run_bench looks its batch helpers up
from kdbook.bench import (
    CACHED,
    KDBOOK,
    LM_CACHED,
    LM_KD,
    LM_PLAIN,
    LM_STACKED,
    SEED_STYLE,
    TEACHER_ALONE,
    PILDataset,
    run_bench,
)
from kdbook.cli import main
from kdbook.data import Loader, synthetic_cifar10
from kdbook.distill import cache_teacher_logits
from kdbook.losses import kd_loss
from kdbook.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def smoke(digits):
    """One smoke bench on digits, with the data set's augmentation (as the sources train)."""
    return run_bench("classroom", smoke=True, data=digits)


def test_smoke_bench_is_well_formed(smoke) -> None:
    assert [p.name for p in smoke.paths] == [SEED_STYLE, KDBOOK, CACHED]
    for p in smoke.paths:
        assert p.images == 3 * 128 and p.seconds > 0 and p.images_per_s > 0
        assert p.rounds == [pytest.approx(p.images / p.seconds)]
        assert len(p.losses) == 3 and all(math.isfinite(v) for v in p.losses)
        assert p.peak_host_mb is not None and p.peak_host_mb >= 0
        assert p.peak_device_mb is None  # a CPU run
    assert smoke.path(SEED_STYLE).ratio == 1.0
    s = smoke.settings
    assert (s["preset"], s["dataset"], s["synthetic"], s["device"]) == (
        "classroom",
        "digits",
        False,
        "cpu",
    )
    assert (s["steps"], s["warmup"], s["repeats"]) == (3, 1, 1)
    assert (s["batch_size"], s["num_workers"]) == (128, 2)
    assert s["teacher"] == "digits_teacher" and s["student"] == "tiny_cnn"
    assert s["threads"] == 1  # the single_thread fixture's setting, reported
    json.dumps(smoke.to_dict())  # JSON-ready
    assert "losses" not in smoke.to_dict()["paths"][0]


def test_cache_replays_the_teachers_view_with_augmentation(smoke) -> None:
    s = smoke.settings
    assert s["augment"] is True and s["cache_views"] == 1
    assert all(p.valid for p in smoke.paths)
    assert "stored augmented view" in smoke.path(CACHED).note
    assert s["seed_style_step"] == "fp32" and s["kdbook_step"] == "fp32"  # on a CPU
    table = smoke.table()
    assert "kdbook + cached logits" in table and "same recipe" in table
    assert "SYNTHETIC" not in table and " NO" not in table
    assert "yes (1 stored view per image, not a fresh one per step)" in table


def test_the_language_model_lines_are_timed_against_the_plain_step(smoke) -> None:
    """15's token-KD step (teacher live, logits cached) and students under vmap, each as a
    ratio to the student's plain step measured in the same run."""
    assert [p.name for p in smoke.lm] == [LM_PLAIN, LM_KD, LM_CACHED, LM_STACKED]
    for p in smoke.lm:
        assert p.images == 3 * 32 * 64 and p.images_per_s > 0  # characters: 3 steps x 32 x 64
        assert len(p.losses) == 3 and all(math.isfinite(v) for v in p.losses)
    assert smoke.lm[0].ratio == 1.0 and all(p.ratio > 0 for p in smoke.lm)
    s = smoke.settings
    assert (s["lm_teacher"], s["lm_student"]) == ("char_small", "char_tiny")
    assert [r["name"] for r in smoke.to_dict()["lm"]] == [p.name for p in smoke.lm]
    assert "language models (15)" in smoke.table()


def test_teacher_alone_is_timed_apart_without_a_ratio(smoke) -> None:
    t = smoke.teacher_alone
    assert t.name == TEACHER_ALONE and t.images == 3 * 128 and t.images_per_s > 0
    assert math.isnan(t.ratio) and not t.valid
    assert all(math.isfinite(v) for v in t.losses)
    assert smoke.to_dict()["teacher_alone"]["images_per_s"] == t.images_per_s
    line = next(x for x in smoke.table().splitlines() if x.startswith(TEACHER_ALONE))
    assert line.split()[-1] == "-"


DELAY = 0.2  # seconds added to every batch of the path made slower


@pytest.mark.parametrize("slowed", [SEED_STYLE, KDBOOK])
def test_the_ratio_follows_a_path_made_slower(digits, monkeypatch, slowed: str) -> None:
    """A sleep in one path's batch iterator (fetching a batch is part of a timed step): the
    slowed path's images/s is bounded by the sleep, and the ratio moves its way."""
    name = "_seed_style_batches" if slowed == SEED_STYLE else "_kdbook_batches"
    real = getattr(bench, name)

    def slow_batches(*args):
        batches = real(*args)
        try:
            for batch in batches:
                time.sleep(DELAY)
                yield batch
        finally:
            batches.close()

    monkeypatch.setattr(bench, name, slow_batches)
    result = run_bench("classroom", smoke=True, augment=False, num_workers=0, data=digits)
    seed_style, kdbook, cached = (result.path(n) for n in (SEED_STYLE, KDBOOK, CACHED))
    slow = seed_style if slowed == SEED_STYLE else kdbook
    # 3 timed steps of 128 images take at least 3 sleeps
    assert slow.seconds >= 3 * DELAY and slow.images_per_s <= 128 / DELAY
    assert seed_style.ratio == 1.0
    if slowed == SEED_STYLE:  # kdbook's paths now run faster than the sources'
        assert kdbook.ratio > 1 and cached.ratio > 1
    else:  # kdbook's paths (the cached one too: the same batch iterator) run slower
        assert kdbook.ratio < 1 and cached.ratio < 1
        assert result.teacher_alone.images_per_s <= 128 / DELAY
    for p in (kdbook, cached):
        assert p.ratio > 0 and math.isfinite(p.ratio)


def test_without_augmentation_the_cache_is_valid_and_gives_the_same_losses(digits) -> None:
    result = run_bench("classroom", smoke=True, augment=False, data=digits)
    assert result.settings["cache_views"] == 0
    assert all(p.valid for p in result.paths)
    # The same batches and initial weights: looking the teacher's logits up is the same
    # training as computing them each step.
    computed, cached = result.path(KDBOOK).losses, result.path(CACHED).losses
    assert cached == pytest.approx(computed, rel=1e-5, abs=1e-6)


def test_cached_logits_equal_the_teachers_on_the_views_they_were_computed_on(digits) -> None:
    torch.manual_seed(0)
    teacher = build_model("digits_teacher", 10, in_channels=1, image_size=8).eval()
    student = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    for views in (0, 1):
        cache = cache_teacher_logits(teacher, digits, views=views, progress=False)
        logits = cache.logits[0]
        loader = Loader(digits, digits.train, 128, shuffle=True, seed=1)
        loader.replay = None if cache.views is None else cache.views[0]
        with torch.no_grad():
            for x, y, idx in loader:
                fresh = kd_loss(student(x), teacher(x), y)
                looked_up = kd_loss(student(x), logits[idx], y)
                assert looked_up.item() == pytest.approx(fresh.item(), rel=1e-5)
    with torch.no_grad():  # a fresh random view: the cached logits are stale
        x, _, idx = next(iter(Loader(digits, digits.train, 128, shuffle=True, augment=True)))
        stale = (teacher(x) - logits[idx]).abs().max().item()
    assert stale > 1e-3


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_seed_style_samples_match_kdbooks_normalisation(digits, dataset: str) -> None:
    data = digits if dataset == "digits" else synthetic_cifar10(16)
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    samples = PILDataset(data.train, plain)
    for i in (0, 5):
        image, label = samples[i]
        expected = data.normalize(data.train.images[i : i + 1])[0]
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
        assert label == data.train.labels[i].item()


def test_synthetic_cifar10_is_cifar_shaped() -> None:
    data = synthetic_cifar10(64)
    assert data.name == "synthetic-cifar10:64"
    assert data.train.images.shape == (64, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.num_classes == 10 and data.augment.pad == 4 and data.augment.flip


def test_cli_bench_smoke_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "smoke mode" in text
    saved = json.loads(out.read_text())
    assert [p["name"] for p in saved["paths"]] == [SEED_STYLE, KDBOOK, CACHED]
    assert all(p["images_per_s"] > 0 for p in saved["paths"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--synthetic"], "synthetic data is for the cifar10 preset only"),
        (["bench", "--steps", "0"], "steps must be an integer >= 1, got 0"),
        (["bench", "--threads", "0"], "threads must be an integer >= 1, got 0"),
        (["bench", "--repeats", "0"], "repeats must be an integer >= 1, got 0"),
        (["bench", "--preset", "imagenet"], "invalid choice"),
    ],
)
def test_cli_bench_rejects_bad_input(argv, message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_bench_trains_on_the_threads_fit_would_choose(digits, monkeypatch) -> None:
    """Without --threads the paths run as a notebook's training does (threads='auto': one
    thread for the classroom's models), whatever torch was set to, which is then restored."""
    from kdbook import runtime

    monkeypatch.setattr(runtime, "_cores", 2)
    torch.set_num_threads(2)
    result = run_bench("classroom", smoke=True, data=digits)
    assert result.settings["threads"] == 1
    assert torch.get_num_threads() == 2
    assert run_bench("classroom", smoke=True, data=digits, threads=2).settings["threads"] == 2
