"""``kdbook data``: what a data set holds, or what to put where."""

from __future__ import annotations

from kdbook.cli import main


def test_digits_is_described(capsys) -> None:
    assert main(["data", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digits: train 1295, val 143, test 359 images of shape (1, 8, 8)")
    assert "10 classes" in out and "shift 1 px, flip no" in out


def test_missing_cifar10_says_what_to_put_where(tmp_path, capsys) -> None:
    assert main(["data", "digits", "cifar10", "--root", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("digits: train")
    assert lines[1].startswith("cifar10: not ready:") and "cifar-10-batches-py" in lines[1]
    assert "extract cifar-10-python.tar.gz" in lines[1]


def test_a_bad_name_is_refused_before_loading_anything(capsys) -> None:
    assert main(["data", "digits", "mnist"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # digits was not loaded first
    assert (
        "dataset must be 'digits', 'glyphs', 'cifar10', 'synthetic-cifar10[:N]' (N >= 20) "
        "or 'imagefolder:PATH', got 'mnist'" in captured.err
    )


def test_the_synthetic_stand_in_is_labelled_synthetic(capsys) -> None:
    assert main(["data", "synthetic-cifar10:50", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("synthetic-cifar10:50: train 50, val 10, test 10")
    assert lines[1].startswith("synthetic-cifar10:50: SYNTHETIC:") and "not CIFAR-10" in lines[1]
    assert lines[2].startswith("digits: train") and len(lines) == 3  # real data: no note
