"""The glyphs data set: characters drawn from matplotlib's fonts, made here from a seed."""

from __future__ import annotations

import pytest
import torch

import kdbook.glyphs
from kdbook.data import Loader, load_dataset
from kdbook.environment import OK, environment_report
from kdbook.glyphs import (
    GLYPH_CLASSES,
    PER_FONT,
    SPLIT_FONTS,
    TRAIN_FONTS,
    cache_path,
    load_glyphs,
    make_glyphs,
    missing_fonts,
    render_masters,
)


@pytest.fixture(scope="module")
def small():
    return make_glyphs(per_font=2, seed=3)


def test_the_same_seed_makes_the_same_images_and_another_seed_others(small):
    again = make_glyphs(per_font=2, seed=3)
    other = make_glyphs(per_font=2, seed=4)
    for name in SPLIT_FONTS:
        assert all(torch.equal(a, b) for a, b in zip(small[name], again[name], strict=True))
        assert not torch.equal(small[name][0], other[name][0])


def test_every_split_holds_every_class_and_face_in_equal_shares(small):
    for name, fonts in SPLIT_FONTS.items():
        images, labels, faces = small[name]
        assert images.dtype == torch.uint8 and images.shape == (len(labels), 1, 16, 16)
        pairs = torch.stack([labels, faces], 1).unique(dim=0, return_counts=True)[1]
        assert len(pairs) == len(GLYPH_CLASSES) * len(fonts) and set(pairs.tolist()) == {2}
        assert labels.bincount().tolist() == [2 * len(fonts)] * len(GLYPH_CLASSES)


def test_the_default_sizes_and_the_held_out_faces():
    splits = make_glyphs()
    for name, fonts in SPLIT_FONTS.items():
        assert len(splits[name][1]) == PER_FONT[name] * len(fonts) * len(GLYPH_CLASSES)
    assert [len(splits[n][1]) for n in ("train", "val", "test")] == [1320, 600, 1000]
    faces = [set(fonts) for fonts in SPLIT_FONTS.values()]
    assert not (faces[0] & faces[1] or faces[0] & faces[2] or faces[1] & faces[2])
    assert missing_fonts() == []  # every face is one matplotlib ships


def test_every_image_shows_ink_on_paper(small):
    for images, _, _ in small.values():
        flat = images.flatten(1).float()
        assert (flat.amax(1) - flat.amin(1)).min() > 50  # grey levels, of 255


def test_a_character_differs_from_face_to_face():
    masters = render_masters(TRAIN_FONTS)  # (faces, classes, 64, 64), ink 1
    assert masters.shape == (len(TRAIN_FONTS), len(GLYPH_CLASSES), 64, 64)
    assert masters.amax() == pytest.approx(1.0, abs=0.01)
    gaps = (masters[:, None] - masters[None]).abs().mean((-1, -2))  # (faces, faces, classes)
    others = ~torch.eye(len(TRAIN_FONTS), dtype=torch.bool)
    assert gaps[others].min() > 0.005, "two faces draw a character alike"
    # and the images made from them: each face's average image of a class is its own
    images, labels, faces = make_glyphs(per_font=8, seed=0)["train"]
    means = torch.stack(
        [images[(labels == 0) & (faces == f)].float().mean(0) for f in range(len(TRAIN_FONTS))]
    )
    spread = (means[:, None] - means[None]).abs().mean((-1, -2, -3))
    assert spread[others].min() > 1.0  # grey levels


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_font": 0}, "per_font must be an integer >= 1 or None, got 0"),
        ({"per_font": 2.5}, "per_font must be an integer >= 1 or None, got 2.5"),
        ({"per_font": True}, "per_font must be an integer >= 1 or None, got True"),
        ({"image_size": 7}, "image_size must be an integer >= 8, got 7"),
        ({"image_size": "16"}, "image_size must be an integer >= 8, got '16'"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ],
)
def test_a_bad_parameter_is_named_in_one_line(kwargs, message):
    with pytest.raises(ValueError) as info:
        make_glyphs(**kwargs)
    assert str(info.value) == message


def test_another_image_size(small):
    images, _, _ = make_glyphs(per_font=1, image_size=24)["test"]
    assert images.shape[1:] == (1, 24, 24)


def test_load_glyphs_makes_them_once_then_reads_them(tmp_path, monkeypatch):
    made = load_glyphs(tmp_path, seed=0)
    path = cache_path(tmp_path, 0)
    assert path.is_file() and path.parent == tmp_path / "glyphs"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    def fail(**_):
        raise AssertionError("made again")

    monkeypatch.setattr(kdbook.glyphs, "make_glyphs", fail)
    read = load_glyphs(tmp_path, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(made["test"], read["test"], strict=True))


def test_a_damaged_cache_is_made_again(tmp_path):
    path = cache_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a tensor file")
    splits = load_glyphs(tmp_path, seed=1)
    assert torch.equal(splits["val"][0], make_glyphs(seed=1)["val"][0])
    assert torch.load(path, weights_only=True)["val"][1].tolist() == splits["val"][1].tolist()


def test_the_cache_name_follows_the_settings(monkeypatch):
    before = cache_path("data", 0)
    assert cache_path("data", 1) != before
    monkeypatch.setitem(kdbook.glyphs.WARP, "degrees", 30.0)
    assert cache_path("data", 0) != before


def test_load_dataset_glyphs_shares_dataset_and_loader(tmp_path):
    data = load_dataset("glyphs", root=tmp_path)
    assert data.name == "glyphs" and data.classes == list(GLYPH_CLASSES)
    assert data.summary() == {
        "dataset": "glyphs",
        "train": 1320,
        "val": 600,
        "test": 1000,
        "shape": [1, 16, 16],
        "classes": 10,
    }
    assert not data.augment.flip  # characters are not mirror-symmetric
    assert torch.equal(data.test.images, make_glyphs()["test"][0])
    x, y, index = next(iter(Loader(data, data.train, 64, shuffle=True, augment=True)))
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.5 and 0.5 < x.std().item() < 2  # normalised
    assert torch.equal(y, data.train.labels[index])
    other = load_dataset("glyphs", root=tmp_path, split_seed=1)  # the seed they are made from
    assert not torch.equal(other.train.images, data.train.images)


def test_the_preset_models_take_the_glyphs(tmp_path):
    from kdbook.config import PRESETS
    from kdbook.models import build_model

    data = load_dataset("glyphs", root=tmp_path)
    x = data.normalize(data.val.images[:4])
    for role in ("teacher", "student"):
        model = build_model(PRESETS["glyphs"][role], data).eval()
        assert model(x).shape == (4, 10)


def test_doctor_lists_the_glyphs():
    rows = {row.name: row for row in environment_report()}
    row = rows["data glyphs"]
    assert row.status == OK and "21 faces of matplotlib's fonts" in row.found


def test_doctor_says_which_fonts_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(kdbook.glyphs, "font_folder", lambda: tmp_path)
    rows = {row.name: row for row in environment_report()}
    row = rows["data glyphs"]
    assert row.status == "FAIL" and "21 font files missing" in row.found
    assert "reinstall matplotlib" in row.action
    with pytest.raises(FileNotFoundError, match=r"font DejaVuSans.ttf is not in .*reinstall"):
        make_glyphs(per_font=1)


def test_the_glyphs_data_set_says_its_splits_are_other_faces(tmp_path):
    from kdbook.data import load_dataset
    from kdbook.glyphs import SPLIT_FONTS

    origin = load_dataset("glyphs", root=tmp_path).origin
    assert origin["val"] == f"drawn from {len(SPLIT_FONTS['val'])} other faces, none of train's"
    assert origin["train"].startswith(f"drawn from {len(SPLIT_FONTS['train'])} font faces")
