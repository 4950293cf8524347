"""``kdbook train``, alone and under torchrun: two gloo processes train what one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdbook.checkpoint import save_checkpoint
from kdbook.cli import main
from kdbook.data import load_dataset
from kdbook.models import build_model
from kdbook.train import FreezeHead, fit

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kdbook_train(*args: str, nproc: int = 1, cwd: Path) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, "-m", "kdbook", "train", "--no-progress", *args]
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """An (untrained) digits teacher checkpoint: distilling from it exercises every path."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    teacher = build_model("digits_teacher", 10, in_channels=1, image_size=8)
    return save_checkpoint(tmp_path_factory.mktemp("t") / "teacher.pt", teacher, data)


def test_two_gloo_processes_match_one_process(tmp_path, teacher_file) -> None:
    # vit_tiny: no BatchNorm, no dropout, so the only difference is float summation order.
    common = ["--model", "vit_tiny", "--teacher", str(teacher_file), "-p", "num_epochs", "2"]
    single = kdbook_train(*common, "--out", "one.pt", cwd=tmp_path)
    ddp = kdbook_train(*common, "--out", "two.pt", nproc=2, cwd=tmp_path)
    # only rank 0 speaks and writes
    assert ddp.stdout.count("train: vit_tiny distilled") == 1, ddp.stdout
    assert "2 process(es)" in ddp.stdout and "1 process(es)" in single.stdout
    one = torch.load(tmp_path / "one.pt", weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two.pt", weights_only=True)["state_dict"]
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    r1 = json.loads((tmp_path / "one.json").read_text())
    r2 = json.loads((tmp_path / "two.json").read_text())
    assert (r1["settings"]["world_size"], r2["settings"]["world_size"]) == (1, 2)
    for e1, e2 in zip(r1["epochs"], r2["epochs"], strict=True):
        assert e1["val_acc"] == pytest.approx(e2["val_acc"], abs=1e-9)  # metrics summed over ranks
        assert e1["train_loss"] == pytest.approx(e2["train_loss"], rel=1e-5)
        assert e1["kl"] == pytest.approx(e2["kl"], rel=1e-4)
    assert r1["test_acc"] == pytest.approx(r2["test_acc"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "one.json",
        "one.pt",
        "two.json",
        "two.pt",
    ]


@pytest.mark.parametrize("model", ["vit_tiny", "tiny_cnn"])
def test_torchrun_equals_one_process_accumulating_over_the_same_chunks(tmp_path, model) -> None:
    # Each rank's slice of a global batch is the chunk accumulation_steps=2 would make, and
    # DDP averages the two gradients as accumulation sums them: the same arithmetic, so the
    # same model to the last bit, BatchNorm included (each slice normalised by itself).
    common = ["--model", model, "-p", "num_epochs", "2", "-p", "lr", "0.1"]
    kdbook_train(*common, "--accumulation-steps", "2", "--out", "acc.pt", cwd=tmp_path)
    kdbook_train(*common, "--out", "ddp.pt", nproc=2, cwd=tmp_path)
    acc = torch.load(tmp_path / "acc.pt", weights_only=True)["state_dict"]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)["state_dict"]
    for name, value in acc.items():
        if value.is_floating_point() and "running" not in name:
            assert torch.equal(value, ddp[name]), name
    r_acc = json.loads((tmp_path / "acc.json").read_text())["epochs"]
    r_ddp = json.loads((tmp_path / "ddp.json").read_text())["epochs"]
    assert [e["train_loss"] for e in r_acc] == pytest.approx([e["train_loss"] for e in r_ddp])


def test_train_resumes_a_finished_run_without_training(tmp_path, capsys) -> None:
    args = ["train", "--no-progress", "-p", "num_epochs", "1", "--out", str(tmp_path / "s.pt")]
    assert main(args) == 0
    first = json.loads((tmp_path / "s.json").read_text())
    assert main(args) == 0
    assert "already finished" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["epochs"] == first["epochs"]


def test_train_log_dir_writes_tensorboard_scalars(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs = tmp_path / "s.pt", tmp_path / "tb"
    args = ["train", "--no-progress", "-p", "num_epochs", "2", "--log-dir", str(logs)]
    assert main([*args, "--out", str(out)]) == 0
    events = EventAccumulator(str(logs))
    events.Reload()
    epochs = json.loads((tmp_path / "s.json").read_text())["epochs"]
    logged = [(e.step, e.value) for e in events.Scalars("val_acc")]
    assert logged == [(r["epoch"], pytest.approx(r["val_acc"], rel=1e-6)) for r in epochs]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "momentum", "0.5"], "parameter 'momentum' is not one kdbook train takes"),
        (["-p", "num_epochs", "0"], "num_epochs must be an integer >= 1, got 0"),
        (["--model", "resnet1000"], "--model must be 'student', 'teacher' or one of"),
        (["--out", "model.pth"], "--out must name a .pt file"),
        (["--teacher", "missing.pt"], "--teacher checkpoint missing.pt does not exist"),
        (["--accumulation-steps", "0"], "accumulation_steps must be an integer in"),
        (["--precision", "fp16"], "precision='fp16' needs a CUDA device"),
    ],
)
def test_train_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    out = [] if "--out" in args else ["--out", "x.pt"]
    assert main(["train", "--no-progress", *args, *out]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # nothing half-written


def _fit_rank(rank: int, world: int, store: str, out: str) -> None:
    """One gloo rank of a hint-distilled tiny_cnn with a frozen-head stage; rank 0 saves."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        weights = _hint_run(accumulation_steps=1)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


def _hint_run(accumulation_steps: int) -> dict[str, torch.Tensor]:
    """Train once; return the trained parameters of the student and of the hint adapter."""
    from kdbook.losses import HintLoss

    data = load_dataset("digits")
    torch.manual_seed(1)
    teacher = build_model("digits_teacher", 10, in_channels=1, image_size=8).eval()
    torch.manual_seed(0)
    student = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    hint = HintLoss(4, 128)
    fit(
        student,
        data,
        teacher=teacher,
        feature_loss=hint,
        feature_weight=0.5,
        hooks=[FreezeHead(0.5)],
        num_epochs=1,
        accumulation_steps=accumulation_steps,
        progress=False,
    )
    params = {f"student.{k}": v for k, v in student.named_parameters()}
    return params | {f"hint.{k}": v for k, v in hint.named_parameters()}


def test_feature_loss_and_frozen_head_under_ddp_equal_accumulation(tmp_path) -> None:
    # The adapter's parameters train in DDP too, the head waits, and each rank's slice is
    # the chunk accumulation_steps=2 makes: the same arithmetic, so the same parameters.
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.pt"
    mp.spawn(_fit_rank, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _hint_run(accumulation_steps=2)
    finally:
        torch.set_num_threads(before)
    ddp = torch.load(out, weights_only=True)
    assert single.keys() == ddp.keys() and any(k.startswith("hint.") for k in ddp)
    for name, value in single.items():
        assert torch.equal(value.detach(), ddp[name]), name
