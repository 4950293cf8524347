"""The teacher's logits, computed once and kept in the run folder (:class:`LogitCache`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.config import check_params, resolve_device
from kdbook.data import Dataset
from kdbook.io import atomic_write, tensor_digest
from kdbook.models import check_model_fits
from kdbook.runtime import autocast, resolve_precision


@dataclass
class LogitCache:
    """A teacher's logits on every training image, computed once (:func:`cache_teacher_logits`).

    ``logits`` is fp32 ``(V, N, C)``: V views of the N training images. ``views`` holds each
    view's augmentation parameters ``(V, N, 5)`` (:meth:`kdbook.data.Augment.sample`), or is
    None for one view of the plain images. ``images`` and ``fingerprint`` are digests of the
    training images and of images plus teacher weights, so a stale cache is recognised.
    """

    logits: torch.Tensor
    views: torch.Tensor | None
    images: str
    fingerprint: str
    teacher: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits,
            "views": self.views,
            "images": self.images,
            "fingerprint": self.fingerprint,
            "teacher": self.teacher,
        }

    def check(self, data: Dataset) -> None:
        """Raise ValueError unless this cache was computed on ``data``'s training images."""
        if self.logits.shape[1:] != (len(data.train), data.num_classes):
            raise ValueError(
                f"teacher cache holds logits of shape {tuple(self.logits.shape[1:])}, data set "
                f"{data.name!r} has {len(data.train)} training images of {data.num_classes} "
                "classes"
            )
        if self.images != tensor_digest([data.train.images]):
            raise ValueError(
                f"teacher cache was computed on other training images than data set {data.name!r}'s"
            )


def _plain_note(views: int) -> None:
    if not views:
        print("teacher cache holds the plain images' logits: training without augmentation")


def _load_cache(path: Path, fingerprint: str) -> LogitCache | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("fingerprint") == fingerprint:
            print(f"teacher cache: loaded {path}")
            return LogitCache(**blob)
        print(f"teacher cache: {path} is stale (other images, teacher or views); recomputing")
    except Exception as e:  # a damaged or foreign file is recomputed
        print(f"teacher cache: {path} is not readable ({e}); recomputing")
    return None


@torch.no_grad()
def cache_teacher_logits(
    teacher: nn.Module,
    data: Dataset,
    *,
    views: int = 0,
    seed: int = 0,
    path: str | Path | None = None,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 512,
    progress: bool = True,
) -> LogitCache:
    """The teacher's logits on ``data.train``, computed once, for ``fit(teacher=cache)``.

    A cache is valid only while the student sees exactly the images the teacher saw. With
    ``views=0`` those are the plain images (the student then trains without augmentation,
    and this says so once). With ``views=k``, k augmented views of every image are drawn
    with the data set's augmentation and their parameters are kept, so that ``fit`` replays
    view ``e mod k`` in epoch ``e``: augmentation with a valid cache.

    With ``path`` (e.g. ``run_dir/teacher_logits.pt``) the cache is loaded from the file when
    it was made from the same images, teacher weights and views, and computed and saved
    (atomically, loadable with ``weights_only=True``) otherwise.

    Args:
        teacher: the trained teacher (run in eval mode, under no_grad, autocast per precision).
        data: the data set whose training images are cached.
        views: 0 for the plain images, or the number of stored augmented views.
        seed: seeds the views' augmentation parameters.
        path: a file to keep the cache in, or None for memory only.
    """
    if not (isinstance(views, int) and views >= 0):
        raise ValueError(f"views must be an integer >= 0, got {views!r}")
    check_params({"seed": seed, "device": device, "batch_size": batch_size})
    dev = torch.device(resolve_device(device))
    precision = resolve_precision(precision, dev)
    teacher.to(dev).eval()
    check_model_fits(teacher, data, dev, "teacher")
    images = tensor_digest([data.train.images])
    weights = tensor_digest(list(teacher.state_dict().values()))
    fingerprint = hashlib.sha1(f"{images} {weights} {views} {seed}".encode()).hexdigest()
    name = getattr(teacher, "kdbook_name", type(teacher).__name__)
    if path is not None and Path(path).is_file():
        cache = _load_cache(Path(path), fingerprint)
        if cache is not None:
            _plain_note(views)
            return cache
    generator = torch.Generator().manual_seed(seed)
    n = len(data.train)
    params = (
        torch.stack([data.augment.sample(n, generator) for _ in range(views)]) if views else None
    )
    logits = torch.empty(max(1, views), n, data.num_classes)
    batches = [(v, b) for v in range(max(1, views)) for b in torch.arange(n).split(batch_size)]
    source = data.train.images.to(dev)
    for v, b in tqdm(batches, desc="teacher logits", disable=not progress):
        x = source[b.to(dev)]
        if params is not None:
            x = data.augment.apply(x, params[v, b])
        with autocast(precision, dev):
            logits[v, b] = teacher(data.normalize(x)).float().cpu()
    cache = LogitCache(logits, params, images, fingerprint, name)
    if path is not None:
        atomic_write(path, lambda f: torch.save(cache.to_dict(), f))
    _plain_note(views)
    return cache


def stored_views(cfg, teacher: Any, data: Dataset, views: int | None = None) -> LogitCache:
    """The teacher's logits on ``views`` stored augmented views of every training image.

    Notebook 12's consistent teaching: one view per epoch by default (``cfg.num_epochs``),
    drawn at ``cfg.seed`` on ``cfg.device``, so the student sees exactly what the teacher
    saw. Notebooks 13 and 14 pass the result as ``teacher=``.
    """
    views = cfg.num_epochs if views is None else views
    return cache_teacher_logits(
        teacher, data, views=views, seed=cfg.seed, device=cfg.device, progress=False
    )
