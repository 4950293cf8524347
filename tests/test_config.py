"""make_config: presets fill what is left at None; every bad value is refused by name."""

from __future__ import annotations

import dataclasses

import pytest

from kdbook.config import PRESETS, Config, check_dataset_spec, make_config, resolve_device
from kdbook.models import list_models


@pytest.mark.parametrize("preset", ["classroom", "cifar10"])
def test_none_resolves_from_preset(preset):
    cfg = make_config(preset)
    for name, value in PRESETS[preset].items():
        assert getattr(cfg, name) == value, name
    assert cfg.preset == preset


def test_given_values_override_preset():
    cfg = make_config("classroom", num_epochs=3, lr=0.5, student="simple_resnet", seed=7)
    assert (cfg.num_epochs, cfg.lr, cfg.student, cfg.seed) == (3, 0.5, "simple_resnet", 7)
    assert cfg.batch_size == PRESETS["classroom"]["batch_size"]


def test_imagefolder_preset_takes_the_given_path():
    cfg = make_config("imagefolder", dataset="imagefolder:data/xray")
    assert cfg.dataset == "imagefolder:data/xray"
    assert cfg.num_epochs == PRESETS["imagefolder"]["num_epochs"]


def test_imagefolder_preset_without_dataset_says_so():
    with pytest.raises(ValueError, match=r"dataset .*imagefolder:PATH.*got None"):
        make_config("imagefolder")


def test_integer_temperature_and_alpha_become_floats():
    cfg = make_config(temperature=2, alpha=1)
    assert cfg.temperature == 2.0 and isinstance(cfg.temperature, float)
    assert cfg.alpha == 1.0 and isinstance(cfg.alpha, float)


def test_config_is_frozen_and_dicts_back():
    cfg = make_config()
    assert isinstance(cfg, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.temperature = 1.0  # type: ignore[misc]
    assert cfg.as_dict()["temperature"] == 4.0
    assert set(cfg.as_dict()) == {f.name for f in dataclasses.fields(Config)}


# (keyword, bad value, text the message must contain about what is accepted)
BAD_VALUES = [
    ("temperature", 0.0, "> 0"),
    ("temperature", -1.0, "> 0"),
    ("alpha", -0.1, "[0, 1]"),
    ("alpha", 1.5, "[0, 1]"),
    ("batch_size", 0, ">= 1"),
    ("num_epochs", 0, ">= 1"),
    ("num_seeds", 0, ">= 1"),
    ("seed", -1, ">= 0"),
    ("lr", 0.0, "> 0"),
    ("label_fraction", 0.0, "(0, 1]"),
    ("label_fraction", 1.5, "(0, 1]"),
    ("teacher", "resnet99", "tiny_cnn"),
    ("student", "nope", "simple_resnet"),
    ("device", "gpu", "'cuda:N'"),
    ("device", "cuda:", "'cuda:N'"),
    ("device", "cpu\n", "'cpu'"),
    ("dataset", "mnist", "'imagefolder:PATH'"),
    ("dataset", "imagefolder:", "'imagefolder:PATH'"),
    ("run_dir", "", "non-empty"),
    ("batch_size", 2.5, "integer"),
    ("num_epochs", True, "integer"),
]


@pytest.mark.parametrize(("name", "value", "accepted"), BAD_VALUES)
def test_bad_value_names_parameter_value_and_accepted(name, value, accepted):
    with pytest.raises(ValueError) as info:
        make_config(**{name: value})
    message = str(info.value)
    assert message.startswith(f"{name} must be"), message
    assert repr(value) in message
    assert accepted in message


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError) as info:
        make_config("huge")
    message = str(info.value)
    assert "preset" in message and "'huge'" in message
    for name in PRESETS:
        assert name in message


def test_unknown_model_lists_registered_models():
    with pytest.raises(ValueError) as info:
        make_config(teacher="vgg")
    for name in list_models():
        assert name in str(info.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_good_device_strings_pass(device):
    assert make_config(device=device).device == device


@pytest.mark.parametrize("spec", ["digits", "cifar10", "imagefolder:/x", "imagefolder:data/y"])
def test_good_dataset_specs_pass(spec):
    check_dataset_spec(spec)


def test_bad_dataset_spec_type():
    with pytest.raises(ValueError, match=r"dataset must be .*got 3"):
        check_dataset_spec(3)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")


def test_resolve_device_refuses_missing_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    with pytest.raises(ValueError, match=r"device .*'cuda:0'"):
        resolve_device("cuda:0")
