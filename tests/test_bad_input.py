"""The bad-input battery: every entry point refuses bad input before any work, with a
message that names the parameter (or file), the value and what is accepted.

Each row of CASES is (id, call, exception type, fragments the message must contain).
A call and a fragment may take the :class:`Ctx` (the digits data set and a scratch folder)
to build what they need: real files in the real formats, never mocks. Add a row when an
entry point learns a new check.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kdbook.checkpoint import load_checkpoint, save_checkpoint
from kdbook.config import make_config
from kdbook.data import CIFAR10_FILES, CIFAR10_FOLDER, Dataset, load_dataset
from kdbook.losses import kd_loss, soft_kd_term
from kdbook.models import build_model
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class Ctx:
    digits: Dataset
    tmp: Path

    def tiny(self, num_classes: int = 10, in_channels: int = 1) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("tiny_cnn", num_classes, in_channels=in_channels, image_size=8)

    def tree(self, classes: tuple[str, ...] = ("a", "b")) -> Path:
        """An ImageFolder tree train/val/test/<class>/*.png of small solid images."""
        root = self.tmp / "tree"
        for split in ("train", "val", "test"):
            for k, cls in enumerate(classes):
                folder = root / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(2):
                    Image.new("RGB", (6, 6), (40 * k, 20 * i, 90)).save(folder / f"{i}.png")
        return root

    def checkpoint(self) -> Path:
        return save_checkpoint(self.tmp / "tiny.pt", self.tiny(), self.digits)

    def cifar(self) -> Path:
        """A cifar-10-batches-py folder with every file present, none of them valid."""
        folder = self.tmp / CIFAR10_FOLDER
        folder.mkdir()
        for name in [*CIFAR10_FILES, "test_batch", "batches.meta"]:
            (folder / name).write_bytes(b"not a pickle")
        return self.tmp


def truncated_png(ctx: Ctx) -> Path:
    """A tree whose train/b/1.png is a PNG cut in half."""
    root = ctx.tree()
    path = root / "train" / "b" / "1.png"
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return root


def empty_class(ctx: Ctx) -> Path:
    root = ctx.tree()
    (root / "val" / "c").mkdir()
    (root / "val" / "c" / "notes.txt").write_text("no images here")
    return root


def no_class_folders(ctx: Ctx) -> Path:
    root = ctx.tree()
    for cls in ("a", "b"):
        for f in (root / "test" / cls).iterdir():
            f.unlink()
        (root / "test" / cls).rmdir()
    return root


def missing_split(ctx: Ctx) -> Path:
    import shutil

    root = ctx.tree()
    shutil.rmtree(root / "val")
    return root


def a_file(ctx: Ctx, name: str, content: bytes | None = None, obj: Any = None) -> Path:
    path = ctx.tmp / name
    if obj is not None:
        torch.save(obj, path)
    else:
        path.write_bytes(content or b"")
    return path


def truncated_checkpoint(ctx: Ctx) -> Path:
    good = ctx.checkpoint().read_bytes()
    return a_file(ctx, "cut.pt", good[: len(good) // 2])


def loss_inputs(n: int = 4, c: int = 3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g), torch.arange(n) % c


Call = Callable[[Ctx], Any]
Fragment = str | Callable[[Ctx], str]


def case(case_id: str, call: Call, error: type[Exception], *fragments: Fragment):
    return pytest.param(call, error, fragments, id=case_id)


CASES = [
    # -- load_dataset ------------------------------------------------------------------------
    case(
        "dataset-unknown-spec",
        lambda c: load_dataset("mnist"),
        ValueError,
        "dataset must be",
        "'mnist'",
        "'digits', 'glyphs', 'cifar10', 'synthetic-cifar10[:N]' (N >= 20) or 'imagefolder:PATH'",
    ),
    case(
        "dataset-val-fraction",
        lambda c: load_dataset("digits", val_fraction=1.0),
        ValueError,
        "val_fraction must be in (0, 1), got 1.0",
    ),
    case(
        "cifar10-files-missing",
        lambda c: load_dataset("cifar10", root=c.tmp),
        FileNotFoundError,
        lambda c: str(c.tmp / CIFAR10_FOLDER),
        "data_batch_1",
        "test_batch",
        "cifar-10-python.tar.gz",
    ),
    case(
        "cifar10-corrupt-batch",
        lambda c: load_dataset("cifar10", root=c.cifar()),
        ValueError,
        lambda c: str(c.tmp / CIFAR10_FOLDER / "data_batch_1"),
        "is corrupted",
        "md5",
    ),
    case(
        "imagefolder-missing-root",
        lambda c: load_dataset(f"imagefolder:{c.tmp / 'nowhere'}"),
        FileNotFoundError,
        lambda c: f"folder {c.tmp / 'nowhere'} does not exist",
        "train/, val/ and test/",
    ),
    case(
        "imagefolder-missing-split",
        lambda c: load_dataset(f"imagefolder:{missing_split(c)}", image_size=8),
        FileNotFoundError,
        lambda c: f"missing split folder {c.tmp / 'tree' / 'val'}/",
    ),
    case(
        "imagefolder-empty-class-folder",
        lambda c: load_dataset(f"imagefolder:{empty_class(c)}", image_size=8),
        FileNotFoundError,
        lambda c: f"class folder {c.tmp / 'tree' / 'val' / 'c'}/ holds no images",
        ".png",
    ),
    case(
        "imagefolder-split-without-classes",
        lambda c: load_dataset(f"imagefolder:{no_class_folders(c)}", image_size=8),
        FileNotFoundError,
        lambda c: f"{c.tmp / 'tree' / 'test'}/ holds no class folders",
    ),
    case(
        "imagefolder-single-class",
        lambda c: load_dataset(f"imagefolder:{c.tree(classes=('only',))}", image_size=8),
        ValueError,
        lambda c: f"{c.tmp / 'tree' / 'train'}/ has 1 class ['only']",
        "KD needs >= 2 classes",
    ),
    case(
        "imagefolder-truncated-image",
        lambda c: load_dataset(f"imagefolder:{truncated_png(c)}", image_size=8),
        ValueError,
        lambda c: f"unreadable image {c.tmp / 'tree' / 'train' / 'b' / '1.png'}",
    ),
    case(
        "imagefolder-image-size",
        lambda c: load_dataset(f"imagefolder:{c.tree()}", image_size=0),
        ValueError,
        "image_size must be an integer >= 1, got 0",
    ),
    # -- build_model -------------------------------------------------------------------------
    case(
        "model-unknown-name",
        lambda c: build_model("resnet99", 10),
        ValueError,
        "model must be one of",
        "'tiny_cnn'",
        "got 'resnet99'",
    ),
    case(
        "model-one-class",
        lambda c: build_model("tiny_cnn", 1),
        ValueError,
        "num_classes must be an integer >= 2, got 1",
    ),
    case(
        "model-zero-channels",
        lambda c: build_model("tiny_cnn", 10, in_channels=0),
        ValueError,
        "in_channels must be an integer >= 1, got 0",
    ),
    case(
        "model-image-too-small",
        lambda c: build_model("tiny_cnn", 10, image_size=1),
        ValueError,
        "image_size must be an integer >= 2 for tiny_cnn, got 1",
    ),
    case(
        "model-image-size-type",
        lambda c: build_model("simple_resnet", 10, image_size="32"),
        ValueError,
        "image_size must be an integer >= 1 for simple_resnet, got '32'",
    ),
    # -- losses ------------------------------------------------------------------------------
    case(
        "kd-loss-temperature",
        lambda c: kd_loss(*loss_inputs(), temperature=0.0),
        ValueError,
        "temperature must be > 0, got 0.0",
    ),
    case(
        "kd-loss-alpha",
        lambda c: kd_loss(*loss_inputs(), alpha=1.5),
        ValueError,
        "alpha must be in [0, 1], got 1.5",
    ),
    case(
        "kd-loss-logit-shapes",
        lambda c: kd_loss(torch.zeros(4, 10), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)),
        ValueError,
        "student_logits and teacher_logits must have the same shape",
        "got (4, 10) and (4, 5)",
    ),
    case(
        "kd-loss-target-length",
        lambda c: kd_loss(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long)),
        ValueError,
        "targets must have shape (4,)",
        "got (3,)",
    ),
    case(
        "soft-kd-term-shapes",
        lambda c: soft_kd_term(torch.zeros(8, 3), torch.zeros(4, 3), 2.0),
        ValueError,
        "got (8, 3) and (4, 3)",
    ),
    # -- fit -------------------------------------------------------------------------------
    case(
        "fit-num-epochs",
        lambda c: fit(c.tiny(), c.digits, num_epochs=0),
        ValueError,
        "num_epochs must be an integer >= 1, got 0",
    ),
    case(
        "fit-batch-size",
        lambda c: fit(c.tiny(), c.digits, batch_size=0),
        ValueError,
        "batch_size must be an integer >= 1, got 0",
    ),
    case(
        "fit-lr",
        lambda c: fit(c.tiny(), c.digits, lr=-1),
        ValueError,
        "lr must be a number > 0, got -1",
    ),
    case(
        "fit-optimizer",
        lambda c: fit(c.tiny(), c.digits, optimizer="lbfgs"),
        ValueError,
        "optimizer must be one of ['sgd', 'adamw'], got 'lbfgs'",
    ),
    case(
        "fit-model-classes",
        lambda c: fit(c.tiny(num_classes=5), c.digits),
        ValueError,
        "model outputs 5 classes, data set 'digits' has 10",
        "num_classes=10",
    ),
    case(
        "fit-teacher-classes",
        lambda c: fit(c.tiny(), c.digits, teacher=c.tiny(num_classes=5)),
        ValueError,
        "teacher outputs 5 classes, data set 'digits' has 10",
    ),
    case(
        "fit-model-channels",
        lambda c: fit(c.tiny(in_channels=3), c.digits),
        ValueError,
        "model cannot run on data set 'digits'",
        "(1, 8, 8)",
    ),
    case(
        "fit-data-type",
        lambda c: fit(c.tiny(), c.digits.train),
        TypeError,
        "data must be a kdbook.data.Dataset",
        "got Split",
    ),
    # -- load_checkpoint ---------------------------------------------------------------------
    case(
        "checkpoint-missing",
        lambda c: load_checkpoint(c.tmp / "none.pt"),
        FileNotFoundError,
        lambda c: f"checkpoint {c.tmp / 'none.pt'} does not exist",
    ),
    case(
        "checkpoint-truncated",
        lambda c: load_checkpoint(truncated_checkpoint(c)),
        ValueError,
        lambda c: f"checkpoint {c.tmp / 'cut.pt'} is not a readable kdbook checkpoint",
    ),
    case(
        "checkpoint-text-file",
        lambda c: load_checkpoint(a_file(c, "notes.pt", b"hello")),
        ValueError,
        lambda c: f"checkpoint {c.tmp / 'notes.pt'} is not a readable kdbook checkpoint",
    ),
    case(
        "checkpoint-a-tensor",
        lambda c: load_checkpoint(a_file(c, "t.pt", obj=torch.zeros(3))),
        ValueError,
        lambda c: f"checkpoint {c.tmp / 't.pt'} is not a kdbook checkpoint (no state_dict/meta)",
    ),
    case(
        "checkpoint-meta-incomplete",
        lambda c: load_checkpoint(
            a_file(c, "m.pt", obj={"state_dict": {}, "meta": {"model": "x"}})
        ),
        ValueError,
        "is not a kdbook checkpoint (meta lacks ['num_classes'",
    ),
    case(
        "checkpoint-another-dataset",
        lambda c: load_checkpoint(c.checkpoint(), replace(c.digits, name="cifar10")),
        ValueError,
        lambda c: f"checkpoint {c.tmp / 'tiny.pt'} was trained with dataset='digits'",
        "this data set has 'cifar10'",
    ),
    case(
        "checkpoint-another-num-classes",
        lambda c: load_checkpoint(c.checkpoint(), replace(c.digits, classes=c.digits.classes[:5])),
        ValueError,
        "was trained with num_classes=10, this data set has 5",
    ),
    case(
        "checkpoint-another-model",
        lambda c: load_checkpoint(c.checkpoint(), expect_model="digits_teacher"),
        ValueError,
        lambda c: (
            f"checkpoint {c.tmp / 'tiny.pt'} holds model 'tiny_cnn', expected 'digits_teacher'"
        ),
    ),
    # -- make_config -------------------------------------------------------------------------
    case(
        "config-preset",
        lambda c: make_config("huge"),
        ValueError,
        "preset must be one of ['cifar10', 'classroom', 'glyphs', 'imagefolder'], got 'huge'",
    ),
    case(
        "config-temperature",
        lambda c: make_config(temperature=-1.0),
        ValueError,
        "temperature must be a number > 0, got -1.0",
    ),
    case(
        "config-alpha",
        lambda c: make_config(alpha=2),
        ValueError,
        "alpha must be a number in [0, 1], got 2.0",
    ),
    case(
        "config-batch-size-type",
        lambda c: make_config(batch_size=2.5),
        ValueError,
        "batch_size must be an integer >= 1, got 2.5",
    ),
    case(
        "config-dataset",
        lambda c: make_config(dataset="imagefolder:"),
        ValueError,
        "dataset must be 'digits', 'glyphs', 'cifar10', 'synthetic-cifar10[:N]' (N >= 20) "
        "or 'imagefolder:PATH', got 'imagefolder:'",
    ),
]


@pytest.mark.parametrize(("call", "error", "fragments"), CASES)
def test_bad_input_is_refused_with_a_clear_message(digits, tmp_path, call, error, fragments):
    ctx = Ctx(digits, tmp_path)
    with pytest.raises(error) as info:
        call(ctx)
    assert type(info.value) is error  # not a subclass that slipped through from deeper down
    message = str(info.value)
    for fragment in fragments:
        expected = fragment(ctx) if callable(fragment) else fragment
        assert expected in message, f"{expected!r} not in {message!r}"


def test_mixed_image_modes_all_load_as_rgb(tmp_path):
    """RGBA, grayscale, palette and 16-bit grayscale images in one tree: all become RGB."""
    ctx = Ctx(None, tmp_path)  # type: ignore[arg-type]
    root = ctx.tree()
    folder = root / "train" / "a"
    Image.new("RGBA", (6, 6), (200, 10, 10, 0)).save(folder / "rgba.png")
    Image.new("L", (6, 6), 77).save(folder / "gray.png")
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 10, 220, 30] + [0] * 762)
    palette.save(folder / "palette.png")
    wide = np.full((6, 6), 32896, dtype=np.uint16)  # 128 * 257: mid-gray on 16 bits
    Image.fromarray(wide).save(folder / "xray16.png")
    assert Image.open(folder / "xray16.png").mode.startswith("I")

    data = load_dataset(f"imagefolder:{root}", image_size=6)
    assert data.train.images.shape == (8, 3, 6, 6) and data.train.images.dtype == torch.uint8
    names = ["0", "1", "gray", "palette", "rgba", "xray16"]  # class a, sorted by file name
    by_name = dict(zip(names, data.train.images[:6], strict=True))
    assert by_name["rgba"][:, 0, 0].tolist() == [200, 10, 10]
    assert by_name["gray"][:, 0, 0].tolist() == [77, 77, 77]
    assert by_name["palette"][:, 0, 0].tolist() == [10, 220, 30]
    assert by_name["xray16"][:, 0, 0].tolist() == [128, 128, 128]  # scaled, not clipped at 255


def test_fit_checks_before_any_work(digits):
    """A refused fit leaves the model as it was: no step, no BatchNorm statistics moved."""
    model = build_model("tiny_cnn", 5, in_channels=1, image_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="model outputs 5 classes"):
        fit(model, digits, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training  # its mode is restored too
