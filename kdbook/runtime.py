"""Where and how a step runs: device, precision, channels_last, the optimizer, DDP, the step.

:class:`Runtime` holds a training run's device settings and runs :meth:`Runtime.step`, the
one training step that :func:`kdbook.train.fit` loops over and ``kdbook bench`` times: the
batch split into accumulation chunks, each chunk's loss under autocast (scaled by
``torch.amp.GradScaler`` for fp16), the hooks between backward and the optimizer step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# the label of a training sample whose label is hidden (scarce-label experiments); it lives
# here, where the step counts labelled samples, so that no import circles; kdbook.data re-exports it
UNLABELED = -1
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 on a CUDA GPU that has it, fp16 on one without, fp32 elsewhere.

    fp16 needs a CUDA device (fit guards its gradients with ``torch.amp.GradScaler``);
    bf16 works on CPUs too (its range is fp32's, so no scaler is needed).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device, got device {device.type!r}: "
            "use 'bf16' or 'fp32' there"
        )
    return precision


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for a resolved precision (a no-op context for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_optimizer(
    params: list[nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; ``fused`` (one kernel for all parameters) on GPUs."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    extra = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra)


# --- threads ---------------------------------------------------------------------------

# Forward FLOPs of one training step (batch x per-image FLOPs of the student and teachers)
# under which one intra-op thread is chosen. A second thread gains at most 2x on a quiet
# 2-core machine, and costs more than it gains when a busy process holds the other core:
# torch's threads then wait for each other at every operation. ``kdbook bench
# --thread-choice [--neighbour]`` measures it for the classroom's runs (the digits teacher,
# 3e8) and the imagefolder preset's CPU sizes (simple_resnet at 32 px, 6e9): at one thread
# a neighbour leaves their time unchanged, at two it makes it 1.6-3x longer than at one.
# A CIFAR ResNet-18 step (7e10 at 32 px) is above it and gets every core.
ONE_THREAD_FLOPS = 20_000_000_000
THREADS_ENV = "KDBOOK_THREADS"  # the cores a process may use (``kdbook sweep --jobs`` sets it)
_policy: int | str = "auto"
_cores: int | None = None  # torch's own default, read when first needed (never on import)


def use_threads(threads: int | str) -> None:
    """This process's intra-op thread setting: ``"auto"`` (chosen per run by
    :func:`choose_threads`) or a number of threads for every run."""
    if threads != "auto" and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")
    global _policy
    _policy = threads


def available_cores() -> int:
    """The cores this process may use: ``$KDBOOK_THREADS`` when set, else torch's default."""
    global _cores
    if _cores is None:
        _cores = torch.get_num_threads()
    value = os.environ.get(THREADS_ENV, "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"${THREADS_ENV} must be an integer >= 1, got {value!r}")
        return int(value)
    return _cores


def step_flops(models: Sequence[nn.Module], image_shape: tuple[int, ...], batch_size: int) -> int:
    """Forward FLOPs of one step of ``batch_size`` images through every model, counting the
    convolutions and linear layers (2 per multiply-add; one eval pass of one image each)."""
    return batch_size * sum(_layer_flops(m, tuple(image_shape)) for m in models)


_FLOPS: dict[tuple, int] = {}


@torch.no_grad()
def _layer_flops(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    key = (getattr(model, "kdbook_name", type(model).__name__), image_shape)
    key += (sum(p.numel() for p in model.parameters()),)
    if key in _FLOPS:
        return _FLOPS[key]
    total = 0

    def count(layer: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = (
                layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            )
        else:
            per_output = layer.in_features
        total += 2 * per_output * out.numel()

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    _FLOPS[key] = total
    return total


def choose_threads(*models: nn.Module, data: Any, batch_size: int) -> int:
    """Set torch's intra-op threads for a run on the CPU about to train ``models`` on ``data``.

    A number given to :func:`use_threads` wins; ``"auto"`` is one thread when a step's
    forward work is under :data:`ONE_THREAD_FLOPS` (the classroom's runs and the imagefolder
    preset's CPU sizes), else
    :func:`available_cores`. Returns the number set (unchanged off the CPU).
    """
    if next(models[0].parameters()).device.type != "cpu":
        return torch.get_num_threads()
    shape = (data.in_channels, data.image_size, data.image_size)
    return threads_for_flops(models[0], lambda: step_flops(models, shape, batch_size))


def threads_for_flops(model: nn.Module, flops: Callable[[], int]) -> int:
    """Set torch's intra-op threads for a CPU run whose step's forward work is ``flops()``
    (called only under ``"auto"``): :func:`choose_threads`'s rule, for any model (the
    language models' :func:`kdbook.train.fit_lm` counts its own). Returns the number set."""
    if next(model.parameters()).device.type != "cpu":
        return torch.get_num_threads()
    cores = available_cores()  # read before the first change: torch's own default
    if _policy != "auto":
        threads = int(_policy)
    else:
        threads = 1 if flops() < ONE_THREAD_FLOPS else cores
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# --- torchrun -------------------------------------------------------------------------


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group torchrun set up, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum over ranks of a small CPU tensor (sent through ``device`` for NCCL)."""
    import torch.distributed as dist

    values = values.to(device)
    dist.all_reduce(values)
    return values.cpu()


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics on CPUs, per rank)."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


# --- the step --------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one step trained on, summed over its chunks (sample-weighted where a mean)."""

    loss: float = 0.0  # sum of chunk loss x chunk size
    correct: int = 0  # right predictions among the labelled samples
    seen: int = 0  # samples
    labelled: int = 0  # samples with a label
    logs: dict[str, float] = field(default_factory=dict)  # term logs x chunk size


# ``loss_fn(x, y, idx) -> (loss, logits, logs)``: a chunk's loss (under autocast), the
# student's logits and the loss terms' numbers to log (see kdbook.distill.Distiller.loss).
LossFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
]


@dataclass
class Runtime:
    """A run's device settings: precision, channels_last, the fused optimizer, the ranks.

    Build it with :meth:`create`. ``step`` is the training step every path runs.
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    fused: bool = False
    rank: int = 0
    world: int = 1
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @classmethod
    def create(
        cls, device: torch.device, precision: str = "auto", channels_last: bool | None = None
    ) -> Runtime:
        """fit's runtime: ``precision`` resolved, channels_last and fused on GPUs by default."""
        gpu = device.type == "cuda"
        rank, world = world_info()
        precision = resolve_precision(precision, device)
        cl = gpu if channels_last is None else bool(channels_last)
        return cls(device, precision, cl, gpu, rank, world)

    def describe(self) -> str:
        """E.g. ``"bf16 + channels_last + fused"``."""
        extras = [name for name in ("channels_last", "fused") if getattr(self, name)]
        return " + ".join([self.precision, *extras])

    def autocast(self):
        return autocast(self.precision, self.device)

    def prepare(self, *models: nn.Module) -> None:
        """Move ``models`` to the device (channels_last when set); cuDNN autotuning on GPUs."""
        for model in models:
            model.to(self.device)
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as DistributedDataParallel under torchrun (SyncBatchNorm on GPUs)."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            return DistributedDataParallel(module, device_ids=[self.device])
        return DistributedDataParallel(module)

    def optimizer(
        self, params: list[nn.Parameter], name: str, lr: float, weight_decay: float, momentum: float
    ) -> torch.optim.Optimizer:
        return make_optimizer(params, name, lr, weight_decay, momentum, self.fused)

    def step(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
        opt: torch.optim.Optimizer,
        *,
        accumulation_steps: int = 1,
        global_size: int | None = None,
        before_step: Sequence[Callable[[], None]] = (),
    ) -> StepResult:
        """One optimizer step on ``batch`` = (images, labels, sample indices or None).

        The batch is split into ``accumulation_steps`` chunks. Each chunk's mean loss is
        weighted by its share of the global batch of ``global_size`` (times the ranks, which
        DDP averages over), so the gradients sum to the global batch's. ``module`` is what
        DDP wraps (its ``no_sync`` skips the all-reduce of all but the last chunk).
        ``before_step`` runs after the gradients are in and before the optimizer steps.
        """
        x, y, idx = batch
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        global_size = global_size or len(y) * self.world
        chunks = [(x, y, idx)]
        if accumulation_steps > 1:
            parts = (t.tensor_split(accumulation_steps) for t in (x, y, idx))
            chunks = [c for c in zip(*parts, strict=True) if len(c[1])]
        result = StepResult()
        opt.zero_grad(set_to_none=True)
        for i, (xc, yc, ic) in enumerate(chunks):
            share = len(yc) * self.world / global_size
            sync = i == len(chunks) - 1 or self.world == 1
            with nullcontext() if sync else module.no_sync():
                with self.autocast():
                    loss, logits, logs = loss_fn(xc, yc, ic)
                self.scaler.scale(loss if share == 1 else loss * share).backward()
            _count(result, loss, logits.detach(), yc, logs)
        for hook in before_step:
            hook()
        self.scaler.step(opt)
        self.scaler.update()
        return result


def _count(
    result: StepResult,
    loss: torch.Tensor,
    logits: torch.Tensor,
    y: torch.Tensor,
    logs: dict[str, torch.Tensor | float],
) -> None:
    n = len(y)
    labelled = y != UNLABELED
    result.loss += loss.item() * n
    for name, value in logs.items():
        value = value.item() if isinstance(value, torch.Tensor) else value
        result.logs[name] = result.logs.get(name, 0.0) + value * n
    # logits [N, C] and labels [N], or a language model's [N, L, V] and [N, L] (per token)
    result.correct += (logits.argmax(-1)[labelled] == y[labelled]).sum().item()
    result.seen += n
    result.labelled += int(labelled.sum())
