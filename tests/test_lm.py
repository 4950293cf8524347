"""Language models: the causal transformer, sampling, fit_lm, checkpoints, metrics, comparisons."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from kdbook.checkpoint import load_checkpoint, save_checkpoint
from kdbook.compare import SCRATCH
from kdbook.evaluate import lm_kl, lm_logits, lm_metrics
from kdbook.lm_compare import BPC, compare_lm, lm_diverged, lm_trainer, tune_lm
from kdbook.lm_widgets import last_position_logits, next_token_explorer, next_token_view
from kdbook.models import build_model, count_params, list_models
from kdbook.text import text_data, window_tensor
from kdbook.train import Checkpoint, fit_lm
from kdbook.transformer import CharTransformer, sample
from kdbook.tuning import Method

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the cat sat on the mat. the dog sat on the log. " * 60


@pytest.fixture(scope="module")
def data():
    return text_data(TEXT, "cats")


def same(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def tiny(data, context=16, seed=0):
    torch.manual_seed(seed)
    return build_model("char_tiny", data, context=context)


def test_text_models_are_registered_apart_from_the_image_models(data):
    assert {"char_tiny", "char_small"} <= set(list_models("text"))
    assert not set(list_models("text")) & set(list_models())  # list_models(): image models
    assert set(list_models(None)) == set(list_models()) | set(list_models("text"))
    assert 300_000 < count_params(build_model("char_small", 104)) < 500_000  # about 0.4M
    assert count_params(build_model("char_tiny", 104)) * 10 < count_params(
        build_model("char_small", 104)
    )
    with pytest.raises(ValueError, match="image_size is for image models"):
        build_model("char_tiny", data, image_size=8)
    with pytest.raises(ValueError, match="kind must be one of"):
        list_models("audio")


@pytest.mark.parametrize("name", ["char_tiny", "char_mini", "char_small"])
def test_shapes_and_causality(name):
    torch.manual_seed(0)
    model = build_model(name, 11, context=12).eval()
    x = torch.randint(0, 11, (3, 10))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 10, 11) and torch.isfinite(logits).all()
        for t in (0, 4, 9):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 1) % 11
            other = model(changed)
            assert torch.equal(other[:, :t], logits[:, :t])  # nothing before t moves
            assert not torch.equal(other[:, t:], logits[:, t:])
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)


def test_an_input_longer_than_the_context_is_named():
    model = CharTransformer(5, 4, 8, 1, 2)
    with pytest.raises(ValueError, match="longer than the model's context 4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="heads must divide width"):
        CharTransformer(5, 4, 8, 1, 3)


def test_cached_sampling_equals_reading_the_whole_context_each_time():
    torch.manual_seed(0)
    model = CharTransformer(20, 8, 16, 2, 2).eval()
    prompt = torch.randint(0, 20, (2, 3))
    out = sample(model, prompt, 12, 1.0, torch.Generator().manual_seed(5))  # past the context
    assert out.shape == (2, 15) and torch.equal(out[:, :3], prompt)
    g, tokens = torch.Generator().manual_seed(5), prompt
    with torch.no_grad():
        for _ in range(12):
            probs = F.softmax(model(tokens[:, -8:])[:, -1], -1)
            tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=g)], 1)
    assert torch.equal(out, tokens)
    greedy = sample(model, prompt[0], 4, 0.0)
    assert torch.equal(greedy, sample(model, prompt[0], 4, 0.0))
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        sample(model, prompt, 2, -1.0)


def test_a_tiny_fit_lowers_the_loss_and_a_seed_repeats_it(data):
    a, b = tiny(data), tiny(data)
    first = fit_lm(a, data, num_epochs=3, batch_size=16, lr=1e-2, progress=False)
    assert first.final["train_loss"] < first.epochs[0]["train_loss"]
    assert first.final["val_bpc"] < math.log2(data.vocab_size)
    fit_lm(b, data, num_epochs=3, batch_size=16, lr=1e-2, progress=False)
    assert same(a, b)


def test_token_kd_from_cached_logits_equals_kd_from_the_live_teacher(data):
    teacher = tiny(data, seed=1).eval()
    windows = window_tensor(data.train, 16, 32)
    cached = lm_logits(teacher, windows[:, :-1])
    a, b = tiny(data), tiny(data)
    kw = dict(windows=windows, num_epochs=1, batch_size=8, temperature=2.0, alpha=0.5)
    ha = fit_lm(a, data, teacher=teacher, progress=False, **kw)
    hb = fit_lm(b, data, teacher=cached, progress=False, **kw)
    assert ha.settings["temperature"] == 2.0 and hb.settings["teacher"] == "logits"
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"windows": "x"}, "windows must be a"),
        ({"windows": torch.zeros(2, 40, dtype=torch.long)}, "longer than the model's context"),
        ({"windows": torch.full((2, 5), 999)}, "outside text 'cats'"),
        ({"teacher": torch.zeros(3, 4, 5)}, "teacher logits need the windows"),
        ({"num_epochs": 0}, "num_epochs must be"),
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"teacher": CharTransformer(7, 16, 8, 1, 2)}, "teacher's vocabulary has 7 tokens"),
        ({"temperature": 0.0, "teacher": "a tiny model"}, "temperature must be > 0"),
    ],
)
def test_bad_input_is_named_before_any_work(data, kwargs, message):
    model = tiny(data)
    if kwargs.get("teacher") == "a tiny model":
        kwargs = kwargs | {"teacher": tiny(data, seed=1)}
    before = copy.deepcopy(model.state_dict())
    with pytest.raises((ValueError, TypeError), match=message):
        fit_lm(model, data, progress=False, **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_vocabulary_mismatch_is_named(data):
    other = text_data("xyz xyz zyx " * 30, "xyz")
    with pytest.raises(ValueError, match="model's vocabulary has .* text 'cats' has"):
        fit_lm(tiny(other), data, progress=False)
    with pytest.raises(TypeError, match="data must be a kdbook.text.TextData"):
        fit_lm(tiny(data), [1, 2], progress=False)


def test_checkpoint_round_trip_loads_weights_only(data, tmp_path):
    model = tiny(data)
    fit_lm(model, data, num_epochs=1, batch_size=16, progress=False)
    path = save_checkpoint(tmp_path / "lm.pt", model, data)
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["model_kwargs"] == {"context": 16}
    assert blob["meta"]["classes"] == list(data.classes)
    loaded, meta = load_checkpoint(path, data, expect_model="char_tiny")
    assert loaded.context == 16 and meta["dataset"] == "cats"
    assert same(model, loaded)
    with pytest.raises(ValueError, match="trained with dataset='cats'"):
        load_checkpoint(path, text_data("xyz xyz zyx " * 30, "xyz"))


def test_fit_lm_resumes_an_interrupted_run_to_the_same_weights(data, tmp_path):
    path = tmp_path / "run.pt"
    whole = tiny(data)
    fit_lm(whole, data, num_epochs=2, batch_size=16, progress=False)

    class Stop(Checkpoint):
        def end_epoch(self, loop, record):
            super().end_epoch(loop, record)
            raise KeyboardInterrupt

    first = tiny(data)
    with pytest.raises(KeyboardInterrupt):
        fit_lm(first, data, num_epochs=2, batch_size=16, progress=False, hooks=[Stop(path)])
    resumed = tiny(data)
    history = fit_lm(resumed, data, num_epochs=2, batch_size=16, progress=False, checkpoint=path)
    assert len(history.epochs) == 2
    assert same(whole, resumed)
    again = tiny(data, seed=9)  # a finished run loads its weights and trains nothing
    fit_lm(again, data, num_epochs=2, batch_size=16, progress=False, checkpoint=path)
    assert same(whole, again)


def test_metrics_and_kl_against_the_long_way():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    y = torch.randint(0, 5, (2, 3))
    m = lm_metrics(s, y)
    nats = sum(-F.log_softmax(s[i, j], -1)[y[i, j]].item() for i in range(2) for j in range(3)) / 6
    assert m["loss"] == pytest.approx(nats, rel=1e-5)
    assert m["bpc"] == pytest.approx(nats / math.log(2), rel=1e-5)
    kl = lm_kl(t, s)
    p, q = F.softmax(t, -1), F.softmax(s, -1)
    forward = (p * (p / q).log()).sum(-1).mean().item() / math.log(2)
    reverse = (q * (q / p).log()).sum(-1).mean().item() / math.log(2)
    assert kl["forward"] == pytest.approx(forward, rel=1e-5)
    assert kl["reverse"] == pytest.approx(reverse, rel=1e-5)
    assert lm_kl(t, t)["forward"] == pytest.approx(0.0, abs=1e-6)


def test_the_next_character_slider(data):
    labels = ("a", " ", "\n", "b")
    view = next_token_view(torch.tensor([3.0, 1.0, 0.0, 0.0]), None, 1.0, top=2, labels=labels)
    assert view["labels"] == ["a", "' '"] and "divergence" not in view
    hot = next_token_view(torch.tensor([3.0, 1.0, 0.0, 0.0]), None, 100.0, labels=labels)
    assert (
        hot["entropy_bits"] == pytest.approx(2.0, abs=0.01)
        and hot["entropy_bits"] > view["entropy_bits"]
    )
    logits = last_position_logits(tiny(data), data.encode("the cat "))
    box = next_token_explorer(logits, data.classes, top=10, context="the cat ")
    assert set(box.controls) == {"temperature"}  # no student: no beta
    box.controls["temperature"].value = 4.0
    assert box.view["temperature"] == 4.0 and max(box.redraw_seconds) < 1.0


def test_tuning_and_comparison_in_bits_per_character(data):
    windows = window_tensor(data.train, 16, 48)
    teacher = tiny(data, seed=3).eval()
    logits = lm_logits(teacher, windows[:, :-1])
    methods = [
        Method(SCRATCH, {"lr": [3e-3, 1e-2]}, {"windows": windows}),
        Method("token KD", {"lr": [1e-2], "temperature": [1.0, 2.0]}, {"windows": windows,
               "teacher": logits}),
    ]  # fmt: skip
    shared = dict(num_epochs=1, batch_size=16)

    def student():
        return build_model("char_tiny", data, context=16)

    tuned = tune_lm(student, lm_trainer(data, "val", **shared), methods, score=BPC, budget=2,
                    seeds=[0], progress=False)  # fmt: skip
    assert set(tuned.chosen) == {SCRATCH, "token KD"} and tuned.trials["chosen"].sum() == 2
    assert len(tuned.choices()) == 2
    final = compare_lm(student, lm_trainer(data, "test", **shared), tuned.recipes(), seeds=[0, 1],
                       keep_models=True, progress=False)  # fmt: skip
    per_seed = final.per_seed(BPC)
    assert list(per_seed.columns) == ["init_norm", SCRATCH, "token KD"]
    assert final.table([BPC], judged=[BPC]).loc[SCRATCH, f"{BPC}: run - alone"] == "(reference)"
    words = ("token KD helps", "token KD hurts", "inside seed noise")
    assert final.verdict("token KD", BPC) in words
    difference = per_seed["token KD"] - per_seed[SCRATCH]
    got = final.summary([BPC]).loc["token KD", f"{BPC}_vs_alone"]
    assert got == pytest.approx(difference.mean())
    with pytest.raises(ValueError, match="budget"):
        tune_lm(student, lm_trainer(data, "val"), methods, score=BPC, budget=3, seeds=[0])
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        lm_trainer(data, "train")


def test_a_run_no_better_than_a_uniform_guess_diverged():
    class H:
        epochs = [{"train_loss": 1.0}]

    assert lm_diverged(H, math.log2(10), 10) and not lm_diverged(H, 2.0, 10)
    H.epochs = [{"train_loss": math.nan}]
    assert lm_diverged(H, 2.0, 10)


def test_the_teacher_trains_once_into_the_run_folder(data, tmp_path, capsys):
    from kdbook.config import make_config
    from kdbook.recipes import LM_TEACHER_FILE, lm_teacher_from_run

    cfg = make_config(lm_teacher="char_tiny", lm_context=16, lm_teacher_epochs=1,
                      run_dir=str(tmp_path))  # fmt: skip
    first, history = lm_teacher_from_run(cfg, data, progress=False)
    assert "training char_tiny" in capsys.readouterr().out
    assert (tmp_path / LM_TEACHER_FILE).is_file() and len(history.epochs) == 1
    again, _ = lm_teacher_from_run(cfg, data, progress=False)
    assert "already finished" in capsys.readouterr().out
    assert same(first, again) and not again.training


def test_the_summary_reports_language_model_verdicts(tmp_path):
    from kdbook.report import save_metrics, write_results

    rows = [
        {"method": SCRATCH, "num_seeds": 3, "bpc_mean": 3.3, "bpc_ci95": 0.02,
         "saved_mean": None, "saved_ci95": None, "verdict": None, "diverged": []},
        {"method": "token KD", "num_seeds": 3, "bpc_mean": 3.2, "bpc_ci95": 0.04,
         "saved_mean": 0.1, "saved_ci95": 0.05, "verdict": "token KD helps", "diverged": [2]},
    ]  # fmt: skip
    save_metrics(tmp_path, "15_language_model_kd", {"lm_comparisons": rows})
    results = write_results(tmp_path)
    assert [r["method"] for r in results["lm_comparisons"]] == [SCRATCH, "token KD"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Language models: does distillation help?" in summary
    assert (
        "| 15_language_model_kd | token KD | 3 | 3.200 ± 0.040 | +0.100 ± 0.050 | token KD "
        "helps | seed 2 |" in summary
    )


def test_the_summary_reports_the_exact_kl_verdicts_of_16(tmp_path):
    from kdbook.report import save_metrics, write_results

    kl, back = "KL(teacher || student)", "KL(student || teacher)"
    rows = [
        {"method": SCRATCH, "num_seeds": 5, "diverged": [], kl: 0.0466, f"{kl}_ci95": 0.0072,
         back: 0.054, f"{back}_ci95": 0.009, f"{kl}_vs_alone": None, f"{back}_vs_alone": None},
        {"method": "reverse KL, own samples", "num_seeds": 5, "diverged": [3], kl: 0.0305,
         f"{kl}_ci95": 0.0137, back: 0.0303, f"{back}_ci95": 0.0119, f"{kl}_vs_alone": -0.0161,
         f"{kl}_vs_alone_ci95": 0.0156, f"{kl}_verdict": "reverse KL, own samples helps",
         f"{back}_vs_alone": -0.0237, f"{back}_vs_alone_ci95": 0.0147,
         f"{back}_verdict": "reverse KL, own samples helps"},
    ]  # fmt: skip
    save_metrics(tmp_path, "16_on_policy_distillation", {"gkd_comparisons": rows})
    results = write_results(tmp_path)
    assert [r["method"] for r in results["kl_comparisons"]] == [SCRATCH, rows[1]["method"]]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Language models: closer to the teacher?" in summary
    header = "| KL(teacher \\|\\| student) | KL(teacher \\|\\| student) vs alone |"
    assert header in summary  # the pipes of a header escaped, as a cell's are
    assert (
        "| 16_on_policy_distillation | reverse KL, own samples | 5 | 0.0305 ± 0.0137 | -0.0161 ± "
        "0.0156, reverse KL, own samples helps | 0.0303 ± 0.0119 | -0.0237 ± 0.0147, reverse KL, "
        "own samples helps | seed 3 |" in summary
    )
    assert f"| {SCRATCH} | 5 | 0.0466 ± 0.0072 | (reference) |" in summary
