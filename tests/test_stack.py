"""Seeds side by side (kdbook.stack): each run ends where fit alone would have taken it."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
import torch

from kdbook.compare import SCRATCH, compare, compare_methods
from kdbook.models import build_model
from kdbook.stack import NotStackable, TeacherViews, fit_stacked, why_not_stacked
from kdbook.train import fit

# Float round-off between a stacked step and a lone one (sums in another order, the
# teacher's batch of another size) after an epoch of SGD: measured at most 3e-6 here.
ATOL = 1e-5


@pytest.fixture(scope="module")
def teacher(digits):
    torch.manual_seed(100)
    model = build_model("digits_teacher", digits)
    fit(model, digits, num_epochs=1, progress=False)
    return model


def _inits(data, runs):
    out = []
    for run in runs:
        torch.manual_seed(run["seed"])
        out.append(build_model("tiny_cnn", data))
    return out


def _both(data, runs, **shared):
    """The runs trained one at a time by fit and side by side: (models, histories) each.
    A run's feature loss trains its own copy alone; its model is then the model and the
    loss (its adapter) as one module, whose weights the stack must match too."""
    inits = _inits(data, runs)
    alone = [copy.deepcopy(m) for m in inits]
    stacked = [copy.deepcopy(m) for m in inits]
    lone = [r | {"feature_loss": copy.deepcopy(r["feature_loss"])} if "feature_loss" in r else r
            for r in runs]  # fmt: skip
    h_alone = [
        fit(m, data, progress=False, **shared, **r) for m, r in zip(alone, lone, strict=True)
    ]
    h_stacked = fit_stacked(stacked, data, runs, progress=False, **shared)

    def joined(models, runs):
        return [
            torch.nn.ModuleDict({"model": m, "loss": r["feature_loss"]}) if "feature_loss" in r
            else m for m, r in zip(models, runs, strict=True)
        ]  # fmt: skip

    return (joined(alone, lone), h_alone), (joined(stacked, runs), h_stacked)


def _assert_same(a, b, atol=ATOL):
    (models_a, hist_a), (models_b, hist_b) = a, b
    for ma, mb in zip(models_a, models_b, strict=True):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        for name in sa:
            if sa[name].is_floating_point():
                torch.testing.assert_close(sb[name], sa[name], atol=atol, rtol=0, msg=name)
            else:  # BatchNorm's num_batches_tracked
                assert torch.equal(sa[name], sb[name]), name
    for ha, hb in zip(hist_a, hist_b, strict=True):
        assert ha.settings == hb.settings
        assert len(ha.epochs) == len(hb.epochs)
        for ea, eb in zip(ha.epochs, hb.epochs, strict=True):
            assert ea.keys() == eb.keys()
            for key in ea.keys() - {"seconds"}:
                assert eb[key] == pytest.approx(ea[key], abs=1e-4), key


def test_one_epoch_side_by_side_equals_each_run_alone(digits, teacher):
    runs = [{"seed": s} for s in range(2)] + [{"seed": s, "teacher": teacher} for s in range(2)]
    alone, stacked = _both(digits, runs, num_epochs=1)
    _assert_same(alone, stacked)
    # and the runs did train, each its own way
    assert not torch.equal(alone[0][0].head[1].weight, alone[0][2].head[1].weight)


def test_scarce_labels_adamw_and_a_grid_of_t_and_alpha(digits, teacher):
    # the scratch runs see the few labelled samples (other batches, other sizes at the end)
    scarce = digits.with_label_fraction(0.05, seed=0)
    runs = [{"seed": 0}, {"seed": 1, "teacher": teacher, "temperature": 1.0, "alpha": 0.3}]
    runs += [{"seed": 1, "teacher": teacher, "temperature": 8.0, "alpha": 0.9}]
    alone, stacked = _both(scarce, runs, num_epochs=2, optimizer="adamw", lr=0.01)
    _assert_same(alone, stacked)


def test_teacher_view_table_gives_the_teachers_answers(digits, teacher):
    # 30 epochs x 2 runs are more passes than digits' 9 views: the stack builds the table
    from kdbook.data import Loader

    loader = Loader(digits, digits.train, 64, shuffle=True, augment=True, seed=3)
    assert TeacherViews.count(loader.augment) == 9
    assert TeacherViews.build(teacher, loader, _runtime(), passes=9) is None  # not cheaper
    table = TeacherViews.build(teacher, loader, _runtime(), passes=60)
    teacher.eval()
    for x, _, idx in loader:
        with torch.no_grad():
            torch.testing.assert_close(
                table.lookup(idx, loader.views), teacher(x), atol=1e-5, rtol=0
            )
    runs = [{"seed": 0, "teacher": teacher}, {"seed": 1, "teacher": teacher}]
    alone, stacked = _both(digits, runs, num_epochs=5)  # 10 passes > 9 views: table
    _assert_same(alone, stacked)
    # with the features, for runs with a feature term: forward_head of them, as fit asks
    table = TeacherViews.build(teacher, loader, _runtime(), passes=60, features=True)
    for x, _, idx in loader:
        with torch.no_grad():
            features = teacher.forward_features(x)
            logits = teacher.forward_head(features)
        torch.testing.assert_close(
            table.lookup_features(idx, loader.views), features, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(table.lookup(idx, loader.views), logits, atol=1e-5, rtol=0)


def _runtime():
    from kdbook.runtime import Runtime

    return Runtime.create(torch.device("cpu"), "fp32")


def test_what_cannot_be_stacked_says_why(digits, teacher):
    model = build_model("tiny_cnn", digits)
    assert why_not_stacked(model, {"teacher": teacher, "seed": 0}) is None
    assert "feature_loss" in why_not_stacked(model, {"feature_loss": object()})
    assert "hooks" in why_not_stacked(model, {"hooks": []})
    assert "object" in why_not_stacked(model, {"teacher": object()})
    assert "view" in why_not_stacked(model, {"teacher": teacher, "view": object()})
    assert "dropout" in why_not_stacked(torch.nn.Sequential(torch.nn.Dropout(0.1)), {})
    with pytest.raises(NotStackable, match="architecture"):
        fit_stacked([model, build_model("simple_resnet", digits)], digits, [{}, {}], progress=False)
    with pytest.raises(NotStackable, match="checkpoint"):
        fit_stacked([model], digits, [{"checkpoint": "x.pt"}], progress=False)


def test_compare_side_by_side_gives_the_same_accuracies(digits, teacher, capsys):
    # the classroom's recipe (30 epochs) on two seeds: every per-seed accuracy the same
    seeds, kw = [0, 1], {"progress": True}
    together = compare("tiny_cnn", teacher, digits, seeds=seeds, **kw)
    plan = capsys.readouterr().out
    assert "4 runs side by side" in plan and "30 epochs each on cpu" in plan
    assert "first epochs" in plan and "for the stack" in plan  # the time, after epoch 2
    alone = compare("tiny_cnn", teacher, digits, seeds=seeds, stack=False, progress=False)
    assert together.per_seed.equals(alone.per_seed[together.per_seed.columns])


def _hint(digits, teacher):
    from kdbook.losses import HintLoss
    from kdbook.models import feature_shape

    fs = feature_shape(build_model("tiny_cnn", digits), 1, 8)
    ft = feature_shape(teacher, 1, 8)
    return lambda: HintLoss(fs[0], ft[0])


def test_runs_that_cannot_be_stacked_train_alone_with_a_message(digits, teacher, capsys):
    # one hint module (one adapter) for both seeds trains on from run to run: not stacked
    methods = {
        "KD": {"teacher": teacher},
        "hint": {"teacher": teacher, "feature_loss": _hint(digits, teacher)(),
                 "feature_weight": 1.0},
    }  # fmt: skip
    mixed = compare_methods("tiny_cnn", digits, copy.deepcopy(methods), seeds=[0, 1], num_epochs=2)
    out = capsys.readouterr().out
    assert "4 runs side by side" in out and "2 one at a time ('hint': runs that share" in out
    alone = compare_methods("tiny_cnn", digits, methods, seeds=[0, 1], num_epochs=2, stack=False)
    for run in (SCRATCH, "KD", "hint"):
        assert mixed.per_seed[run].tolist() == alone.per_seed[run].tolist(), run
    assert "s / epoch" not in mixed.table().columns  # stacked runs have no time of their own
    assert "s / epoch" in alone.table().columns
    # one module in two recipes: the same
    twice = {"hint": methods["hint"], "hint again": methods["hint"]}
    compare_methods("tiny_cnn", digits, twice, seeds=[0, 1], num_epochs=1)
    out = capsys.readouterr().out
    assert "2 runs side by side" in out and "4 one at a time ('hint': runs that share" in out


def test_feature_terms_stack_with_their_own_weights_and_adapters(digits, teacher):
    # attention transfer (no parameters), hints (an adapter each) and token alignment, at
    # other weights and a schedule, beside DKD with a feature term, plain KD and scratch.
    # (Some runs amplify round-off: AT at linear(2.0, 0.5) from seed 1 ends 7e-5 apart from
    # itself alone when its initial weights move by 1e-7; these settings do not.)
    from kdbook.losses import DKD, AttentionTransfer, TokenAlignment
    from kdbook.schedules import linear

    hint = _hint(digits, teacher)
    torch.manual_seed(7)
    kd = {"teacher": teacher}
    runs = [{"seed": s, "feature_loss": AttentionTransfer(), "feature_weight": w} | kd
            for s, w in ((0, 1.0), (1, linear(2.0, 1.0)))]  # fmt: skip
    runs += [{"seed": s, "feature_loss": hint(), "feature_weight": w} | kd
             for s, w in ((0, 0.5), (1, 2.0), (1, 0.5))]  # fmt: skip
    runs += [{"seed": 0, "feature_loss": TokenAlignment(4, 128), "feature_weight": 1.0} | kd]
    runs += [{"seed": 1, "feature_loss": AttentionTransfer(), "terms": [DKD()]} | kd]
    runs += [{"seed": 0} | kd, {"seed": 1}]
    model = build_model("tiny_cnn", digits)
    assert all(why_not_stacked(model, r) is None for r in runs)
    alone, stacked = _both(digits, runs, num_epochs=2)
    _assert_same(alone, stacked)
    assert "feature_loss" in stacked[1][2].epochs[-1]  # the term's log, as fit records it
    assert stacked[1][1].epochs[-1]["feature_weight"] != 2.0  # the schedule's epoch mean
    # the adapters trained, each its own way
    adapters = [m["loss"].adapter.proj[0].weight for m in stacked[0][2:4]]
    assert not torch.equal(adapters[0], adapters[1])


def test_feature_runs_look_the_teachers_features_up_in_its_table(digits, teacher, monkeypatch):
    # without augmentation one view: two runs' epoch costs more passes than the table
    from kdbook.losses import AttentionTransfer

    built = []
    build = TeacherViews.build

    def spy(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(TeacherViews, "build", spy)
    hint, kd = _hint(digits, teacher), {"teacher": teacher, "feature_weight": 1.0}
    runs = [{"seed": s, "feature_loss": hint()} | kd for s in (0, 1)]
    runs += [{"seed": 0, "feature_loss": AttentionTransfer()} | kd]
    alone, stacked = _both(digits, runs, num_epochs=1, augment=False)
    assert len(built) == 1 and built[0].features is not None
    _assert_same(alone, stacked)


def test_compare_stacks_feature_recipes_and_says_what_does_not(digits, teacher, capsys):
    from kdbook.losses import AttentionTransfer, TokenAlignment

    methods = {
        "AT": {"teacher": teacher, "feature_loss": AttentionTransfer(), "feature_weight": 2.0},
        "hint": {"teacher": teacher, "feature_loss": _hint(digits, teacher),
                 "feature_weight": 1.0},
    }  # fmt: skip
    together = compare_methods("tiny_cnn", digits, methods, seeds=[0, 1], num_epochs=2)
    assert "6 runs side by side" in capsys.readouterr().out
    alone = compare_methods("tiny_cnn", digits, methods, seeds=[0, 1], num_epochs=2, stack=False)
    for run in (SCRATCH, "AT", "hint"):
        assert together.per_seed[run].tolist() == alone.per_seed[run].tolist(), run
    model = build_model("tiny_cnn", digits)
    noisy = {"teacher": teacher, "feature_loss": TokenAlignment(4, 128, noise_std=0.1)}
    assert "noise" in why_not_stacked(model, noisy)
    own = {"teacher": teacher, "feature_loss": torch.nn.MSELoss()}
    assert "MSELoss (not one of kdbook's)" in why_not_stacked(model, own)


def test_fit_leaves_the_global_rng_as_its_seed_does(digits, teacher):
    # compare skips a stacked run's fit by seeding as that fit would: the later runs'
    # random draws (a fresh feature adapter) stay those of one-at-a-time training
    torch.manual_seed(3)
    expected = torch.random.get_rng_state()
    fit(
        build_model("tiny_cnn", digits),
        digits,
        teacher=teacher,
        num_epochs=1,
        seed=3,
        progress=False,
    )
    assert torch.equal(torch.random.get_rng_state(), expected)


def test_a_cache_of_stored_views_and_an_ensemble_stack_too(digits, teacher):
    from kdbook.distill import cache_teacher_logits

    cache = cache_teacher_logits(teacher, digits, views=2, seed=0, progress=False)
    plain = cache_teacher_logits(teacher, digits, views=0, progress=False)
    runs = [{"seed": 0, "teacher": cache}, {"seed": 1, "teacher": cache}]
    runs += [{"seed": 0, "teacher": plain}, {"seed": 0, "teacher": [teacher, teacher]}]
    runs += [{"seed": 1}]
    alone, stacked = _both(digits, runs, num_epochs=3)  # epoch 3 replays the first view again
    _assert_same(alone, stacked)


def test_a_runs_own_logit_term_dkd_or_standardised_kd_stacks(digits, teacher):
    # notebook 13's tuning grid: DKD at two betas, standardised KD, beside plain KD
    from kdbook.losses import DKD, LogitKD

    runs = [{"seed": 0, "teacher": teacher, "terms": [DKD(beta=b)]} for b in (1.0, 8.0)]
    runs += [{"seed": 1, "teacher": teacher, "terms": [LogitKD(2.0, 0.9, standardize=True)]}]
    runs += [{"seed": 1, "teacher": teacher}, {"seed": 0}]
    model = build_model("tiny_cnn", digits)
    assert all(why_not_stacked(model, r) is None for r in runs)
    alone, stacked = _both(digits, runs, num_epochs=2)
    _assert_same(alone, stacked)
    assert "dkd" in stacked[1][0].epochs[-1]  # DKD's own log, as fit records it
    hint = {"teacher": teacher, "terms": [DKD(), LogitKD(2.0, 0.5)]}
    assert "more than one loss term" in why_not_stacked(model, hint)


def test_ensembles_of_several_runs_share_each_teachers_passes(digits, teacher):
    # notebook 11's multi-teacher runs: one pair of teachers, equal or weighted, two seeds
    torch.manual_seed(5)
    other = build_model("tiny_cnn", digits).eval()
    pair = [teacher, other]
    runs = [{"seed": 0, "teacher": pair}, {"seed": 1, "teacher": pair, "temperature": 2.0}]
    runs += [{"seed": 1, "teacher": pair, "teacher_weights": [0.75, 0.25]}, {"seed": 0}]
    alone, stacked = _both(digits, runs, num_epochs=2)
    _assert_same(alone, stacked)


def test_a_run_with_its_own_training_labels_stacks(digits, teacher):
    # notebook 05's control: the student trained on the teacher's hard labels, beside KD
    from kdbook.compare import compare_methods
    from kdbook.data import Split
    from kdbook.evaluate import predict

    scarce = digits.with_label_fraction(0.1, seed=0)
    hard = predict(teacher, digits, "train").argmax(1)
    relabelled = dataclasses.replace(scarce, train=Split(scarce.train.images, hard))
    recipes = {"KD": {"teacher": teacher}, "hard labels": {"train_data": relabelled}}
    kwargs = {"seeds": [0, 1], "num_epochs": 2, "progress": False}
    stacked = compare_methods("tiny_cnn", scarce, recipes, **kwargs)
    alone = compare_methods("tiny_cnn", scarce, recipes, stack=False, **kwargs)
    columns = ["student (scratch)", "KD", "hard labels"]
    pd.testing.assert_frame_equal(stacked.per_seed[columns], alone.per_seed[columns], atol=1e-6)
    model = build_model("tiny_cnn", digits)
    assert why_not_stacked(model, {"train_data": relabelled}) is None
