"""Comparisons over seeds: the t-interval against scipy, compare on digits, and the one
result type's tables, rows and verdicts checked against hand-computed values."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from scipy import stats

from kdbook.compare import (
    GAIN,
    KD,
    REFERENCE,
    SCRATCH,
    Comparison,
    compare,
    first_layer_norm,
    mean_ci,
    relative_verdict,
    summarize,
    summarize_methods,
)
from kdbook.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("values", [[93.0, 94.0, 95.0], [1.0, 4.0], [0.5, 0.7, 0.2, 0.9, 0.4]])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_is_the_t_interval(values, confidence):
    mean, half = mean_ci(values, confidence)
    n = len(values)
    hand_mean = sum(values) / n
    sd = math.sqrt(sum((v - hand_mean) ** 2 for v in values) / (n - 1))
    low, high = stats.t.interval(confidence, n - 1, loc=hand_mean, scale=sd / math.sqrt(n))
    assert mean == pytest.approx(hand_mean)
    assert half == pytest.approx((high - low) / 2)
    assert mean - half == pytest.approx(low)


def test_mean_ci_one_value_and_none():
    mean, half = mean_ci([3.0])
    assert mean == 3.0 and math.isnan(half)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_first_layer_norm_reads_the_first_weight():
    model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    assert first_layer_norm(model) == pytest.approx(model.features[0][0].weight.norm().item())


def test_compare_on_digits(digits, monkeypatch):
    import kdbook.train
    from kdbook.train import fit

    torch.manual_seed(0)
    teacher = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    fit(teacher, digits, num_epochs=1, progress=False)
    starts = []  # (seed, distilled?, initial weights) of every fit compare makes

    def recording_fit(model, data, **kwargs):
        starts.append((kwargs["seed"], "teacher" in kwargs, copy.deepcopy(model.state_dict())))
        return fit(model, data, **kwargs)

    monkeypatch.setattr(kdbook.train, "fit", recording_fit)
    result = compare(
        "tiny_cnn", teacher, digits, seeds=[0, 1], num_epochs=3, setting="test", progress=False,
        stack=False,  # one fit per run, each recorded (tests/test_stack.py: side by side)
    )  # fmt: skip
    # Per seed: one scratch and one KD run, starting from identical weights.
    assert [(seed, kd) for seed, kd, _ in starts] == [(0, False), (0, True), (1, False), (1, True)]
    for (_, _, scratch), (_, _, distilled) in (starts[0:2], starts[2:4]):
        assert all(torch.equal(scratch[k], distilled[k]) for k in scratch)
    assert not torch.equal(starts[0][2]["head.1.weight"], starts[2][2]["head.1.weight"])
    assert isinstance(result, Comparison) and result.setting == "test"
    per_seed = result.per_seed
    assert list(per_seed.index) == [0, 1] and per_seed.index.name == "seed"
    assert list(per_seed.columns) == [
        "init_norm",
        "student (scratch)",
        "student (KD)",
        "gain (KD - scratch)",
    ]
    # Both students of a seed start from the same weights; another seed, other weights.
    for seed in (0, 1):
        torch.manual_seed(seed)
        init = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
        assert per_seed.loc[seed, "init_norm"] == pytest.approx(first_layer_norm(init))
    assert per_seed.loc[0, "init_norm"] != per_seed.loc[1, "init_norm"]
    gain = per_seed["student (KD)"] - per_seed["student (scratch)"]
    assert per_seed["gain (KD - scratch)"].tolist() == pytest.approx(gain.tolist())
    assert per_seed[["student (scratch)", "student (KD)"]].stack().between(0, 100).all()

    summary = result.summary
    assert list(summary.index) == ["student (scratch)", "student (KD)", "gain (KD - scratch)"]
    assert list(summary.columns) == ["mean", "ci95", "n"]
    assert (summary["n"] == 2).all()
    for method in summary.index:
        mean, half = mean_ci(per_seed[method].tolist())
        assert summary.loc[method, "mean"] == pytest.approx(mean)
        assert summary.loc[method, "ci95"] == pytest.approx(half)
    row = result.row()
    assert row["num_seeds"] == 2 and row["setting"] == "test"
    assert row["gain_mean"] == pytest.approx(summary.loc["gain (KD - scratch)", "mean"])
    assert isinstance(result.verdict(), str)


def test_compare_needs_seeds(digits):
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        compare("tiny_cnn", None, digits, seeds=[])


def synthetic(gains: list[float]) -> Comparison:
    per_seed = pd.DataFrame(
        {
            "student (scratch)": [80.0] * len(gains),
            "student (KD)": [80.0 + g for g in gains],
            "gain (KD - scratch)": gains,
        },
        index=pd.Index(range(len(gains)), name="seed"),
    )
    summary = summarize(per_seed, list(per_seed.columns))
    return Comparison(per_seed, summary, "synthetic")


def test_verdict_wording():
    helps = synthetic([2.0, 2.2, 1.8, 2.1]).verdict()
    assert helps.startswith("KD helps: gain +2.0 ± ") and helps.endswith("excludes 0")
    hurts = synthetic([-3.0, -3.1, -2.9]).verdict()
    assert hurts.startswith("KD hurts: gain -3.0 ± ") and hurts.endswith("excludes 0")
    noise = synthetic([1.0, -1.0, 0.5, -0.2]).verdict()
    assert noise.startswith("inside seed noise: gain +0.1 ± ") and noise.endswith("includes 0")
    one_seed = synthetic([5.0]).verdict()
    assert one_seed == "one seed, no interval: gain +5.0 points (run more seeds to judge)"


def test_compare_methods_shares_the_start_and_gives_fresh_adapters(digits) -> None:
    from kdbook.compare import SCRATCH, compare_methods
    from kdbook.losses import HintLoss
    from kdbook.models import build_model

    teacher = build_model("tiny_cnn", 10, in_channels=1, image_size=8).eval()
    made = []

    def make_hint():
        made.append(HintLoss(4, 4))
        return made[-1]

    result = compare_methods(
        "tiny_cnn",
        digits,
        {
            "logit KD": {"teacher": teacher},
            "hint": {"teacher": teacher, "feature_loss": make_hint, "feature_weight": 1.0},
        },
        seeds=[0, 1],
        baseline="logit KD",
        num_epochs=3,
        stack=False,  # each run timed alone: the time ratios
    )
    assert len(made) == 2 and made[0] is not made[1], "one fresh adapter per seed"
    assert list(result.summary.index) == [SCRATCH, "logit KD", "hint"]
    assert result.summary.loc[SCRATCH, "gain_vs_scratch"] == 0
    assert result.summary.loc["logit KD", "gain_vs_logit KD"] == 0
    per_seed = result.per_seed
    expected = (per_seed["hint"] - per_seed[SCRATCH]).mean()
    assert abs(result.summary.loc["hint", "gain_vs_scratch"] - expected) < 1e-9
    assert (result.summary["time_ratio_vs_scratch"] > 0).all()
    assert per_seed.loc[0, "init_norm"] != per_seed.loc[1, "init_norm"]


def test_seed_rows_flatten_the_per_seed_table() -> None:
    from kdbook.machinery.sweep import metrics_rows

    rows = synthetic([2.0, -1.0]).seed_rows()
    assert rows == [
        {
            "setting": "synthetic",
            "seed": 0,
            "scratch_test_accuracy": 80.0,
            "kd_test_accuracy": 82.0,
            "gain": 2.0,
        },
        {
            "setting": "synthetic",
            "seed": 1,
            "scratch_test_accuracy": 80.0,
            "kd_test_accuracy": 79.0,
            "gain": -1.0,
        },
    ]
    # a sweep table gets one row per seed from them
    flat = metrics_rows({"comparisons": [{"setting": "synthetic"}], "per_seed": rows, "x": 1})
    assert [r["seed"] for r in flat] == [0, 1] and all(r["x"] == 1 for r in flat)


# A hand-built comparison: scratch and two methods over three seeds, with seconds per epoch.
T975_2 = stats.t.ppf(0.975, 2)  # Student's t, 95%, 2 degrees of freedom (3 seeds)


def hand_built(setting: str = "5% labels") -> Comparison:
    per_seed = pd.DataFrame(
        {
            "init_norm": [1.0, 2.0, 3.0],
            SCRATCH: [80.0, 81.0, 82.0],
            f"{SCRATCH} s/epoch": [1.0, 1.0, 1.0],
            "A": [83.0, 84.0, 85.0],  # +3 on every seed
            "A s/epoch": [2.0, 2.0, 2.0],
            "B": [80.5, 81.0, 82.5],  # +0.5, 0, +0.5 over scratch
            "B s/epoch": [3.0, 3.0, 3.0],
        },
        index=pd.Index([0, 1, 2], name="seed"),
    )
    return Comparison.from_per_seed(per_seed, ["A", "B"], baseline="A", setting=setting)


def test_summarize_methods_against_hand_computed_values() -> None:
    s = hand_built().summary
    assert list(s.index) == [SCRATCH, "A", "B"]
    assert list(s.columns) == [
        "accuracy",
        "accuracy_ci95",
        "gain_vs_scratch",
        "gain_vs_scratch_ci95",
        "gain_vs_A",
        "gain_vs_A_ci95",
        "s_per_epoch",
        "time_ratio_vs_scratch",
        "n",
    ]
    assert s["accuracy"].tolist() == pytest.approx([81.0, 84.0, 244 / 3])
    sd_b = math.sqrt(((80.5 - 244 / 3) ** 2 + (81 - 244 / 3) ** 2 + (82.5 - 244 / 3) ** 2) / 2)
    assert s["accuracy_ci95"].tolist() == pytest.approx(
        [T975_2 / math.sqrt(3), T975_2 / math.sqrt(3), T975_2 * sd_b / math.sqrt(3)]
    )
    # paired: B - scratch = (0.5, 0, 0.5): mean 1/3, sd 0.5/sqrt(3)
    assert s["gain_vs_scratch"].tolist() == pytest.approx([0.0, 3.0, 1 / 3])
    assert s["gain_vs_scratch_ci95"].tolist() == pytest.approx([0.0, 0.0, T975_2 * 0.5 / 3])
    assert s["gain_vs_A"].tolist() == pytest.approx([-3.0, 0.0, -8 / 3])
    assert s["gain_vs_A_ci95"].tolist() == pytest.approx([0.0, 0.0, T975_2 * 0.5 / 3])
    assert s["s_per_epoch"].tolist() == [1.0, 2.0, 3.0]
    assert s["time_ratio_vs_scratch"].tolist() == [1.0, 2.0, 3.0]


def test_summarize_methods_names_a_missing_column() -> None:
    per_seed = hand_built().per_seed.drop(columns=["B"])
    with pytest.raises(ValueError, match=r"missing \['B'\]"):
        summarize_methods(per_seed, [SCRATCH, "A", "B"])
    untimed = summarize_methods(per_seed.drop(columns=["A s/epoch"]), [SCRATCH, "A"])
    assert "s_per_epoch" not in untimed.columns  # seconds only when every run has them


def test_table_formats_verdicts_references_and_times() -> None:
    table = hand_built().table()
    assert list(table.columns) == [
        "accuracy (%)",
        "gain over scratch (points)",
        "vs scratch",
        "gain over A (points)",
        "vs A",
        "s / epoch",
        "time vs scratch (x)",
        "time vs A (x)",
    ]
    assert table["accuracy (%)"].tolist() == ["81.0 ± 2.5", "84.0 ± 2.5", "81.3 ± 2.6"]
    assert table["gain over scratch (points)"].tolist() == [REFERENCE, "+3.0 ± 0.0", "+0.3 ± 0.7"]
    assert table["vs scratch"].tolist() == [REFERENCE, "A helps", "inside seed noise"]  # by name
    assert table["gain over A (points)"].tolist() == ["-3.0 ± 0.0", REFERENCE, "-2.7 ± 0.7"]
    assert table["vs A"].tolist() == ["worse than A", REFERENCE, "worse than A"]
    assert table["time vs scratch (x)"].tolist() == [1.0, 2.0, 3.0]
    assert table["time vs A (x)"].tolist() == [0.5, 1.0, 1.5]
    relative = hand_built().table(relative=True, scratch="fp32")
    assert relative["vs fp32"].tolist() == [REFERENCE, "better than fp32", "inside seed noise"]
    assert "gain over fp32 (points)" in relative.columns


def test_rows_and_seed_rows_of_several_methods() -> None:
    c = hand_built()
    rows = c.rows()
    assert [r["setting"] for r in rows] == ["A, 5% labels", "B, 5% labels"]
    words = {k: rows[0].pop(k) for k in ("method", "baseline", "split", "verdict", "caveat")}
    assert words == {
        "method": "A",
        "baseline": "student alone",
        "split": "test",
        "verdict": "A helps",  # the method's own name, never "KD" on another method's row
        "caveat": "",
    }
    assert "reference" not in rows[0]  # A is the comparison's baseline: nothing to set beside it
    versus = {k: rows[1][k] for k in ("reference", "vs_reference")}
    assert versus == {"reference": "A", "vs_reference": "worse"}  # B: 2.5 points below A
    assert rows[1]["vs_reference_mean"] == pytest.approx(-2.667, abs=1e-3)
    assert rows[0] == pytest.approx(
        {
            "setting": "A, 5% labels",
            "num_seeds": 3,
            "scratch_mean": 81.0,
            "scratch_ci95": T975_2 / math.sqrt(3),
            "kd_mean": 84.0,
            "kd_ci95": T975_2 / math.sqrt(3),
            "gain_mean": 3.0,
            "gain_ci95": 0.0,
        }
    )
    assert rows[1] == c.row("B") and rows[1]["verdict"] == "inside seed noise"
    assert [r["setting"] for r in hand_built(setting="").rows()] == ["A", "B"]
    seed_rows = c.seed_rows()
    assert len(seed_rows) == 6
    assert seed_rows[0] == {
        "setting": "A, 5% labels",
        "seed": 0,
        "scratch_test_accuracy": 80.0,
        "kd_test_accuracy": 83.0,
        "gain": 3.0,
    }
    assert [r["gain"] for r in seed_rows[3:]] == [0.5, 0.0, 0.5]
    with pytest.raises(ValueError, match=r"method must be named, one of \['A', 'B'\]"):
        c.row()
    with pytest.raises(ValueError, match="method must be one of"):
        c.row("C")


def test_verdicts_and_verdict_sentences() -> None:
    c = hand_built()
    assert c.verdicts() == {
        SCRATCH: {"vs_scratch": "inside seed noise", "vs_A": "worse"},
        "A": {"vs_scratch": "A helps", "vs_A": "inside seed noise"},  # the method, named
        "B": {"vs_scratch": "inside seed noise", "vs_A": "worse"},  # below A: not "KD hurts"
    }
    relative = c.verdicts(key="vs_a")
    assert [v["vs_a"] for v in relative.values()] == ["worse", "inside seed noise", "worse"]
    assert c.verdict("A") == "KD helps: gain +3.0 ± 0.0 points excludes 0"
    assert c.verdict("B").startswith("inside seed noise: gain +0.3 ± 0.7 points includes 0")
    intervals = c.intervals()
    assert intervals.loc["A", "mean"] == 84.0
    assert intervals.loc["B", "ci95"] == pytest.approx(c.summary.loc["B", "accuracy_ci95"])


def test_compare_face_has_the_same_tables() -> None:
    c = synthetic([2.0, 2.2, 1.8, 2.1])
    assert c.methods == [SCRATCH, KD]
    assert c.rows() == [c.row()]
    gain = c.stats().loc[KD, "gain_vs_scratch"]
    assert gain == pytest.approx(c.summary.loc[GAIN, "mean"])
    table = c.table()
    assert list(table.columns) == ["accuracy (%)", "gain over scratch (points)", "vs scratch"]
    assert table.loc[KD, "vs scratch"] == "KD helps"
    assert table.loc[KD, "gain over scratch (points)"].startswith("+2.0 ± ")


def test_relative_verdict_words() -> None:
    assert relative_verdict(2.0, 1.0) == "better"
    assert relative_verdict(-2.0, 1.0, than="fp32") == "worse than fp32"
    assert relative_verdict(0.5, 1.0, than="fp32") == "inside seed noise"
    assert relative_verdict(None, 1.0) == "–"


def test_compare_is_compare_methods_with_one_method(digits, monkeypatch) -> None:
    """Same runs, same numbers: compare only reshapes compare_methods' result."""
    import kdbook.train
    from kdbook.compare import compare_methods

    class History:
        epochs = [{"seconds": 1.0}]

    def fake_fit(model, data, *, seed, teacher=None, **kwargs):
        with torch.no_grad():  # deterministic, and different with a teacher
            model.head[-1].bias.add_(torch.arange(10.0) * (seed + (teacher is not None)))
        return History()

    monkeypatch.setattr(kdbook.train, "fit", fake_fit)
    teacher = object()
    one = compare(
        "tiny_cnn", teacher, digits, seeds=[0, 1], progress=False, setting="s", stack=False
    )
    many = compare_methods(
        "tiny_cnn", digits, {KD: {"teacher": teacher}}, seeds=[0, 1], progress=False, stack=False
    )
    for col in ("init_norm", SCRATCH, KD):
        assert one.per_seed[col].tolist() == many.per_seed[col].tolist()
    assert one.per_seed[GAIN].tolist() == (many.per_seed[KD] - many.per_seed[SCRATCH]).tolist()
    assert one.row()["kd_mean"] == many.row()["kd_mean"]
    assert one.row()["setting"] == "s" and many.row()["setting"] == KD


def test_differences_between_runs_of_one_comparison() -> None:
    table = hand_built().differences({"B vs A": ("B", "A"), "A vs scratch": ("A", SCRATCH)})
    assert list(table.index) == ["B vs A", "A vs scratch"]
    b_vs_a = table.loc["B vs A"]
    assert b_vs_a["with it - without it, per seed (points)"] == "-2.5, -3.0, -2.5"
    assert b_vs_a["mean ± 95% interval (points)"] == "-2.7 ± 0.7"
    assert b_vs_a["verdict"] == "worse"
    assert b_vs_a["time ratio (x)"] == 1.5
    assert table.loc["A vs scratch", "verdict"] == "better"
    with pytest.raises(ValueError, match="method must be one of"):
        hand_built().differences({"x": ("C", "A")})


def test_plot_draws_every_run(monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    fig = hand_built().plot(title="t")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [SCRATCH, "A", "B"]
    assert fig.axes[0].get_xlabel() == "test accuracy (%)"
    import matplotlib.pyplot as plt

    plt.close(fig)  # a figure left open would count in the widget tests' open-figure check


def test_compare_methods_keeps_models_and_measures_other_splits(digits, monkeypatch) -> None:
    import kdbook.paired_runs
    import kdbook.train
    from kdbook.compare import compare_methods
    from kdbook.evaluate import accuracy, predict

    class History:
        epochs = [{"seconds": 2.0}]

    def fake_fit(model, data, *, seed, teacher=None, **kwargs):
        with torch.no_grad():
            model.head[-1].bias.add_(torch.arange(10.0) * (seed + 2 * (teacher is not None)))
        return History()

    monkeypatch.setattr(kdbook.train, "fit", fake_fit)
    monkeypatch.setattr(kdbook.paired_runs, "CHANCE_MARGIN", -100.0)  # untrained, not diverged
    result = compare_methods(
        "tiny_cnn", digits, {"kd": {"teacher": object()}}, seeds=[0, 1], progress=False,
        keep_models=True, splits=("val", "test"), setting="s", stack=False,
    )  # fmt: skip
    assert sorted(result.models) == [0, 1] and list(result.models[1]) == [SCRATCH, "kd"]
    kept = result.models[1]["kd"]
    val = accuracy(predict(kept, digits, "val"), digits.val.labels)
    test = accuracy(predict(kept, digits, "test"), digits.test.labels)
    assert result.per_seed.loc[1, "kd (val)"] == val and result.per_seed.loc[1, "kd"] == test
    assert list(result.summary.index) == [SCRATCH, "kd"]  # the val columns are not runs
    assert result.summary.loc["kd", "s_per_epoch"] == 2.0
    assert result.rows()[0]["setting"] == "kd, s"
    with pytest.raises(ValueError, match=r"splits must be \('test',\) or \('val', 'test'\)"):
        compare_methods("tiny_cnn", digits, {}, seeds=[0], splits=("val",))


def test_a_diverged_run_is_named_and_never_averaged(digits, monkeypatch) -> None:
    """A run whose loss went non-finite, or whose validation accuracy ends at chance, is NaN
    in per_seed, left out of the means, counted in ``n`` and named in the verdict."""
    import kdbook.train
    from kdbook.compare import compare_methods

    class History:
        def __init__(self, loss: float) -> None:
            self.epochs = [{"seconds": 1.0, "train_loss": loss}]

    def fake_fit(model, data, *, seed, teacher=None, **kwargs):
        # Answers the true class of every image, except "bad" at seeds 1 and 2 (a constant
        # answer) and at seed 3 (a NaN loss, its answers still right).
        bad = teacher == "bad"
        model.forward = lambda x, m=model: _oracle(m, x, data, constant=bad and seed in (1, 2))
        return History(math.nan if bad and seed == 3 else 0.5)

    monkeypatch.setattr(kdbook.train, "fit", fake_fit)
    result = compare_methods(
        "tiny_cnn", digits, {"good": {"teacher": "good"}, "bad": {"teacher": "bad"}},
        seeds=[0, 1, 2, 3], progress=False, stack=False, baseline="good", splits=("val", "test"),
    )  # fmt: skip
    assert result.diverged == {"bad": [1, 2, 3]}
    assert result.per_seed["bad"].isna().tolist() == [False, True, True, True]
    assert result.summary.loc["bad", "n"] == 1 and result.summary.loc["good", "n"] == 4
    assert result.summary.loc["bad", "accuracy"] == 100.0  # seed 0 alone
    assert result.verdict("bad").startswith("bad diverged on 3 of 4 seeds (1, 2, 3); on the others")
    assert result.verdict("good").startswith("inside seed noise")


def _oracle(model, x, data, constant: bool):
    """Logits that answer each image's true label (looked up by its pixels), or always 0."""
    import torch

    logits = torch.zeros(len(x), data.num_classes)
    if constant:
        logits[:, 0] = 1.0
        return logits
    for split in (data.train, data.val, data.test):
        images = data.normalize(split.images).to(x.dtype)
        for i, image in enumerate(x):
            hit = (images == image).flatten(1).all(1).nonzero()
            if len(hit):
                logits[i, split.labels[hit[0, 0]]] = 1.0
    return logits


def test_a_diverged_run_makes_mean_ci_undefined_and_finite_mean_ci_leaves_it_out() -> None:
    import pandas as pd

    from kdbook.stats import finite_mean_ci
    from kdbook.widgets import sweep_difference, sweep_summary

    assert all(math.isnan(x) for x in mean_ci([90.0, math.nan, 92.0]))
    assert finite_mean_ci([90.0, math.nan, 92.0]) == mean_ci([90.0, 92.0])
    assert all(math.isnan(x) for x in finite_mean_ci([math.nan]))
    table = pd.DataFrame(
        {
            "temperature": [4.0, 4.0, 4.0, 2.0, 2.0, 2.0],
            "alpha": [0.7] * 6,
            "seed": [0, 1, 2, 0, 1, 2],
            "kd_accuracy": [90.0, math.nan, 92.0, 91.0, 93.0, 95.0],
            "scratch_accuracy": [89.0, 88.0, 90.0, 89.0, 88.0, 90.0],
        }
    )
    summary = sweep_summary(table)
    assert summary.loc[(4.0, 0.7), "n"] == 2 and summary.loc[(2.0, 0.7), "n"] == 3
    assert summary.loc[(4.0, 0.7), "kd_mean"] == 91.0
    mean, _ = sweep_difference(table, (4.0, 0.7), (2.0, 0.7))  # seeds 0 and 2 only
    assert mean == -2.0


def test_a_method_with_a_diverged_seed_says_so_in_every_verdict_column() -> None:
    import math

    import pandas as pd

    from kdbook.compare import SCRATCH, Comparison

    per_seed = pd.DataFrame(
        {SCRATCH: [90.0, 91.0, 92.0], "KD": [93.0, 94.0, 95.0], "DKD": [math.nan, 92.0, 93.0]},
        index=pd.Index([0, 1, 2], name="seed"),
    )
    c = Comparison.from_per_seed(per_seed, ["KD", "DKD"], baseline="KD", diverged={"DKD": [0]})
    table = c.table()
    flag = "diverged on 1 of 3 seeds; on the others: "
    assert table.loc["DKD", "vs scratch"].startswith(flag)
    assert table.loc["DKD", "vs KD"].startswith(flag)
    assert not table.loc["KD", "vs scratch"].startswith("diverged")
    assert c.verdicts()["DKD"]["vs_scratch"].startswith(flag)


def test_seconds_alone_times_each_recipe_alone_with_a_fresh_adapter(digits) -> None:
    from functools import partial

    from kdbook.compare import seconds_alone
    from kdbook.losses import HintLoss
    from kdbook.models import feature_shape

    torch.manual_seed(0)
    teacher = build_model("digits_teacher", digits).eval()
    built = []

    def hint():
        student_shape = feature_shape(build_model("tiny_cnn", digits), 1, digits.image_size)
        teacher_shape = feature_shape(teacher, 1, digits.image_size)
        built.append(partial(HintLoss, student_shape[0], teacher_shape[0])())
        return built[-1]

    recipes = {
        "alone": {},
        "KD": {"teacher": teacher},
        "hint": {"teacher": teacher, "feature_loss": hint},
    }
    cost = seconds_alone("tiny_cnn", digits, recipes, epochs=2)
    assert list(cost.index) == ["alone", "KD", "hint"] and (cost > 0).all()
    assert len(built) == 1  # the factory was called once, for its own run
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        seconds_alone("tiny_cnn", digits, recipes, epochs=0)
