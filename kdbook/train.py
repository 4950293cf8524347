"""One training loop for the teacher, the student alone and the distilled student.

>>> from kdbook.data import load_dataset
>>> from kdbook.models import build_model
>>> data = load_dataset("digits")
>>> model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
>>> history = fit(model, data, num_epochs=1, progress=False)
>>> len(history.epochs)
1
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdbook.config import check_params, resolve_device
from kdbook.data import UNLABELED, Dataset, Loader, Split
from kdbook.io import atomic_write
from kdbook.losses import kd_loss

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class History:
    """Per-epoch records of a :func:`fit` call, plus its settings."""

    settings: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's record (the model kdbook keeps: no selection on test)."""
        return self.epochs[-1]

    def to_frame(self):
        """The records as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.epochs).set_index("epoch")


def _make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def _evaluate(
    model: nn.Module, data: Dataset, split: Split, device: torch.device
) -> tuple[float, float]:
    """Loss and accuracy (%) of ``model`` on a split, in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for x, y, _ in Loader(data, split, 512, device=device):
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / len(split), 100.0 * correct / len(split)


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    teacher: nn.Module | None = None,
    num_epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    temperature: float = 4.0,
    alpha: float = 0.7,
    augment: bool = True,
    device: str = "cpu",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``model`` on ``data.train``; distil from ``teacher`` when one is given.

    Without a teacher the loss is cross-entropy on the labelled samples (samples marked
    UNLABELED are skipped). With a teacher it is :func:`kdbook.losses.kd_loss` on every
    sample, the teacher in eval mode under ``torch.no_grad()``. An epoch is
    ``ceil(len(data.train) / batch_size)`` steps whatever the labels. The learning rate follows
    a cosine schedule over all steps. The final model is kept (no selection on any split).

    Args:
        model: the network to train (modified in place).
        data: a :class:`kdbook.data.Dataset`.
        teacher: a trained network, or None to train ``model`` alone.
        num_epochs, lr, batch_size: the usual; ``optimizer`` is ``"sgd"`` or ``"adamw"``.
        temperature, alpha: of the KD loss (ignored without a teacher).
        augment: apply the data set's training augmentation.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...
        seed: seeds shuffling, augmentation and dropout.
        checkpoint: where to save the trained model with metadata (atomically).
        progress: show a tqdm bar over epochs.

    Returns:
        A :class:`History` with per-epoch train loss and accuracy, val loss and accuracy,
        learning rate, seconds, and, with a teacher, the teacher-student KL at T.
    """
    check_params(
        {
            "num_epochs": num_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "temperature": temperature,
            "alpha": alpha,
            "seed": seed,
            "device": device,
        }
    )
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    dev = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    train = data.train
    if teacher is None:
        train = train.subset(train.labels != UNLABELED)
    # An epoch is as many steps as one pass over the whole training set, labelled or not,
    # so that a student that sees only the labelled few gets as many updates as the rest.
    loader = Loader(
        data,
        train,
        batch_size,
        shuffle=True,
        augment=augment,
        device=dev,
        seed=seed,
        num_batches=math.ceil(len(data.train) / batch_size),
    )
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
    opt = _make_optimizer(model, optimizer, lr, weight_decay, momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=num_epochs * len(loader))
    history = History(
        settings={
            "model": getattr(model, "kdbook_name", type(model).__name__),
            "teacher": getattr(teacher, "kdbook_name", None) if teacher is not None else None,
            "dataset": data.name,
            "num_epochs": num_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "temperature": temperature if teacher is not None else None,
            "alpha": alpha if teacher is not None else None,
            "seed": seed,
            "train_samples": len(train),
        }
    )
    epochs = tqdm(range(1, num_epochs + 1), desc=desc or "train", disable=not progress)
    for epoch in epochs:
        start = time.perf_counter()
        model.train()
        loss_sum, kl_sum, correct, seen, seen_labelled = 0.0, 0.0, 0, 0, 0
        for x, y, _ in loader:
            logits = model(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = kd_loss(logits, teacher_logits, y, temperature, alpha)
                kl_sum += _kl(logits.detach(), teacher_logits, temperature) * len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            labelled = y != UNLABELED
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1)[labelled] == y[labelled]).sum().item()
            seen += len(y)
            seen_labelled += int(labelled.sum())
        val_loss, val_acc = _evaluate(model, data, data.val, dev)
        record = {
            "epoch": epoch,
            "lr": sched.get_last_lr()[0],
            "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / max(1, seen_labelled),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - start,
        }
        if teacher is not None:
            record["kl"] = kl_sum / seen
        history.epochs.append(record)
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{val_acc:.1f}")
    model.eval()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, data, history)
    return history


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> float:
    """KL(teacher || student) at temperature T, batch mean, without the T^2 factor."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, 1),
        F.log_softmax(teacher_logits / temperature, 1),
        reduction="batchmean",
        log_target=True,
    ).item()


def save_checkpoint(
    path: str | Path, model: nn.Module, data: Dataset, history: History | None = None
) -> Path:
    """Save ``model``'s state_dict with the metadata needed to rebuild and check it.

    The file loads with ``torch.load(path, weights_only=True)``.
    """
    meta: dict[str, Any] = {
        "model": getattr(model, "kdbook_name", type(model).__name__),
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "dataset": data.name,
        "classes": list(data.classes),
    }
    if history is not None:
        meta["settings"] = history.settings
        meta["metrics"] = history.final
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save({"state_dict": state, "meta": meta}, f))


def load_checkpoint(
    path: str | Path, data: Dataset | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdbook checkpoint (``weights_only=True``) and return it with meta.

    When ``data`` is given, the checkpoint must have been trained on the same data set
    and classes, or a ValueError names the file and the mismatch.
    """
    from kdbook.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} is not a readable kdbook checkpoint: {e}") from None
    if not isinstance(blob, dict) or not {"state_dict", "meta"} <= blob.keys():
        raise ValueError(f"checkpoint {path} is not a kdbook checkpoint (no state_dict/meta)")
    meta = blob["meta"]
    if data is not None:
        for key, want in (("dataset", data.name), ("classes", list(data.classes))):
            if meta.get(key) != want:
                raise ValueError(
                    f"checkpoint {path} was trained with {key}={meta.get(key)!r}, "
                    f"this data set has {want!r}"
                )
    model = build_model(
        meta["model"],
        meta["num_classes"],
        in_channels=meta["in_channels"],
        image_size=meta["image_size"],
    )
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


def teacher_from_run(cfg, data: Dataset, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """The teacher of this run: loaded from ``run_dir/teacher.pt``, or trained and saved there.

    A notebook opened on its own calls this and gets the teacher 02_teacher would have
    left, with a message saying which happened. A checkpoint of another architecture or
    data set is not reused: it is retrained (and the message says why).

    Args:
        cfg: a :class:`kdbook.config.Config`.
        data: the data set of ``cfg.dataset``.

    Returns:
        The teacher in eval mode and its checkpoint metadata.
    """
    from kdbook.models import build_model

    path = Path(cfg.run_dir) / "teacher.pt"
    if path.is_file():
        try:
            teacher, meta = load_checkpoint(path, data)
            if meta["model"] == cfg.teacher:
                print(f"teacher: loaded {path} ({meta['model']}, trained on {meta['dataset']})")
                return teacher.to(resolve_device(cfg.device)), meta
            reason = f"it holds {meta['model']}, this run's teacher is {cfg.teacher}"
        except ValueError as e:
            reason = str(e)
        print(f"teacher: not reusing {path}: {reason}")
    print(f"teacher: training {cfg.teacher} ({cfg.num_epochs} epochs), saving to {path}")
    torch.manual_seed(cfg.seed)
    teacher = build_model(
        cfg.teacher, data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    fit(
        teacher,
        data,
        num_epochs=cfg.num_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        device=cfg.device,
        seed=cfg.seed,
        checkpoint=path,
        progress=progress,
        desc=f"teacher {cfg.teacher}",
    )
    return teacher, load_checkpoint(path, data)[1]
