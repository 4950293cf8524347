"""``kdbook bench``: the sources' loop against kdbook's; ``--seeds``/``--threads`` runs."""

from __future__ import annotations

import argparse
from typing import Any

from kdbook.cli.common import show

BENCH_EPILOG = """\
examples:
  kdbook bench                                  classroom preset (digits) on the CPU
  kdbook bench --threads 2 --out runs/bench.json
  kdbook bench --no-augment                     all three paths the same recipe (cache valid)
  kdbook bench --preset cifar10 --device cuda --synthetic   CIFAR-shaped random images
  kdbook bench --smoke                          a few steps: checks that it runs (CI)

Paths: seed-style (torchvision DataLoader, per-sample PIL transforms, 2 workers, fp32, the
teacher every step), kdbook (kdbook.data.Loader: tensors prepared once, batched
augmentation), kdbook + cached logits (the teacher's logits computed once; the same recipe
only without augmentation, and the table says when it is not). Same data, models, loss,
optimizer and batch size in all three. Exit status: 0 ok, 2 bad input.
"""


def add_bench(sub: Any, fmt: type) -> None:
    """`kdbook bench`: the sources' loop against kdbook's step."""
    bench = sub.add_parser(
        "bench",
        help="time the sources' training loop against kdbook's (images/s, memory, ratio)",
        description="Train the same student with the same teacher three ways in one run "
        "and print images/s, peak memory and the speed-up over the sources' loop.",
        epilog=BENCH_EPILOG,
        formatter_class=fmt,
    )
    bench.add_argument(
        "--preset",
        default="classroom",
        choices=["classroom", "cifar10"],
        help="data and models (default: classroom, digits on a CPU)",
    )
    bench.add_argument(
        "--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: the preset's)"
    )
    bench.add_argument(
        "--steps", type=int, metavar="N", help="timed steps per round (default 100; smoke 3)"
    )
    bench.add_argument(
        "--warmup", type=int, metavar="N", help="untimed steps first (default 5; smoke 1)"
    )
    bench.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="rounds, the paths taking turns; each reports its median (default 3; smoke 1)",
    )
    bench.add_argument(
        "--batch-size", type=int, default=128, metavar="N", help="images per step (default 128)"
    )
    bench.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default: what training picks, threads='auto')",
    )
    bench.add_argument(
        "--no-augment",
        action="store_false",
        dest="augment",
        help="no augmentation in any path (then the cached path trains the same recipe)",
    )
    bench.add_argument(
        "--synthetic",
        action="store_true",
        help="cifar10 preset: random CIFAR-shaped images instead of the files in data/",
    )
    bench.add_argument(
        "--smoke", action="store_true", help="a few steps only: checks that it runs (CI)"
    )
    bench.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="instead: N seeds x (scratch, KD) side by side against one at a time and one fit",
    )
    bench.add_argument(
        "--thread-choice",
        action="store_true",
        help="instead: the classroom's runs at 1 thread and every core, and threads='auto'",
    )
    bench.add_argument(
        "--epochs", type=int, metavar="N", help="--seeds/--thread-choice: epochs per run"
    )
    bench.add_argument(
        "--neighbour",
        action="store_true",
        help="--seeds/--thread-choice: a busy process on one core while timing",
    )
    bench.add_argument("--out", metavar="FILE", help="also write the result as JSON here")


def cmd_bench(args: argparse.Namespace) -> int:
    from kdbook.bench import run_bench, save_bench

    if args.seeds is not None or args.thread_choice:
        return cmd_bench_runs(args)

    result = run_bench(
        args.preset,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        batch_size=args.batch_size,
        augment=args.augment,
        synthetic=args.synthetic,
        smoke=args.smoke,
        threads=args.threads,
    )
    print(result.table())
    if args.smoke:
        print("(smoke mode: a few steps to check that the bench runs; not a measurement)")
    if args.out:
        print(f"\nresult: {show(save_bench(result, args.out))}")
    return 0


def cmd_bench_runs(args: argparse.Namespace) -> int:
    from kdbook.bench.runs import bench_seeds, bench_threads

    if args.seeds is not None and args.thread_choice:
        raise ValueError("--seeds and --thread-choice measure different things: give one")
    if args.epochs is not None and not (isinstance(args.epochs, int) and args.epochs >= 1):
        raise ValueError(f"--epochs must be an integer >= 1, got {args.epochs!r}")
    if args.seeds is not None:
        result = bench_seeds(args.seeds, num_epochs=args.epochs, neighbour=args.neighbour)
    else:
        result = bench_threads(num_epochs=args.epochs or 3, neighbour=args.neighbour)
    print(result.table())
    if args.out:
        print(f"\nresult: {show(result.save(args.out))}")
    return 0
