"""threads='auto': one intra-op thread for tiny runs, the cores for big ones, set per run."""

from __future__ import annotations

import pytest
import torch

from kdbook import runtime
from kdbook.config import config_from, make_config
from kdbook.models import build_model, flops
from kdbook.runtime import ONE_THREAD_FLOPS, choose_threads, step_flops, use_threads

# resnet18_cifar on 8 x 8 digits at this batch: a step well above ONE_THREAD_FLOPS
BIG_BATCH = 1024


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_cores", 4)  # as if torch's default were 4 cores
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    yield
    use_threads("auto")
    torch.set_num_threads(before)


def test_step_flops_counts_convolutions_and_linear_layers_as_torch_does(digits):
    for name in ("tiny_cnn", "digits_teacher", "simple_resnet"):
        model = build_model(name, digits)
        assert step_flops([model], (1, 8, 8), 1) == flops(model, (1, 1, 8, 8)), name
    tiny, teacher = build_model("tiny_cnn", digits), build_model("digits_teacher", digits)
    both = step_flops([tiny, teacher], (1, 8, 8), 64)
    assert both == 64 * (flops(tiny, (1, 1, 8, 8)) + flops(teacher, (1, 1, 8, 8)))


def test_auto_gives_the_classroom_one_thread_and_big_runs_the_cores(digits):
    tiny, teacher = build_model("tiny_cnn", digits), build_model("digits_teacher", digits)
    assert choose_threads(tiny, teacher, data=digits, batch_size=64) == 1
    assert torch.get_num_threads() == 1
    big = build_model("resnet18_cifar", digits)
    assert step_flops([big], (1, 8, 8), BIG_BATCH) > ONE_THREAD_FLOPS
    assert choose_threads(big, data=digits, batch_size=BIG_BATCH) == 4
    assert torch.get_num_threads() == 4


def test_a_number_wins_and_the_sweep_cap_limits_auto(digits, monkeypatch):
    big = build_model("resnet18_cifar", digits)
    use_threads(3)
    assert choose_threads(build_model("tiny_cnn", digits), data=digits, batch_size=64) == 3
    use_threads("auto")
    monkeypatch.setenv(runtime.THREADS_ENV, "2")  # kdbook sweep --jobs 2 on 4 cores
    assert choose_threads(big, data=digits, batch_size=BIG_BATCH) == 2
    monkeypatch.setenv(runtime.THREADS_ENV, "two")
    with pytest.raises(ValueError, match=r"\$KDBOOK_THREADS must be an integer >= 1, got 'two'"):
        choose_threads(big, data=digits, batch_size=BIG_BATCH)


def test_fit_sets_the_threads_before_training(digits):
    from kdbook.train import fit

    torch.set_num_threads(2)
    fit(build_model("tiny_cnn", digits), digits, num_epochs=1, progress=False)
    assert torch.get_num_threads() == 1


def test_threads_is_a_checked_parameter_that_config_from_applies():
    with pytest.raises(ValueError, match="threads must be 'auto' or an integer >= 1, got 0"):
        make_config(threads=0)
    with pytest.raises(ValueError, match="threads must be 'auto' or an integer >= 1"):
        use_threads("many")
    assert make_config().threads == "auto"
    config_from({"threads": 3})
    assert runtime._policy == 3


def test_sweep_workers_divide_the_cores(monkeypatch):
    import os

    from kdbook.machinery.sweep import _share_cores

    monkeypatch.setenv(runtime.THREADS_ENV, "")
    _share_cores("1")
    assert os.environ[runtime.THREADS_ENV] == "1"


def test_the_cores_are_read_before_a_small_run_lowers_torchs_threads(digits, monkeypatch):
    """A tiny run first (one thread), then a big one: the big one still gets every core."""
    monkeypatch.setattr(runtime, "_cores", None)  # not read yet, as in a fresh process
    torch.set_num_threads(3)  # torch's default here
    assert choose_threads(build_model("tiny_cnn", digits), data=digits, batch_size=64) == 1
    big = build_model("resnet18_cifar", digits)
    assert choose_threads(big, data=digits, batch_size=BIG_BATCH) == 3
    assert torch.get_num_threads() == 3
