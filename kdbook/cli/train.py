"""``kdbook train``: one model trained from the command line (one or several processes)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdbook.cli.common import add_parameter_option, parse_value, show, train_parameters_help

TRAIN_EPILOG = """\
examples:
  kdbook train --model teacher --out runs/t/teacher.pt          the preset's teacher
  kdbook train --teacher runs/t/teacher.pt --out runs/t/kd.pt   the preset's student, distilled
  kdbook train --out runs/t/alone.pt                            the student alone
  kdbook train -p preset cifar10 -p num_epochs 30 --model teacher --out runs/c/teacher.pt
  torchrun --standalone --nproc-per-node 2 -m kdbook train --teacher T.pt --out kd.pt

One fit() call (kdbook.train.fit), the same under torchrun: there every process takes its
slice of each global batch of batch_size (DistributedDataParallel, NCCL on GPUs, gloo on
CPUs), and only rank 0 prints and writes. OUT gets the checkpoint (rewritten every epoch,
so rerunning the command resumes an interrupted run) and OUT.json the history and the test
accuracy. -p takes the book's shared parameters (kdbook params). Exit status: 0 ok,
2 bad input (nothing was trained).
"""


def add_train(sub: Any, fmt: type) -> None:
    """`kdbook train`: one fit, under torchrun too."""
    train = sub.add_parser(
        "train",
        help="train one model with fit(): teacher, student alone or distilled (torchrun too)",
        description="Train one model with kdbook.train.fit on the preset's data and save "
        "its checkpoint; under torchrun, as DistributedDataParallel.",
        epilog=TRAIN_EPILOG + train_parameters_help(),
        formatter_class=fmt,
    )
    train.add_argument(
        "--model",
        default="student",
        metavar="NAME",
        help="'student' or 'teacher' (the preset's) or a registered model name (default: student)",
    )
    train.add_argument(
        "--teacher", metavar="CKPT", help="a teacher checkpoint to distil from (default: none)"
    )
    add_parameter_option(train, "a shared parameter (listed below); repeat for several")
    train.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default auto: bf16 on GPUs, fp32 on CPUs)",
    )
    train.add_argument(
        "--accumulation-steps",
        type=int,
        default=1,
        metavar="N",
        help="split each batch into N chunks, gradients accumulated (default 1)",
    )
    train.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="keep this fraction of the training labels (default: all)",
    )
    train.add_argument(
        "--log-dir", metavar="DIR", help="TensorBoard scalars per epoch (default: none)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, metavar="FILE.pt", help="the checkpoint to write")


def _train_inputs(args: argparse.Namespace):
    """``kdbook train``'s arguments checked before any work: the config, model name, out."""
    from kdbook.config import TRAIN_FIELDS, make_config
    from kdbook.data import check_available
    from kdbook.models import list_models

    params = {name: parse_value(value) for name, value in args.parameters}
    unknown = sorted(set(params) - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(
            f"parameter {unknown[0]!r} is not one kdbook train takes; accepted: "
            f"{', '.join(TRAIN_FIELDS)}"
        )
    cfg = make_config(**params)
    name = {"student": cfg.student, "teacher": cfg.teacher}.get(args.model, args.model)
    if name not in list_models():
        raise ValueError(
            f"--model must be 'student', 'teacher' or one of {list_models()}, got {name!r}"
        )
    out = Path(args.out)
    if out.suffix != ".pt":
        raise ValueError(f"--out must name a .pt file, got {args.out!r}")
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise FileNotFoundError(f"--teacher checkpoint {args.teacher} does not exist")
    check_available(cfg.dataset)
    return cfg, name, out


def _join_processes(device: str) -> tuple[int, str]:
    """Under torchrun, join the process group (NCCL on GPUs, gloo on CPUs): world, device."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # launched by torchrun: one process per device (or CPU slice)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world, device


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch
    import torch.distributed as dist

    from kdbook.checkpoint import load_checkpoint
    from kdbook.data import load_dataset
    from kdbook.evaluate import accuracy, predict
    from kdbook.io import write_json
    from kdbook.models import build_model
    from kdbook.train import TensorBoard, fit

    cfg, name, out = _train_inputs(args)
    world, device = _join_processes(cfg.device)
    try:
        rank = int(os.environ.get("RANK", "0"))
        data = load_dataset(cfg.dataset, image_size=cfg.image_size)
        if args.label_fraction is not None:
            data = data.with_label_fraction(args.label_fraction, seed=cfg.seed)
        teacher = None
        if args.teacher is not None:
            teacher = load_checkpoint(args.teacher, data)[0]
        torch.manual_seed(cfg.seed)
        model = build_model(name, data)
        if rank == 0:
            role = f"distilled from {args.teacher}" if teacher is not None else "alone"
            print(f"train: {name} {role} on {data.name}, {world} process(es), device {device}")
        history = fit(
            model,
            data,
            teacher=teacher,
            **cfg.fit_kwargs(device=device),
            precision=args.precision,
            accumulation_steps=args.accumulation_steps,
            seed=cfg.seed,
            checkpoint=out,
            hooks=[TensorBoard(args.log_dir)] if args.log_dir is not None else [],
            progress=not args.no_progress,
            desc=f"train {name}",
        )
        if rank == 0:
            test_acc = accuracy(predict(model, data, "test", device), data.test.labels)
            report = {
                "model": name,
                "teacher": args.teacher,
                "config": cfg.as_dict(),
                "settings": history.settings,
                "epochs": history.epochs,
                "test_acc": test_acc,
            }
            json_path = write_json(out.with_suffix(".json"), report)
            final = history.final
            print(
                f"train: {history.settings['num_epochs']} epochs, val {final['val_acc']:.2f}%, "
                f"test {test_acc:.2f}%; saved {show(out)} and {show(json_path)}"
            )
        if world > 1:
            dist.barrier()  # every rank leaves together, after rank 0 has written
    finally:
        if world > 1:
            dist.destroy_process_group()
    if world > 1:
        _leave_without_teardown()
    return 0


def _leave_without_teardown() -> None:
    """End a torchrun rank now that its work is written and its process group destroyed.

    Under load, gloo's worker threads can still be joinable while the interpreter tears
    down, and the C++ runtime then aborts the finished rank ("terminate called without an
    active exception"), which torchrun reports as a failed run. Nothing is left to do, so the
    rank flushes its output and exits at once.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
