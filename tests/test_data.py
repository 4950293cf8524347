"""Data sets as uint8 tensors, splits without leaks, augmentation and the batched loader.

CIFAR-10 and ImageFolder go through torchvision's real loaders on miniature data sets
written here in the real on-disk formats (no mock of the loading code).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbook.data import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_STD,
    SYNTHETIC_CIFAR10_SIZE,
    UNLABELED,
    Augment,
    Loader,
    check_available,
    load_dataset,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def image_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images]


# -- digits -------------------------------------------------------------------------------


def test_digits_shapes_and_classes(digits):
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8
        assert split.images.shape[1:] == (1, 8, 8)
        assert split.labels.dtype == torch.int64
        assert len(split.images) == len(split.labels)
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.num_classes == 10
    assert (digits.in_channels, digits.image_size) == (1, 8)
    assert int(digits.train.images.max()) == 255  # 0..16 rescaled to the full uint8 range
    assert digits.summary() == {
        "dataset": "digits",
        "train": len(digits.train),
        "val": len(digits.val),
        "test": len(digits.test),
        "shape": [1, 8, 8],
        "classes": 10,
    }


def test_digits_splits_are_disjoint_and_complete(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    train, val, test = (
        set(image_hashes(s.images)) for s in (digits.train, digits.val, digits.test)
    )
    # Every digits image is distinct, so equal hashes would mean a sample in two splits.
    assert len(train) + len(val) + len(test) == 1797
    assert not train & val and not train & test and not val & test
    # val is carved from train (about 10% of it), test is about 20% of the whole.
    assert abs(len(digits.val) / (len(digits.train) + len(digits.val)) - 0.1) < 0.01
    assert abs(len(digits.test) / 1797 - 0.2) < 0.01
    for split in (digits.train, digits.val, digits.test):
        assert set(split.labels.tolist()) == set(range(10))  # stratified


def test_splits_are_reproducible_and_depend_on_split_seed(digits):
    again = load_dataset("digits")
    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.val.labels, digits.val.labels)
    assert torch.equal(again.test.images, digits.test.images)
    other = load_dataset("digits", split_seed=1)
    assert not torch.equal(other.test.images, digits.test.images)


def test_val_fraction_is_checked():
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 0"):
        load_dataset("digits", val_fraction=0)


def test_unknown_spec_is_refused():
    with pytest.raises(ValueError, match="dataset must be"):
        load_dataset("mnist")


@pytest.mark.parametrize("fraction", [0.05, 0.3, 1.0])
def test_label_fraction_per_class(digits, fraction):
    scarce = digits.with_label_fraction(fraction, seed=3)
    assert torch.equal(scarce.train.images, digits.train.images)  # images stay
    assert torch.equal(scarce.val.labels, digits.val.labels)
    kept = scarce.train.labels != UNLABELED
    # Labels that stay are the true ones.
    assert torch.equal(scarce.train.labels[kept], digits.train.labels[kept])
    for c in range(10):
        n_class = int((digits.train.labels == c).sum())
        n_kept = int((scarce.train.labels == c).sum())
        assert n_kept == max(1, round(fraction * n_class))
        assert n_kept >= 1
    # The original is not modified.
    assert (digits.train.labels != UNLABELED).all()


def test_label_fraction_tiny_keeps_one_per_class(digits):
    scarce = digits.with_label_fraction(1e-6)
    labels = scarce.train.labels[scarce.train.labels != UNLABELED]
    assert sorted(labels.tolist()) == list(range(10))


def test_label_fraction_is_reproducible_and_checked(digits):
    a = digits.with_label_fraction(0.1, seed=0).train.labels
    b = digits.with_label_fraction(0.1, seed=0).train.labels
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\], got 0"):
        digits.with_label_fraction(0)


# -- augmentation ---------------------------------------------------------------------------


def random_images(n=16, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)


def test_augment_identity_without_pad_or_flip():
    x = random_images()
    assert torch.equal(Augment(pad=0, flip=False)(x), x)


@pytest.mark.parametrize("augment", [Augment(pad=2), Augment(flip=True), Augment(2, True)])
def test_augment_keeps_shape_and_dtype(augment):
    x = random_images()
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_shifted_images_are_shifted_copies():
    pad = 2
    x = random_images(n=32)
    y = Augment(pad=pad)(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(y[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1, f"image {i} is not one shift of its input"
        offsets.add(matches[0])
    assert len(offsets) > 1  # the shift is random, not one fixed offset


def test_flip_mirrors_some_and_keeps_the_rest():
    x = random_images(n=64)
    y = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(x)


def test_augment_is_reproducible_with_a_generator():
    x = random_images()
    aug = Augment(pad=2, flip=True)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# -- loader ---------------------------------------------------------------------------------


def test_loader_yields_normalised_batches_with_indices(digits):
    loader = Loader(digits, digits.val, 32)
    assert len(loader) == -(-len(digits.val) // 32)
    seen = []
    for x, y, idx in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert torch.equal(y, digits.val.labels[idx])
        assert torch.allclose(x, digits.normalize(digits.val.images[idx]))
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # digits: mean 0, std 1
        seen.append(idx)
    assert torch.equal(torch.cat(seen), torch.arange(len(digits.val)))


def test_normalize_uses_mean_and_std(digits):
    from dataclasses import replace

    shifted = replace(digits, mean=(0.5,), std=(0.25,))
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert shifted.normalize(x).flatten().tolist() == [-2.0, 2.0]


def test_shuffled_loader_covers_every_sample_once(digits):
    loader = Loader(digits, digits.train, 100, shuffle=True, augment=True, seed=0)
    idx = torch.cat([i for _, _, i in loader])
    assert torch.equal(idx.sort().values, torch.arange(len(digits.train)))
    first = torch.cat([i for _, _, i in Loader(digits, digits.train, 100, shuffle=True, seed=0)])
    assert torch.equal(idx, first)  # same seed, same order


def test_augmented_loader_labels_follow_indices(digits):
    for _, y, idx in Loader(digits, digits.train, 64, shuffle=True, augment=True):
        assert torch.equal(y, digits.train.labels[idx])


@pytest.mark.parametrize("shuffle", [True, False])
def test_num_batches_cycles_with_full_batches(digits, shuffle):
    small = digits.train.subset(torch.arange(10))
    loader = Loader(digits, small, 4, shuffle=shuffle, num_batches=7)
    batches = [idx for _, _, idx in loader]
    assert len(batches) == len(loader) == 7
    assert all(len(b) == 4 for b in batches)
    assert set(torch.cat(batches).tolist()) == set(range(10))
    # The first pass over the split holds every sample exactly once.
    first_pass = torch.cat(batches)[:10]
    assert sorted(first_pass.tolist()) == list(range(10))


def test_loader_checks_batch_size_and_empty_split(digits):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        Loader(digits, digits.val, 0)
    with pytest.raises(ValueError, match="no samples"):
        Loader(digits, digits.val.subset(torch.zeros(0, dtype=torch.long)), 4)


# -- synthetic-cifar10: made here, labelled SYNTHETIC ---------------------------------------


def test_synthetic_cifar10_needs_no_file_and_is_cifar_shaped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing on disk to read
    check_available("synthetic-cifar10:100")
    data = load_dataset("synthetic-cifar10:100", root=tmp_path / "nothing-here")
    assert data.name == "synthetic-cifar10:100"  # the spec: SYNTHETIC in every name shown
    assert [len(data.train), len(data.val), len(data.test)] == [100, 20, 20]
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.classes == [f"synthetic {i}" for i in range(10)]
    for split in (data.train, data.val, data.test):
        counts = split.labels.bincount(minlength=10)
        assert counts.max() - counts.min() <= 1  # every class, in equal shares
    assert (data.mean, data.std, data.augment) == (CIFAR10_MEAN, CIFAR10_STD, Augment(4, True))
    default = load_dataset("synthetic-cifar10")
    assert default.name == "synthetic-cifar10" and len(default.train) == SYNTHETIC_CIFAR10_SIZE


def test_synthetic_cifar10_is_reproducible_and_learnable():
    """The same images for the same spec; a class can be told from its images (a nearest
    class-mean rule does far better than chance on test), but not perfectly."""
    data = load_dataset("synthetic-cifar10:400")
    again = load_dataset("synthetic-cifar10:400")
    assert torch.equal(data.train.images, again.train.images)
    assert torch.equal(data.test.labels, again.test.labels)
    flat = data.train.images.flatten(1).float()
    means = torch.stack([flat[data.train.labels == c].mean(0) for c in range(10)])
    guess = torch.cdist(data.test.images.flatten(1).float(), means).argmin(1)
    assert 30 < 100 * (guess == data.test.labels).float().mean() < 95


# -- CIFAR-10 through torchvision's real CIFAR10 ---------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Write str and bytes as Python 2 strings, as the real CIFAR-10 pickles hold them.

    torchvision loads them with ``encoding="latin1"``, so their keys read as ``"data"``
    (and as ``b"data"`` with ``encoding="bytes"``), exactly as the downloaded files do.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def _write_py2_pickle(path: Path, obj) -> str:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_PER_BATCH = 20  # 5 train batches of 20 and a test batch of 20


def _cifar_batch(seed: int, name: str) -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (CIFAR_PER_BATCH, 3072), dtype=np.uint8)
    labels = [(seed + i) % 10 for i in range(CIFAR_PER_BATCH)]
    batch = {
        "batch_label": name,
        "labels": labels,
        "data": data,
        "filenames": [f"img_{seed}_{i}.png" for i in range(CIFAR_PER_BATCH)],
    }
    return batch, data, labels


@pytest.fixture
def mini_cifar(tmp_path, monkeypatch):
    """A miniature CIFAR-10 in the real format; returns (root, train data, train labels,
    test data, test labels).

    torchvision's CIFAR10 checks each file's md5 on every construction (``_check_integrity``
    and ``_load_meta``), even with ``download=False``, so miniature files would be refused.
    The one change: the class's md5 lists are patched to the md5s of the files written here.
    The real reading code runs unchanged.
    """
    from torchvision.datasets import CIFAR10

    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    train_list, train_data, train_labels = [], [], []
    for i, name in enumerate(CIFAR10_FILES):
        batch, data, labels = _cifar_batch(i, f"training batch {i + 1} of 5")
        train_list.append([name, _write_py2_pickle(folder / name, batch)])
        train_data.append(data)
        train_labels += labels
    batch, test_data, test_labels = _cifar_batch(99, "testing batch 1 of 1")
    test_list = [["test_batch", _write_py2_pickle(folder / "test_batch", batch)]]
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": CIFAR_PER_BATCH, "num_vis": 3072}
    meta_md5 = _write_py2_pickle(folder / "batches.meta", meta)

    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", test_list)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": meta_md5})
    return tmp_path, np.concatenate(train_data), train_labels, test_data, test_labels


def test_miniature_files_are_in_the_python2_format(mini_cifar):
    root = mini_cifar[0]
    with open(root / CIFAR10_FOLDER / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= entry.keys()
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (CIFAR_PER_BATCH, 3072)
    with open(root / CIFAR10_FOLDER / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][0] == b"airplane"


def test_cifar10_loads_through_torchvision(mini_cifar):
    root, train_data, train_labels, test_data, test_labels = mini_cifar
    data = load_dataset("cifar10", root=root)
    assert data.classes == CIFAR_CLASSES
    assert data.name == "cifar10"
    assert (data.in_channels, data.image_size) == (3, 32)
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
    # The test split is the test batch, in order, rows read as (C, H, W).
    expected_test = torch.from_numpy(test_data).view(-1, 3, 32, 32)
    assert torch.equal(data.test.images, expected_test)
    assert data.test.labels.tolist() == test_labels
    # val is carved out of the five training batches: together they are exactly train.
    assert len(data.train) + len(data.val) == 5 * CIFAR_PER_BATCH
    assert len(data.val) >= 10  # at least one per class
    carved = torch.cat([data.train.images, data.val.images]).flatten(1)
    rows = {bytes(r.tolist()): lab for r, lab in zip(train_data, train_labels, strict=True)}
    labels = torch.cat([data.train.labels, data.val.labels]).tolist()
    assert sorted(bytes(r.tolist()) for r in carved) == sorted(rows)
    assert all(rows[bytes(r.tolist())] == lab for r, lab in zip(carved, labels, strict=True))
    assert not set(image_hashes(data.val.images)) & set(image_hashes(data.train.images))
    assert data.augment == Augment(pad=4, flip=True)


def test_cifar10_missing_file_names_it_and_the_folder(mini_cifar):
    root = mini_cifar[0]
    (root / CIFAR10_FOLDER / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=root)
    message = str(info.value)
    assert "data_batch_3" in message and str(root / CIFAR10_FOLDER) in message
    assert "data_batch_1" not in message  # only what is missing


def test_cifar10_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        check_available("cifar10", tmp_path)


def test_cifar10_corrupted_file_is_named_by_its_md5(mini_cifar):
    root = mini_cifar[0]
    path = root / CIFAR10_FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupted") as info:
        load_dataset("cifar10", root=root)
    assert f"file {path} is corrupted" in str(info.value)


# -- ImageFolder ----------------------------------------------------------------------------


def _write_jpeg(path: Path, color, size=(20, 12), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format="JPEG", quality=95)


@pytest.fixture
def xray_tree(tmp_path) -> Path:
    """train/val/test/<class>/*.jpg: red NORMAL and blue PNEUMONIA, one grayscale JPEG."""
    root = tmp_path / "xray"
    counts = {"train": 3, "val": 2, "test": 2}
    for split, n in counts.items():
        for i in range(n):
            _write_jpeg(root / split / "NORMAL" / f"n{i}.jpg", (200, 20, 20))
            _write_jpeg(root / split / "PNEUMONIA" / f"p{i}.jpg", (20, 20, 200))
    _write_jpeg(root / "train" / "NORMAL" / "gray.jpg", 128, mode="L")
    return root


def test_imagefolder_loads_and_resizes(xray_tree):
    data = load_dataset(f"imagefolder:{xray_tree}", image_size=16)
    assert data.classes == ["NORMAL", "PNEUMONIA"]
    assert data.name == f"imagefolder:{xray_tree}"
    assert [len(data.train), len(data.val), len(data.test)] == [7, 4, 4]
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 16, 16)
    # ImageFolder sorts files: NORMAL/gray.jpg comes first, then n0..n2, then PNEUMONIA.
    assert data.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    gray = data.train.images[0].int()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(gray.float().mean().item() - 128) < 3
    red = data.train.images[1].float().mean(dim=(1, 2))
    blue = data.train.images[-1].float().mean(dim=(1, 2))
    assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0]
    assert data.normalize(data.val.images).dtype == torch.float32


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_imagefolder_missing_split_folder(xray_tree):
    import shutil

    shutil.rmtree(xray_tree / "val")
    with pytest.raises(FileNotFoundError, match="missing split folder") as info:
        load_dataset(f"imagefolder:{xray_tree}")
    assert str(xray_tree / "val") in str(info.value)


def test_imagefolder_mismatched_classes(xray_tree):
    _write_jpeg(xray_tree / "test" / "COVID" / "c0.jpg", (0, 200, 0))
    with pytest.raises(ValueError, match="test/ has classes"):
        load_dataset(f"imagefolder:{xray_tree}", image_size=16)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_imagefolder_unreadable_jpeg_names_its_path(xray_tree, damage):
    path = xray_tree / "val" / "PNEUMONIA" / "p1.jpg"
    if damage == "truncated":
        # A real photo-like JPEG, cut in the middle of its entropy-coded data.
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    else:
        path.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ValueError, match="unreadable image") as info:
        load_dataset(f"imagefolder:{xray_tree}", image_size=16)
    assert str(path) in str(info.value)


def test_each_data_set_says_where_its_splits_come_from(digits):
    from kdbook.data import load_dataset, synthetic_cifar10

    assert digits.origin["val"] == "carved from train (stratified, 10%)"
    assert load_dataset("digits", val_fraction=0.2).origin["val"].endswith("(stratified, 20%)")
    assert digits.with_label_fraction(0.1).origin == digits.origin  # a view keeps it
    assert "SYNTHETIC" in synthetic_cifar10(40).origin["train"]
    for d in (digits, synthetic_cifar10(40)):
        assert sorted(d.origin) == ["test", "train", "val"]
