"""The language-model lines of ``kdbook bench``: chapter 15's token-level KD step against the
student's plain step, measured in the same run, and students side by side under ``vmap``.

Each line runs :meth:`kdbook.runtime.Runtime.step` on a loop that :func:`kdbook.train.fit_lm`
sets up (:func:`kdbook.train.make_lm_loop`): the student alone (cross-entropy, the
baseline), token-level KD with the teacher run on every batch, and token-level KD from
the teacher's logits cached once (as 15 trains). The stacked line trains ``STACK`` copies of
the student as one ``torch.func`` model (:func:`torch.func.stack_module_state`, one ``vmap``
of the forward) with cross-entropy, and reports characters per second per student: its
ratio says whether seeds side by side pay for the transformer on this machine.
"""

from __future__ import annotations

import copy
import inspect
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from kdbook.bench.result import PathResult, PeakMemory
from kdbook.config import CPU_SIZES, PRESETS
from kdbook.evaluate import lm_logits
from kdbook.models import build_model
from kdbook.text import load_text, window_tensor
from kdbook.train import fit_lm, make_lm_loop

LM_PLAIN = "LM student alone (CE)"
LM_KD = "LM token KD (teacher)"
LM_CACHED = "LM token KD (cached)"
LM_STACKED = "LM students, vmap"
STACK = 4  # students side by side in the stacked line
LM_BATCH = 32  # windows a step (fit_lm's default)
TEMPERATURE, ALPHA = 4.0, 0.7


def lm_sizes(preset: str, dev: torch.device) -> dict[str, Any]:
    """The preset's language models and context (its CPU sizes on a CPU)."""
    sizes = dict(PRESETS[preset])
    if dev.type == "cpu":
        sizes |= CPU_SIZES.get(preset, {})
    return {k: sizes[f"lm_{k}"] for k in ("teacher", "student", "context", "lr")}


def _fit_lm_args(**given: Any) -> dict[str, Any]:
    bound = inspect.signature(fit_lm).bind(None, None, **given)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("model", "data")}


def lm_paths(
    preset: str, dev: torch.device, steps: int, warmup: int, repeats: int, seed: int
) -> tuple[list[PathResult], dict[str, Any]]:
    """Time the language-model lines; their results (``images`` counts characters read:
    windows x context) and the settings they ran under. The ratio of each line is its
    characters per second over the student alone's."""
    sizes = lm_sizes(preset, dev)
    data = load_text()
    context = sizes["context"]
    windows = window_tensor(data.train, context, (steps + warmup) * LM_BATCH)
    torch.manual_seed(seed)
    teacher = build_model(sizes["teacher"], data, context=context).to(dev).eval()
    initial = build_model(sizes["student"], data, context=context)
    cache_start = time.perf_counter()
    cached = lm_logits(teacher, windows[:, :-1], device=str(dev))
    cache_seconds = time.perf_counter() - cache_start
    common = dict(windows=windows, lr=sizes["lr"], batch_size=LM_BATCH, device=str(dev),
                  seed=seed, progress=False)  # fmt: skip
    kd = dict(temperature=TEMPERATURE, alpha=ALPHA)
    lines = {
        LM_PLAIN: _fit_lm_args(**common),
        LM_KD: _fit_lm_args(**common, teacher=teacher, **kd),
        LM_CACHED: _fit_lm_args(**common, teacher=cached, **kd),
    }
    results = {name: PathResult(name, True) for name in [*lines, LM_STACKED]}
    results[LM_CACHED].note = (
        f"the teacher's logits on the windows cached once in {cache_seconds:.2f} s "
        "(not in the timing), as chapter 15 trains"
    )
    results[LM_STACKED].note = (
        f"{STACK} students trained as one vmap-ed model (cross-entropy): characters per "
        "second per student; below 1x, seeds side by side do not pay here"
    )
    baseline = PeakMemory.baseline(dev)
    for _ in range(repeats):  # the lines take turns, so that a burst of load hits them alike
        for name, args in lines.items():
            loop, _ = make_lm_loop(copy.deepcopy(initial), data, args)
            with PeakMemory(dev, baseline) as peak:
                chars, seconds, losses = _time_loop(loop, steps, warmup, context)
            results[name].add_round(chars, seconds, losses, peak)
        with PeakMemory(dev, baseline) as peak:
            timed = _time_stacked(initial, windows, sizes["lr"], dev, steps, warmup)
            chars, seconds, losses = timed
        results[LM_STACKED].add_round(chars, seconds, losses, peak)
    base = results[LM_PLAIN].images_per_s
    for r in results.values():
        r.ratio = r.images_per_s / base
    settings = {"lm_teacher": sizes["teacher"], "lm_student": sizes["student"],
                "lm_context": context, "lm_batch": LM_BATCH, "lm_stack": STACK}  # fmt: skip
    return list(results.values()), settings


def _time_loop(loop: Any, steps: int, warmup: int, context: int) -> tuple[int, float, list[float]]:
    """``warmup`` untimed then ``steps`` timed steps of ``loop``: characters, seconds, losses."""
    loop.module.train()
    batches = iter(loop.loader)

    def loss_fn(x, y, idx):
        return loop.distiller.loss(loop.module, x, y, idx, 0.0)

    losses, chars, start = [], 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(loop.runtime.device)
            start = time.perf_counter()
        batch = next(batches)
        result = loop.runtime.step(loop.module, loss_fn, batch, loop.opt)
        if i >= warmup:
            chars += len(batch[0]) * context
            losses.append(result.loss / result.seen)
    _sync(loop.runtime.device)
    return chars, time.perf_counter() - start, losses


def _time_stacked(
    initial: torch.nn.Module,
    windows: torch.Tensor,
    lr: float,
    dev: torch.device,
    steps: int,
    warmup: int,
) -> tuple[int, float, list[float]]:
    """``STACK`` students as one vmap-ed model, each on its own batch: characters per
    student (the total over the stack divided by ``STACK``), seconds, losses."""
    models = [copy.deepcopy(initial).to(dev) for _ in range(STACK)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    forward = torch.vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
    opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    losses, chars, start = [], 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            start = time.perf_counter()
        idx = torch.randint(len(windows), (STACK, LM_BATCH), generator=generator)
        w = windows[idx].to(dev)  # [STACK, B, L + 1]
        logits = forward(params, buffers, w[..., :-1])
        loss = F.cross_entropy(logits.flatten(0, 2), w[..., 1:].flatten()) * STACK
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            chars += LM_BATCH * (windows.shape[1] - 1)
            losses.append(loss.item() / STACK)
    _sync(dev)
    return chars, time.perf_counter() - start, losses


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
