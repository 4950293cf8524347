"""Checkpoints: a model's weights with the metadata to rebuild it, and resuming a fit.

A checkpoint file is a dict ``{"state_dict", "meta"}`` (plus ``"run"`` when :func:`fit`
wrote it per epoch), written atomically and loaded with ``torch.load(weights_only=True)``.
Whether a checkpoint continues a run is decided by the run's recorded settings
(:attr:`History.settings`): every setting decides it except those in
:data:`NOT_RESUME_SETTINGS`, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbook.data import Dataset
from kdbook.io import atomic_write
from kdbook.text import TextData

# Recorded settings that a resumed run may change (everything else must match).
NOT_RESUME_SETTINGS = frozenset({"world_size"})
CHECKPOINT_META = ("model", "num_classes", "in_channels", "image_size", "dataset", "classes")


@dataclass
class History:
    """Per-epoch records of a :func:`kdbook.train.fit` call, plus its settings."""

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


def check_fits(state_dict: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Raise ValueError unless ``state_dict`` has exactly ``model``'s tensor names and shapes."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state_dict.items()}
    if own != saved:
        diff = sorted(k for k in own.keys() | saved.keys() if own.get(k) != saved.get(k))
        raise ValueError(
            f"its weights do not fit this model ({len(diff)} tensors differ, first "
            f"{diff[0]}: saved {saved.get(diff[0])}, model {own.get(diff[0])})"
        )


# --- files ---------------------------------------------------------------------------


def _meta(model: nn.Module, data: Dataset | TextData, history: History | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": getattr(model, "kdbook_name", type(model).__name__),
        "num_classes": data.num_classes,  # a language model's: its vocabulary size
        "in_channels": getattr(data, "in_channels", None),  # None for text
        "image_size": getattr(data, "image_size", None),
        "dataset": data.name,
        "classes": list(data.classes),  # a language model's: its vocabulary
    }
    if getattr(model, "kdbook_kwargs", None):  # a language model's sizes (context)
        meta["model_kwargs"] = dict(model.kdbook_kwargs)
    if history is not None:
        meta["settings"] = history.settings
        if history.epochs:
            meta["metrics"] = history.final
    return meta


def write_checkpoint(
    path: str | Path,
    model: nn.Module,
    data: Dataset | TextData,
    history: History | None,
    run: dict[str, Any] | None,
) -> Path:
    blob: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _meta(model, data, history),
    }
    if run is not None:
        blob["run"] = run
    return atomic_write(path, lambda f: torch.save(blob, f))


def save_checkpoint(
    path: str | Path, model: nn.Module, data: Dataset | TextData, history: History | None = None
) -> Path:
    """Save ``model``'s state_dict with the metadata needed to rebuild and check it.

    The file loads with ``torch.load(path, weights_only=True)`` and is written atomically.
    (:func:`kdbook.train.fit` with ``checkpoint=`` writes the same file plus the run needed
    to resume.)
    """
    return write_checkpoint(path, model, data, history, None)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True``; ValueError naming the file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} is not a readable kdbook checkpoint: {e}") from None
    if not isinstance(blob, dict) or not {"state_dict", "meta"} <= blob.keys():
        raise ValueError(f"checkpoint {path} is not a kdbook checkpoint (no state_dict/meta)")
    meta = blob["meta"]
    missing = [k for k in CHECKPOINT_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"checkpoint {path} is not a kdbook checkpoint (meta lacks {missing})")
    return blob


def load_checkpoint(
    path: str | Path, data: Dataset | TextData | None = None, *, expect_model: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdbook checkpoint (``weights_only=True``) and return it with meta.

    Args:
        path: a file written by :func:`save_checkpoint` or :func:`kdbook.train.fit`.
        data: when given, the checkpoint must have been trained on this data set, with its
            number of classes and class names (a language model: this corpus and vocabulary).
        expect_model: when given, the registered model name the checkpoint must hold.

    Returns:
        The model in eval mode on the CPU, and the checkpoint's metadata.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a damaged file, not a checkpoint, or a mismatch; the message names the
            file and the mismatch.
    """
    from kdbook.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = read_checkpoint(path)
    meta = blob["meta"]
    if expect_model is not None and meta["model"] != expect_model:
        raise ValueError(
            f"checkpoint {path} holds model {meta['model']!r}, expected {expect_model!r}"
        )
    if data is not None:
        for key, want in (
            ("dataset", data.name),
            ("num_classes", data.num_classes),
            ("classes", list(data.classes)),
        ):
            if meta.get(key) != want:
                raise ValueError(
                    f"checkpoint {path} was trained with {key}={meta.get(key)!r}, "
                    f"this data set has {want!r}"
                )
    try:
        model = build_model(
            meta["model"],
            meta["num_classes"],
            in_channels=meta["in_channels"],
            image_size=meta["image_size"],
            **meta.get("model_kwargs", {}),
        )
        check_fits(blob["state_dict"], model)
    except ValueError as e:
        raise ValueError(f"checkpoint {path} does not rebuild: {e}") from None
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


def is_unfinished(path: Path) -> bool:
    """Whether ``path`` holds a :func:`kdbook.train.fit` run stopped before its last epoch."""
    try:
        run = read_checkpoint(path).get("run")
    except ValueError:
        return False
    return isinstance(run, dict) and not run.get("finished", True)


def settings_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The deciding settings that differ, as ``name=saved (this run: wanted)``, or ''."""
    names = [k for k in wanted if k not in NOT_RESUME_SETTINGS]
    names += [k for k in saved if k not in wanted and k not in NOT_RESUME_SETTINGS]
    return ", ".join(
        f"{k}={saved.get(k)!r} (this run: {wanted.get(k)!r})"
        for k in names
        if saved.get(k) != wanted.get(k)
    )
