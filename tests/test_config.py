"""make_config: presets fill what is left at None; every bad value is refused by name."""

from __future__ import annotations

import dataclasses

import pytest

from kdbook.config import (
    PRESETS,
    Config,
    check_dataset_spec,
    config_from,
    cpu_sizes,
    make_config,
    resolve_device,
)
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
    sizes = PRESETS["imagefolder"] | cpu_sizes("imagefolder", None)  # CPU sizes on a CPU
    assert cfg.num_epochs == sizes["num_epochs"]


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


# -- the one declaration ----------------------------------------------------------------------


def test_config_fields_are_the_declared_parameters_in_order():
    from kdbook.config import FIELDS, PARAMS

    assert [f.name for f in dataclasses.fields(Config)] == [p.name for p in PARAMS] == list(FIELDS)
    assert list(make_config().as_dict()) == list(FIELDS)  # the order of results.json's config
    assert {f.name: f.type for f in dataclasses.fields(Config)}["temperature"] is float


def test_default_takes_the_declaration_or_the_classroom_preset():
    from kdbook.config import default

    assert (default("temperature"), default("alpha"), default("seed")) == (4.0, 0.7, 0)
    assert default("num_epochs") == PRESETS["classroom"]["num_epochs"] == 30
    assert (default("lr"), default("batch_size")) == (0.05, 64)
    with pytest.raises(ValueError, match=r"parameter must be one of \[.*'alpha'.*\], got 'T'"):
        default("T")


def test_config_from_picks_the_declared_names_only():
    from kdbook.config import config_from

    namespace = {"preset": "cifar10", "alpha": 0.5, "hint_weight": 3.0, "teacher": None, "x": 1}
    cfg = config_from(namespace)
    assert cfg == make_config("cifar10", alpha=0.5)
    assert cfg.teacher == PRESETS["cifar10"]["teacher"]
    with pytest.raises(ValueError, match="alpha must be a number in"):
        config_from({"alpha": 2.5, "other": "ignored"})


def test_fit_kwargs_hands_fit_its_settings():
    cfg = make_config(num_epochs=3, temperature=2.0)
    assert cfg.fit_kwargs() == {
        "num_epochs": 3,
        "lr": 0.05,
        "batch_size": 64,
        "device": "cpu",
        "temperature": 2.0,
        "alpha": 0.7,
    }
    over = cfg.fit_kwargs(alpha=0.1, precision="bf16")
    assert over["alpha"] == 0.1 and over["precision"] == "bf16" and over["num_epochs"] == 3
    assert cfg.alpha == 0.7  # the configuration is not changed


def test_make_config_refuses_an_unknown_parameter_and_keeps_its_signature():
    import inspect

    with pytest.raises(TypeError, match=r"unexpected parameter 'tempreature'; accepted: dataset"):
        make_config(tempreature=2.0)
    signature = inspect.signature(make_config)
    assert list(signature.parameters)[:3] == ["preset", "dataset", "seed"]
    assert signature.parameters["temperature"].default == 4.0
    assert signature.parameters["num_epochs"].default is None


def test_float_parameters_take_integers_and_unknown_names_pass_the_check():
    from kdbook.config import check_params

    cfg = make_config(lr=1, label_fraction=1)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and isinstance(cfg.label_fraction, float)
    check_params({"hint_weight": -1, "seed": 2})  # not a shared parameter: not checked here
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        check_params({"seed": -1})


def test_train_help_lists_the_declared_parameters():
    from kdbook.cli import build_parser
    from kdbook.config import TRAIN_FIELDS, describe

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    help_text = train.format_help()
    assert "num_seeds" not in TRAIN_FIELDS and "temperature" in TRAIN_FIELDS
    for line in describe(TRAIN_FIELDS):
        assert line in help_text
    assert describe(("alpha",)) == [
        "alpha: float = 0.7  # weight of the soft (KD) term; 1 - alpha weights cross-entropy"
    ]


def test_imagefolder_on_a_cpu_takes_cpu_sizes_and_says_how_to_ask_for_the_full_size(capsys):
    from kdbook.config import CPU_SIZES, PRESETS, full_size_options

    spec = "imagefolder:some/tree"
    # a notebook's parameters: what it declares and left at None
    declared = {"preset": "imagefolder", "dataset": spec, "device": "cpu", "image_size": None,
                "num_epochs": None, "teacher": None}  # fmt: skip
    cfg = config_from(declared)
    for name, value in CPU_SIZES["imagefolder"].items():
        assert getattr(cfg, name) == value
    out = capsys.readouterr().out
    full = full_size_options("imagefolder")
    assert full == "-p image_size 64 -p num_epochs 10 -p teacher resnet18_cifar"
    assert "on a CPU" in out and out.rstrip().endswith(f"for the full size run with {full}")
    # only the options the notebook declares (kdbook book refuses the others)
    config_from({k: v for k, v in declared.items() if k != "teacher"})
    assert capsys.readouterr().out.rstrip().endswith("run with -p image_size 64 -p num_epochs 10")
    # what is given is kept, and nothing shrinks on the classroom preset
    cfg = config_from({**declared, "image_size": 48})
    assert cfg.image_size == 48 and "-p image_size" not in capsys.readouterr().out
    assert make_config().image_size == PRESETS["classroom"]["image_size"]
