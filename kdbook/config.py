"""Presets and the one typed configuration every notebook and command builds.

Every shared parameter is declared once, in :data:`PARAMS` (name, type, default, check,
comment); :class:`Config`, :func:`make_config`, :func:`check_params`, :func:`default` and
the ``kdbook`` command's ``-p`` parameters are derived from that declaration. The notebooks'
``parameters`` cell holds literals only; the next cell calls :func:`config_from`, which
picks the declared names out of the notebook's namespace, fills every ``None`` from the
preset and validates the whole set before any work starts.

>>> cfg = make_config(preset="classroom", temperature=2.0)
>>> cfg.temperature, cfg.dataset
(2.0, 'digits')
>>> config_from({"preset": "classroom", "alpha": 0.5, "hint_weight": 1.0}).alpha
0.5
>>> default("temperature"), default("num_epochs")
(4.0, 30)
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Look-alike characters rendered from matplotlib's fonts, made here in a second (kdbook.glyphs).
GLYPHS = "glyphs"
DEFAULT_PRESET = "classroom"  # sized for digits: another data set given with it takes its own

# The language models of 15-16 on a CPU (every preset but cifar10's GPU sizes): a 0.43M-
# parameter teacher reading 64 characters, trained 3 passes over the training text (about
# 550 steps), and a 21k student that reads 512 windows of it (9 % of the text: what it
# cannot learn from them alone, the teacher can tell it) 12 times (192 steps).
LM_CPU: dict[str, Any] = {
    "teacher": "char_small",
    "student": "char_tiny",
    "context": 64,
    "teacher_epochs": 3,
    "epochs": 12,
    "windows": 512,
    "lr": 3e-3,
}

# The sizes each preset stands for. A parameter left at ``None`` takes the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Embedded digits on a 2-core CPU: each notebook in about a minute.
    "classroom": {
        "dataset": "digits",
        "teacher": "digits_teacher",
        "student": "tiny_cnn",
        "num_epochs": 30,
        "lr": 0.05,
        "batch_size": 64,
        "num_seeds": 10,
        "label_fraction": 0.05,
        "device": "cpu",
        "image_size": 64,  # ImageFolder trees only
        **{f"lm_{k}": v for k, v in LM_CPU.items()},
    },
    # Glyphs on a 2-core CPU, with the classroom's teacher and student (only the data differ):
    # the teacher near 92 % on faces it never saw (about 20 s of training), the student well
    # below it; 20 epochs and 5 seeds, as a step on 16 x 16 images costs 4 times one on 8 x 8.
    "glyphs": {
        "dataset": GLYPHS,
        "teacher": "digits_teacher",
        "student": "tiny_cnn",
        "num_epochs": 20,
        "lr": 0.05,
        "batch_size": 64,
        "num_seeds": 5,
        "label_fraction": 0.1,  # 13 labelled images a class: about one per training face
        "device": "cpu",
        "image_size": 64,  # ImageFolder trees only
        **{f"lm_{k}": v for k, v in LM_CPU.items()},
    },
    # CIFAR-10 on one GPU (place the data in data/): source 1's models, loss and optimizer,
    # shortened from its 200 epochs of batch 128 to fit the book's time budget.
    "cifar10": {
        "dataset": "cifar10",
        "teacher": "resnet18_cifar",
        "student": "simple_resnet",
        "num_epochs": 40,
        "lr": 0.1,
        "batch_size": 256,
        "num_seeds": 3,
        "label_fraction": 0.1,
        "device": "auto",
        "image_size": 64,  # ImageFolder trees only
        # The language models of 15-16 at GPU size, UNMEASURED until a GPU runs them: a
        # 3.3M-parameter teacher reading 256 characters, a 0.12M student, longer training.
        "lm_teacher": "char_medium",
        "lm_student": "char_mini",
        "lm_context": 256,
        "lm_teacher_epochs": 10,
        "lm_epochs": 4,
        "lm_windows": 4096,
        "lm_lr": 1e-3,
    },
    # An ImageFolder tree such as the chest X-ray layout (source 4), sized for a CPU.
    "imagefolder": {
        "dataset": None,  # must be given: imagefolder:PATH
        "teacher": "resnet18_cifar",
        "student": "tiny_cnn",
        "num_epochs": 10,
        "lr": 0.05,
        "batch_size": 64,
        "num_seeds": 3,
        "label_fraction": 0.1,
        "device": "auto",
        "image_size": 64,
        **{f"lm_{k}": v for k, v in LM_CPU.items()},
    },
}

# What a preset becomes when its device turns out to be a CPU, for every parameter left at
# None: sizes that keep each notebook near a minute on a laptop (give the parameter, e.g.
# ``-p image_size 64 -p num_epochs 10 -p teacher resnet18_cifar``, for the full size).
CPU_SIZES: dict[str, dict[str, Any]] = {
    "imagefolder": {"image_size": 32, "num_epochs": 5, "teacher": "simple_resnet"},
    "cifar10": {f"lm_{k}": v for k, v in LM_CPU.items()},  # 15-16's language models
}

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# CIFAR-shaped made-up images that need no download: 'synthetic-cifar10' (the default size)
# or 'synthetic-cifar10:N' (N training images), built by kdbook.data.synthetic_cifar10.
SYNTHETIC_CIFAR10 = "synthetic-cifar10"
SYNTHETIC_PATTERN = re.compile(rf"^{SYNTHETIC_CIFAR10}(:([1-9]\d*))?$")
SYNTHETIC_MIN_SIZE = 20  # training images: two of each class at least


def _fail(name: str, value: Any, accepted: str) -> None:
    raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_dataset_spec(spec: Any) -> bool:
    return isinstance(spec, str) and (
        spec in ("digits", GLYPHS, "cifar10")
        or (spec.startswith("imagefolder:") and len(spec) > 12)
        or synthetic_size(spec) is not None
    )


def synthetic_size(spec: Any) -> int | None:
    """The training images of a ``synthetic-cifar10[:N]`` spec (0: the default size), else None.

    >>> synthetic_size("synthetic-cifar10:300"), synthetic_size("synthetic-cifar10")
    (300, 0)
    >>> synthetic_size("cifar10") is None, synthetic_size("synthetic-cifar10:5") is None
    (True, True)
    """
    match = SYNTHETIC_PATTERN.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        return None
    size = int(match.group(2) or 0)
    return size if size == 0 or size >= SYNTHETIC_MIN_SIZE else None


def dataset_preset(spec: Any) -> str | None:
    """The preset made for data set ``spec`` (None for a spec that names none).

    >>> dataset_preset("glyphs"), dataset_preset("synthetic-cifar10:300")
    ('glyphs', 'cifar10')
    >>> dataset_preset("imagefolder:data/xray"), dataset_preset("digits")
    ('imagefolder', 'classroom')
    """
    if not _is_dataset_spec(spec):
        return None
    if spec.startswith("imagefolder:"):
        return "imagefolder"
    if synthetic_size(spec) is not None:
        return "cifar10"  # its stand-in
    return next(name for name, sizes in PRESETS.items() if sizes["dataset"] == spec)


def preset_for(preset: str, dataset: Any) -> str:
    """The preset a run takes: ``preset``, except that the default one, ``'classroom'``
    (sized for digits), with another data set becomes that data set's own preset.

    So ``-p dataset imagefolder:PATH`` alone runs the ``imagefolder`` sizes (and their CPU
    sizes), not the classroom's ten seeds of 30 epochs on photographs; every parameter given
    still overrides the preset's.

    >>> preset_for("classroom", "glyphs"), preset_for("classroom", None)
    ('glyphs', 'classroom')
    >>> preset_for("imagefolder", "digits")  # a preset given is kept
    'imagefolder'
    """
    if preset != DEFAULT_PRESET or dataset is None:
        return preset
    return dataset_preset(dataset) or preset


def dataset_note(spec: Any) -> str | None:
    """What a data set's name does not say on its own, for every line that shows it: the
    synthetic stand-in for CIFAR-10 is labelled SYNTHETIC; the real data sets have no note.

    >>> dataset_note("synthetic-cifar10:300")[:9], dataset_note("digits")
    ('SYNTHETIC', None)
    """
    if synthetic_size(spec) is None:
        return None
    return (
        "SYNTHETIC: made-up CIFAR-shaped images of 10 made-up classes, not CIFAR-10; "
        "its numbers say nothing about CIFAR-10"
    )


def _is_model(value: Any) -> bool:
    from kdbook.models import list_models  # local: models imports torch, config must not

    return value in list_models()


def _models_accepted() -> str:
    from kdbook.models import list_models

    return f"one of {list_models()}"


def _is_text_model(value: Any) -> bool:
    from kdbook.models import list_models

    return value in list_models("text")


def _text_models_accepted() -> str:
    from kdbook.models import list_models

    return f"one of {list_models('text')}"


@dataclass(frozen=True)
class Param:
    """One shared parameter of the book, declared once.

    ``default`` is ``None`` for a parameter the preset supplies (see :data:`PRESETS`).
    ``accepted`` is what an error says the accepted values are (a function when the list
    is only known at run time, as the registered models). ``fit``: :func:`kdbook.train.fit`
    takes it under the same name; ``train``: ``kdbook train -p`` takes it.
    """

    name: str
    type: type
    default: Any
    check: Callable[[Any], bool]
    accepted: str | Callable[[], str]
    comment: str
    fit: bool = False
    train: bool = True

    def validate(self, value: Any) -> None:
        """Raise ValueError naming this parameter, ``value`` and what is accepted."""
        if not self.check(value):
            accepted = self.accepted if isinstance(self.accepted, str) else self.accepted()
            _fail(self.name, value, accepted)


_INT_GE_1 = "an integer >= 1"
_DATASETS = (
    f"'digits', '{GLYPHS}', 'cifar10', '{SYNTHETIC_CIFAR10}[:N]' (N >= {SYNTHETIC_MIN_SIZE}) "
    "or 'imagefolder:PATH'"
)

PARAMS: tuple[Param, ...] = (
    Param("dataset", str, None, _is_dataset_spec, _DATASETS,
          f"'digits', '{GLYPHS}' (made here, harder), 'cifar10', '{SYNTHETIC_CIFAR10}[:N]' "
          "(no download, SYNTHETIC) or 'imagefolder:PATH'; None means the preset's"),
    Param("preset", str, DEFAULT_PRESET, lambda v: v in PRESETS, f"one of {sorted(PRESETS)}",
          "sizes: 'classroom' (digits, CPU), 'glyphs' (CPU), 'cifar10' (GPU), 'imagefolder'; "
          "a data set given with 'classroom' takes its own"),
    Param("seed", int, 0, lambda v: _is_int(v) and v >= 0, "an integer >= 0",
          "seed of the first run; seeds are seed, seed+1, ..."),
    Param("num_seeds", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "runs per comparison; None means the preset's", train=False),
    Param("teacher", str, None, _is_model, _models_accepted,
          "teacher architecture; None means the preset's"),
    Param("student", str, None, _is_model, _models_accepted,
          "student architecture; None means the preset's"),
    Param("temperature", float, 4.0, lambda v: _is_number(v) and v > 0, "a number > 0",
          "T of the KD loss", fit=True),
    Param("alpha", float, 0.7, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]",
          "weight of the soft (KD) term; 1 - alpha weights cross-entropy", fit=True),
    Param("num_epochs", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "epochs per training run; None means the preset's", fit=True),
    Param("lr", float, None, lambda v: _is_number(v) and v > 0, "a number > 0",
          "learning rate; None means the preset's", fit=True),
    Param("batch_size", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "images per training step; None means the preset's", fit=True),
    Param("device", str, None, lambda v: isinstance(v, str) and bool(DEVICE_PATTERN.fullmatch(v)),
          "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
          "'cpu', 'cuda', 'auto' (resolved once, here); None means the preset's", fit=True),
    Param("run_dir", str, "runs/lab", lambda v: isinstance(v, str) and bool(v),
          "a non-empty path", "folder shared by the notebooks of one run", train=False),
    Param("threads", str, "auto", lambda v: v == "auto" or (_is_int(v) and v >= 1),
          "'auto' or an integer >= 1",
          "CPU threads per run: 'auto' is 1 for small models, the cores for big ones", train=False),
    Param("image_size", int, None, lambda v: _is_int(v) and v >= 2, "an integer >= 2",
          "side ImageFolder images are resized to; None means the preset's", train=False),
    Param("label_fraction", float, None, lambda v: _is_number(v) and 0 < v <= 1,
          "a number in (0, 1]", "share of training labels kept in the scarce-label setting",
          train=False),
    Param("lm_teacher", str, None, _is_text_model, _text_models_accepted,
          "language-model teacher (15-16); None means the preset's", train=False),
    Param("lm_student", str, None, _is_text_model, _text_models_accepted,
          "language-model student (15-16); None means the preset's", train=False),
    Param("lm_context", int, None, lambda v: _is_int(v) and v >= 2, "an integer >= 2",
          "characters a language model reads at once; None means the preset's", train=False),
    Param("lm_teacher_epochs", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "passes of the language-model teacher over the training text; None means the "
          "preset's", train=False),
    Param("lm_epochs", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "passes of each language-model student over its windows; None means the preset's",
          train=False),
    Param("lm_windows", int, None, lambda v: _is_int(v) and v >= 1, _INT_GE_1,
          "training windows of each language-model student; None means the preset's",
          train=False),
    Param("lm_lr", float, None, lambda v: _is_number(v) and v > 0, "a number > 0",
          "AdamW learning rate of the language-model teacher, the lowest of the students' "
          "grid; None means the preset's", train=False),
)  # fmt: skip

_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
FIELDS: tuple[str, ...] = tuple(_BY_NAME)
TRAIN_FIELDS: tuple[str, ...] = tuple(p.name for p in PARAMS if p.train)


def _param(name: str) -> Param:
    if name not in _BY_NAME:
        raise ValueError(f"parameter must be one of {list(FIELDS)}, got {name!r}")
    return _BY_NAME[name]


def default(name: str) -> Any:
    """The default of a declared parameter; for one a preset supplies, the classroom preset's.

    >>> default("alpha"), default("lr"), default("batch_size")
    (0.7, 0.05, 64)
    """
    value = _param(name).default
    return PRESETS["classroom"][name] if value is None else value


def describe(names: tuple[str, ...] = FIELDS) -> list[str]:
    """One line per parameter, ``name: type = default  # comment`` (for help texts)."""
    return [
        f"{p.name}: {p.type.__name__} = {p.default!r}  # {p.comment}"
        for p in (_param(n) for n in names)
    ]


def _fit_kwargs(self: Any, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`kdbook.train.fit` this configuration sets.

    ``num_epochs``, ``lr``, ``batch_size``, ``device``, ``temperature`` and ``alpha``
    (fit ignores the last two without a teacher); ``overrides`` replace or add entries
    (``cfg.fit_kwargs(num_epochs=5, precision="bf16")``). The seed is not among them:
    each run passes its own.
    """
    return {p.name: getattr(self, p.name) for p in PARAMS if p.fit} | overrides


def _as_dict(self: Any) -> dict[str, Any]:
    """The resolved parameters, in declaration order (the ``config`` of metrics files)."""
    return dataclasses.asdict(self)


Config = dataclasses.make_dataclass(
    "Config",
    [(p.name, p.type) for p in PARAMS],
    frozen=True,
    namespace={
        "__doc__": "Every shared knob of the book, resolved against a preset and validated.",
        "as_dict": _as_dict,
        "fit_kwargs": _fit_kwargs,
    },
)
Config.__module__ = __name__


def check_dataset_spec(spec: Any) -> None:
    """Raise ValueError unless ``spec`` names a known data set (paths are checked at load)."""
    _param("dataset").validate(spec)


def check_params(params: Mapping[str, Any]) -> None:
    """Validate shared parameters by name; raise ValueError naming the first bad one.

    Only the names present are checked (names that are not declared pass), so a notebook
    or command can pass a subset. ``None`` means "the preset's value" for every knob a
    preset sets.
    """
    for name, value in params.items():
        if name not in _BY_NAME or (value is None and name in PRESETS["classroom"]):
            continue
        _BY_NAME[name].validate(value)


def make_config(preset: str = "classroom", **given: Any) -> Config:
    """Resolve parameters against ``preset`` and validate them all before any work.

    Args:
        preset: one of :data:`PRESETS`; supplies every parameter left at ``None``. The
            default, ``'classroom'``, given another data set than digits, becomes that data
            set's own preset (:func:`preset_for`).
        **given: the book's shared parameters (:data:`PARAMS`, README "Parameters");
            one not given takes its declared default.

    Returns:
        A frozen :class:`Config`. Its ``device`` is one torch accepts: ``'auto'`` is
        resolved here, once (:func:`resolve_device`), so nothing downstream sees it.
    """
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise TypeError(
            f"make_config() got an unexpected parameter {unknown[0]!r}; accepted: "
            f"{', '.join(FIELDS)}"
        )
    check_params({"preset": preset})
    preset = preset_for(preset, given.get("dataset"))
    sizes = PRESETS[preset] | cpu_sizes(preset, given.get("device"))
    resolved = {}
    for p in PARAMS:
        value = preset if p.name == "preset" else given.get(p.name, p.default)
        if value is None:  # None: the preset's value, else the declared default
            value = sizes.get(p.name, p.default)
        if p.type is float and _is_int(value):
            value = float(value)
        resolved[p.name] = value
    if resolved["dataset"] is None:
        _fail("dataset", None, f"given with preset {preset!r} ('imagefolder:PATH')")
    check_params(resolved)
    if resolved["device"] == "auto":
        resolved["device"] = resolve_device("auto")
    return Config(**resolved)


make_config.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("preset", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="classroom")]
    + [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
        for p in PARAMS
        if p.name != "preset"
    ],
    return_annotation="Config",
)


def cpu_sizes(preset: str, device: str | None) -> dict[str, Any]:
    """:data:`CPU_SIZES` of ``preset`` when ``device`` (None: the preset's) is a CPU, else {}."""
    if preset not in CPU_SIZES:
        return {}
    device = device or PRESETS[preset]["device"]
    check_params({"device": device})
    return CPU_SIZES[preset] if resolve_device(device) == "cpu" else {}


def config_from(namespace: Mapping[str, Any]) -> Config:
    """:func:`make_config` from the declared names found in ``namespace``.

    A notebook calls ``cfg = config_from(globals())`` after its parameters cell: every
    shared parameter it declares reaches the configuration, the others take their
    defaults, and the notebook's own parameters (``hint_weight``, ...) are left alone.
    ``threads`` (papermill's ``-p threads 2``) becomes the process's thread setting
    (:func:`kdbook.runtime.use_threads`). ``run_dir`` becomes a private copy when the
    folder is another process's, or this notebook is an executed copy inside it
    (:func:`kdbook.machinery.runfolder.writable_run_dir`).
    """
    from kdbook.machinery.runfolder import writable_run_dir
    from kdbook.runtime import use_threads

    given = {name: namespace[name] for name in FIELDS if name in namespace}
    cfg = make_config(**given)
    cfg = dataclasses.replace(cfg, run_dir=writable_run_dir(cfg.run_dir))  # one writer a folder
    use_threads(cfg.threads)  # the start of the work: the thread setting of every run after it
    if (line := preset_line(cfg, given.get("preset"))) is not None:
        print(line)
    smaller = {k: v for k, v in cpu_sizes(cfg.preset, given.get("device")).items()
               if k in given and given[k] is None}  # fmt: skip  # what the notebook declares
    if smaller:
        sizes = ", ".join(f"{k} {v}" for k, v in smaller.items())
        print(f"preset {cfg.preset!r} on a CPU: {sizes} (near a minute a notebook); "
              f"for the full size run with {full_size_options(cfg.preset, smaller)}")  # fmt: skip
    for line in setup_lines(cfg, given.get("device")):
        print(line)
    return cfg


def preset_line(cfg: Config, preset: str | None) -> str | None:
    """Where the data set chose the preset (:func:`preset_for`): which one runs and what it
    costs, in one line; None where ``preset`` (the one given, None for the default) runs.

    >>> preset_line(make_config(dataset="glyphs"), None)
    "preset 'glyphs', the data set's own ('classroom' is sized for digits): digits_teacher -> tiny_cnn, 20 epochs, 5 seeds, on cpu"
    """  # noqa: E501
    if cfg.preset == (preset or DEFAULT_PRESET):
        return None
    return (
        f"preset {cfg.preset!r}, the data set's own ({DEFAULT_PRESET!r} is sized for digits): "
        f"{cfg.teacher} -> {cfg.student}, {cfg.num_epochs} epochs, {cfg.num_seeds} seeds, "
        f"on {cfg.device}"
    )


def setup_lines(cfg: Config, device: str | None = None, preset: str | None = None) -> list[str]:
    """What a run says before its work, one line each, where there is something to say:

    - with ``preset`` (the one given; ``'classroom'``, the default, when none was), the
      preset that a data set given with the default chose (:func:`preset_line`);
    - the device ``'auto'`` became (``device``: the one given, None for the preset's), and,
      where a preset made for a GPU trains its full-size teacher on a CPU, that it does and
      that each training prints its expected time after its first epoch;
    - a SYNTHETIC data set's label (:func:`dataset_note`).

    :func:`config_from` prints them at the top of every notebook; ``kdbook book`` can print
    them once before the first.
    """
    lines = [] if preset is None or (line := preset_line(cfg, preset)) is None else [line]
    requested = device or PRESETS[cfg.preset]["device"]
    if requested == "auto":
        found = "a CUDA GPU" if cfg.device.startswith("cuda") else "no CUDA GPU here"
        line = f"device 'auto' -> {cfg.device!r} ({found})"
        if (notice := cpu_notice(cfg)) is not None:
            line += f": {notice}"
        lines.append(line)
    elif (notice := cpu_notice(cfg)) is not None:
        lines.append(f"device {cfg.device!r}: {notice}")
    if (note := dataset_note(cfg.dataset)) is not None:
        lines.append(f"dataset {cfg.dataset!r}: {note}")
    return lines


def cpu_notice(cfg: Config) -> str | None:
    """Where a preset made for a GPU (its device 'auto') trains its full-size teacher on a
    CPU: that it does, how big that teacher is, and where the time estimate comes from."""
    preset = PRESETS[cfg.preset]
    if cfg.device != "cpu" or preset["device"] == "cpu" or cfg.teacher != preset["teacher"]:
        return None
    from kdbook.models import build_model, count_params  # local: models imports torch

    params = count_params(build_model(cfg.teacher, 10))
    return (
        f"preset {cfg.preset!r} trains its teacher {cfg.teacher} ({params / 1e6:.1f}M parameters) "
        "on this CPU, which is slow (a GPU is the preset's device); each training prints its "
        "expected time after its first epoch"
    )


def full_size_options(preset: str, names: Iterable[str] | None = None) -> str:
    """The papermill options that undo a preset's CPU sizes, e.g. for ``imagefolder``
    ``-p image_size 64 -p num_epochs 10 -p teacher resnet18_cifar`` (``names``: only these)."""
    names = CPU_SIZES.get(preset, {}) if names is None else names
    return " ".join(f"-p {k} {PRESETS[preset][k]}" for k in names)


def resolve_device(device: str) -> str:
    """Map ``'auto'`` to ``'cuda'`` when a GPU is present, else ``'cpu'``; check availability."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be one that exists here ('cpu' or 'auto'), got {device!r}")
    return device
