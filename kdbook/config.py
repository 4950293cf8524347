"""Presets and the one typed configuration every notebook and command builds.

The notebooks' ``parameters`` cell holds literals only; the next cell calls
:func:`make_config`, which fills every ``None`` from the preset and validates
the whole set before any work starts.

>>> cfg = make_config(preset="classroom", temperature=2.0)
>>> cfg.temperature, cfg.dataset
(2.0, 'digits')
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

# The sizes each preset stands for. A parameter left at ``None`` takes the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Embedded digits on a 2-core CPU: each notebook in about a minute.
    "classroom": {
        "dataset": "digits",
        "teacher": "digits_teacher",
        "student": "tiny_cnn",
        "num_epochs": 30,
        "lr": 0.05,
        "batch_size": 64,
        "num_seeds": 5,
        "label_fraction": 0.05,
        "device": "cpu",
    },
    # CIFAR-10 on one GPU (place the data in data/): source 1's models, loss and optimizer,
    # shortened from its 200 epochs of batch 128 to fit the book's time budget.
    "cifar10": {
        "dataset": "cifar10",
        "teacher": "resnet18_cifar",
        "student": "simple_resnet",
        "num_epochs": 40,
        "lr": 0.1,
        "batch_size": 256,
        "num_seeds": 3,
        "label_fraction": 0.1,
        "device": "auto",
    },
    # An ImageFolder tree such as the chest X-ray layout (source 4), sized for a CPU.
    "imagefolder": {
        "dataset": None,  # must be given: imagefolder:PATH
        "teacher": "resnet18_cifar",
        "student": "tiny_cnn",
        "num_epochs": 10,
        "lr": 0.05,
        "batch_size": 64,
        "num_seeds": 3,
        "label_fraction": 0.1,
        "device": "auto",
    },
}

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Config:
    """Every shared knob of the book, resolved against a preset and validated."""

    dataset: str
    preset: str
    seed: int
    num_seeds: int
    teacher: str
    student: str
    temperature: float
    alpha: float
    num_epochs: int
    lr: float
    batch_size: int
    device: str
    run_dir: str
    label_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fail(name: str, value: Any, accepted: str) -> None:
    raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_dataset_spec(spec: Any) -> None:
    """Raise ValueError unless ``spec`` names a known data set (paths are checked at load)."""
    if not isinstance(spec, str) or not (
        spec in ("digits", "cifar10") or (spec.startswith("imagefolder:") and len(spec) > 12)
    ):
        _fail("dataset", spec, "'digits', 'cifar10' or 'imagefolder:PATH'")


def check_params(params: dict[str, Any]) -> None:
    """Validate shared parameters by name; raise ValueError naming the first bad one.

    Only the names present are checked, so a notebook or command can pass a subset.
    ``None`` means "the preset's value" for every knob a preset sets.
    """
    from kdbook.models import list_models  # local: models imports torch, config must not

    for name, value in params.items():
        if value is None and name in PRESETS["classroom"]:
            continue
        if name == "dataset":
            check_dataset_spec(value)
        elif name == "preset" and value not in PRESETS:
            _fail(name, value, f"one of {sorted(PRESETS)}")
        elif name in ("seed",) and not (_is_int(value) and value >= 0):
            _fail(name, value, "an integer >= 0")
        elif name in ("num_seeds", "num_epochs", "batch_size") and not (
            _is_int(value) and value >= 1
        ):
            _fail(name, value, "an integer >= 1")
        elif name in ("teacher", "student") and value not in list_models():
            _fail(name, value, f"one of {list_models()}")
        elif name == "temperature" and not (_is_number(value) and value > 0):
            _fail(name, value, "a number > 0")
        elif name == "alpha" and not (_is_number(value) and 0 <= value <= 1):
            _fail(name, value, "a number in [0, 1]")
        elif name == "lr" and not (_is_number(value) and value > 0):
            _fail(name, value, "a number > 0")
        elif name == "label_fraction" and not (_is_number(value) and 0 < value <= 1):
            _fail(name, value, "a number in (0, 1]")
        elif name == "device" and not (isinstance(value, str) and DEVICE_PATTERN.fullmatch(value)):
            _fail(name, value, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        elif name == "run_dir" and not (isinstance(value, str) and value):
            _fail(name, value, "a non-empty path")


def make_config(
    preset: str = "classroom",
    *,
    dataset: str | None = None,
    seed: int = 0,
    num_seeds: int | None = None,
    teacher: str | None = None,
    student: str | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    num_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    run_dir: str = "../runs/lab",
    label_fraction: float | None = None,
) -> Config:
    """Resolve parameters against ``preset`` and validate them all before any work.

    Args:
        preset: one of :data:`PRESETS`; supplies every parameter left at ``None``.
        The rest: the book's shared parameters (see README, "Parameters").

    Returns:
        A frozen :class:`Config`.
    """
    check_params({"preset": preset})
    given = {
        "dataset": dataset,
        "seed": seed,
        "num_seeds": num_seeds,
        "teacher": teacher,
        "student": student,
        "temperature": temperature,
        "alpha": alpha,
        "num_epochs": num_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "device": device,
        "run_dir": run_dir,
        "label_fraction": label_fraction,
    }
    resolved = {k: (PRESETS[preset].get(k) if v is None else v) for k, v in given.items()}
    if resolved["dataset"] is None:
        _fail("dataset", None, f"given with preset {preset!r} ('imagefolder:PATH')")
    if _is_int(resolved["temperature"]) or _is_int(resolved["alpha"]):
        resolved["temperature"] = float(resolved["temperature"])
        resolved["alpha"] = float(resolved["alpha"])
    check_params(resolved)
    return Config(preset=preset, **resolved)


def resolve_device(device: str) -> str:
    """Map ``'auto'`` to ``'cuda'`` when a GPU is present, else ``'cpu'``; check availability."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be one that exists here ('cpu' or 'auto'), got {device!r}")
    return device
