"""Atomic writes: either the old file or the new one, never half of one, never a temp file."""

from __future__ import annotations

import pytest

from kdbook.io import atomic_write, read_json, write_json, write_text


def test_write_text_leaves_only_the_file(tmp_path):
    path = write_text(tmp_path / "a.txt", "héllo\n")
    assert path == tmp_path / "a.txt"
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_creates_missing_folders(tmp_path):
    path = write_text(tmp_path / "deep" / "er" / "b.txt", "x")
    assert path.read_text() == "x"


def test_json_round_trip_and_overwrite(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"acc": 93.5, "seeds": [0, 1]})
    write_json(path, {"acc": 94.0, "path": tmp_path})  # default=str for a Path
    assert read_json(path) == {"acc": 94.0, "path": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_failure_in_writer_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"old": True})

    def broken(f):
        f.write(b'{"new": ')
        raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(path, broken)
    assert read_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    path = tmp_path / "c.bin"

    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_the_usual_file_mode(tmp_path) -> None:
    import os

    from kdbook.io import write_text

    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "results.json", "{}")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
