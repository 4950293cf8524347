"""make_config: presets fill what is left at None; every bad value is refused by name."""

from __future__ import annotations

import dataclasses

import pytest

from kdbook.config import (
    DEVICE_PATTERN,
    PRESETS,
    Config,
    check_dataset_spec,
    config_from,
    cpu_sizes,
    dataset_note,
    make_config,
    resolve_device,
    setup_lines,
    synthetic_size,
)
from kdbook.models import list_models


@pytest.mark.parametrize("preset", ["classroom", "glyphs", "cifar10"])
def test_none_resolves_from_preset(preset):
    cfg = make_config(preset)
    sizes = PRESETS[preset] | cpu_sizes(preset, None)  # a preset's CPU sizes on a CPU
    for name, value in sizes.items():
        expected = resolve_device(value) if name == "device" else value  # 'auto' resolved once
        assert getattr(cfg, name) == expected, name
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


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_good_device_strings_pass(device):
    assert make_config(device=device).device == device


# Every preset, with the data set it needs, and 'auto' given or left to the preset.
PRESET_CASES = [
    {"preset": "classroom"},
    {"preset": "glyphs"},
    {"preset": "cifar10"},
    {"preset": "cifar10", "dataset": "synthetic-cifar10:200"},
    {"preset": "imagefolder", "dataset": "imagefolder:some/tree"},
    {"preset": "classroom", "device": "auto"},
    {"preset": "imagefolder", "dataset": "imagefolder:some/tree", "device": "auto"},
]


@pytest.mark.parametrize("given", PRESET_CASES, ids=lambda g: "-".join(map(str, g.values())))
def test_the_config_a_notebook_gets_carries_a_device_torch_accepts(given, capsys):
    """'auto' is resolved once, where the configuration is made: no notebook can pass it on
    to torch (``.to(cfg.device)``), and config_from says in one line what it became."""
    import torch

    assert set(PRESETS) == {c["preset"] for c in PRESET_CASES}, "a new preset: add its case"
    for cfg in (make_config(**given), config_from(given)):
        assert cfg.device != "auto" and DEVICE_PATTERN.fullmatch(cfg.device)
        assert torch.device(cfg.device).type in ("cpu", "cuda", "mps")
        assert cfg.fit_kwargs()["device"] == cfg.device
        torch.zeros(1).to(
            cfg.device if cfg.device != "cuda" or torch.cuda.is_available() else "cpu"
        )
    out = capsys.readouterr().out
    auto = given.get("device", PRESETS[given["preset"]]["device"]) == "auto"
    lines = [line for line in out.splitlines() if line.startswith("device ")]
    assert len(lines) == (1 if auto else 0), out
    if auto:
        assert lines[0].startswith(f"device 'auto' -> {make_config(**given).device!r} (")


def test_a_gpu_preset_on_a_cpu_says_it_trains_its_teacher_there_in_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    cfg = config_from({"preset": "cifar10"})
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("device")]
    assert line.startswith("device 'auto' -> 'cpu' (no CUDA GPU here): preset 'cifar10' trains")
    assert f"teacher {cfg.teacher} (11.2M parameters) on this CPU" in line
    assert "expected time after its first epoch" in line
    # a preset made for the CPU, or a CPU-sized teacher, says nothing of the kind
    assert setup_lines(make_config()) == []
    smaller = make_config("imagefolder", dataset="imagefolder:x")
    assert setup_lines(smaller) == ["device 'auto' -> 'cpu' (no CUDA GPU here)"]


@pytest.mark.parametrize(
    "spec", ["synthetic-cifar10", "synthetic-cifar10:20", "synthetic-cifar10:300"]
)
def test_synthetic_cifar10_specs_pass_and_are_labelled_synthetic(spec, capsys):
    check_dataset_spec(spec)
    assert synthetic_size(spec) == (0 if spec == "synthetic-cifar10" else int(spec.split(":")[1]))
    assert dataset_note(spec).startswith("SYNTHETIC: ") and "not CIFAR-10" in dataset_note(spec)
    config_from({"preset": "cifar10", "dataset": spec})
    assert f"dataset {spec!r}: SYNTHETIC: " in capsys.readouterr().out
    assert dataset_note("cifar10") is None and dataset_note("digits") is None


@pytest.mark.parametrize(
    "spec", ["synthetic-cifar10:", "synthetic-cifar10:0", "synthetic-cifar10:19",
             "synthetic-cifar10:x", "synthetic-cifar10:-5", "synthetic", "synthetic-cifar100"],
)  # fmt: skip
def test_bad_synthetic_specs_are_refused(spec):
    with pytest.raises(
        ValueError, match=r"dataset must be .*'synthetic-cifar10\[:N\]' \(N >= 20\)"
    ):
        check_dataset_spec(spec)


@pytest.mark.parametrize(
    "spec", ["digits", "glyphs", "cifar10", "imagefolder:/x", "imagefolder:data/y"]
)
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
