"""The GPU path of fit: run where CUDA is present (skipped on CPU-only machines and in CI).

Run them on a GPU machine with ``pytest tests/test_gpu.py``; each checks the result, not
only that it runs.
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny

from kdbook.distill import cache_teacher_logits
from kdbook.runtime import resolve_precision
from kdbook.train import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_precision_is_bf16_or_fp16_on_a_gpu() -> None:
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_fit_learns_on_the_gpu_at_every_precision(digits, precision: str) -> None:
    model = tiny(digits)
    history = fit(model, digits, num_epochs=5, device="cuda", precision=precision, progress=False)
    assert history.settings["precision"] == precision
    assert history.final["val_acc"] > 60  # chance is 10%
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.float32


def test_gpu_distillation_with_a_cache_matches_the_live_teacher(digits) -> None:
    teacher = tiny(digits, name="digits_teacher")
    fit(teacher, digits, num_epochs=2, device="cuda", precision="fp32", progress=False)
    cache = cache_teacher_logits(teacher, digits, device="cuda", precision="fp32", progress=False)
    live, cached = tiny(digits), tiny(digits)
    common = dict(num_epochs=2, device="cuda", precision="fp32", progress=False)
    h_live = fit(live, digits, teacher=teacher, augment=False, **common)
    h_cached = fit(cached, digits, teacher=cache, **common)
    # cuDNN is not bit-reproducible: compare with a tolerance
    assert h_cached.final["val_acc"] == pytest.approx(h_live.final["val_acc"], abs=3)


def test_channels_last_and_fused_optimizer_are_used_on_the_gpu(digits) -> None:
    model = tiny(digits)
    fit(model, digits, num_epochs=1, device="cuda", progress=False)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.in_channels > 1  # where NHWC and NCHW strides differ
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
