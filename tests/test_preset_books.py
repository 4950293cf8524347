"""tests/preset_books.py: the trees it writes are real JPEG ImageFolder trees that load, and
each extra book's parameters are ones `kdbook book` accepts (the books themselves run in
`make test`)."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image
from preset_books import FIVE_CLASSES, XRAY_CLASSES, extra_books

from kdbook.cli import parse_value
from kdbook.config import Config, dataset_note, make_config
from kdbook.data import load_dataset
from kdbook.machinery.selection import list_notebooks, notebook_parameters

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    root = tmp_path_factory.mktemp("preset-data")
    return root, extra_books(root)


def params_of(argv: list[str]) -> dict:
    assert argv[::3] == ["-p"] * (len(argv) // 3) and len(argv) % 3 == 0
    return {name: parse_value(value) for name, value in zip(argv[1::3], argv[2::3], strict=True)}


def test_four_books_one_per_preset_and_data_set(books) -> None:
    _, found = books
    assert list(found) == ["imagefolder-2", "imagefolder-5", "cifar10-synthetic", "glyphs"]
    presets = {name: params_of(argv)["preset"] for name, argv in found.items()}
    assert presets == {"imagefolder-2": "imagefolder", "imagefolder-5": "imagefolder",
                       "cifar10-synthetic": "cifar10", "glyphs": "glyphs"}  # fmt: skip
    assert params_of(found["glyphs"])["batch_size"] == 64  # the later -p wins over SHORT's 16


@pytest.mark.parametrize(("book", "classes"), [("imagefolder-2", XRAY_CLASSES),
                                               ("imagefolder-5", FIVE_CLASSES)])  # fmt: skip
def test_the_trees_are_real_jpegs_of_mixed_sizes_that_load(books, book, classes) -> None:
    root, found = books
    spec = params_of(found[book])["dataset"]
    folder = root / spec.split(":", 1)[1]
    files = sorted(folder.rglob("*"))
    images = [f for f in files if f.is_file()]
    assert images and all(f.suffix == ".jpg" for f in images)
    opened = [Image.open(f) for f in images]
    assert {im.format for im in opened} == {"JPEG"}
    assert {im.mode for im in opened} == {"L", "RGB"}  # grayscale among colour
    assert len({im.size for im in opened}) > 10  # mixed sizes, not square
    data = load_dataset(spec, image_size=32)
    assert data.classes == sorted(classes)
    for split in (data.train, data.val, data.test):
        counts = split.labels.bincount(minlength=len(classes))
        assert (counts >= 8).all()  # every class in every split, several images each


def test_the_parameters_are_ones_kdbook_book_accepts(books) -> None:
    _, found = books
    declared = set().union(*(notebook_parameters(n) for n in list_notebooks()))
    fields = {f.name for f in dataclasses.fields(Config)}
    for argv in found.values():
        params = params_of(argv)
        assert set(params) <= declared, set(params) - declared
        cfg = make_config(**{k: v for k, v in params.items() if k in fields})
        assert cfg.device != "auto" and cfg.num_seeds == 2
    synthetic = params_of(found["cifar10-synthetic"])["dataset"]
    assert synthetic.startswith("synthetic-cifar10:") and dataset_note(synthetic)
